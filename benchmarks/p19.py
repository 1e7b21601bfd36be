"""PhysioNet 2019 sepsis: the online task (utility, hourly AUROC / AUPRC; 5-fold and A->B) and the
stay-level task (AUROC / AP over 5 splits, next to the peer table), HyMaTE and LightGBM.

    python benchmarks/p19.py                          # everything, full data (hours: see NOTES.md)
    python benchmarks/p19.py --train-stays 600 --eval-stays 300 --epochs 3 --folds 0 --ema-decay 0   # a smoke run

The budget is explicit: --train-stays / --eval-stays (random subsets of each split's parts),
--epochs, --ema-decay, --lr, --warmup-epochs, --folds (which of the five folds / splits), --settings, --tasks, --models. Runs go
to <out>/<budget>/..., where <budget> names those choices, and a finished run is never redone:
rerun the same command after an interruption and it continues. `--report` runs nothing: it
tabulates every budget of p19.json that has all its folds into benchmarks/results/p19_table.md. Online HyMaTE / Mamba runs also
name their model options (`--train-hours-per-stay`, `--no-query-time`): <out>/<budget>/sepsis-online/
<variant>/..., and their rows' budget ends in -<variant> (e.g. qt-h8). Prints the tables and writes
benchmarks/results/p19.json (rows {"task", "model", "setting", "utility", "auroc", "ap", ...}).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hymate.cli import parse_int_list
from hymate.data.store import cache_dir, load_dataset
from hymate.tasks.registry import get_task
from hymate.tasks.splits import load_or_make_splits, subsample
from hymate.train.module import TrainConfig, training_config
from hymate.train.run import run_experiment

RESULTS = Path(__file__).parent / "results" / "p19.json"
REPORT = RESULTS.with_name("p19_table.md")
TARGET = "Target (issue 6): AUROC >= 90.3 and AP >= 58.3 (MTM, the best published on this protocol)."
RUNS_PER_SETTING = {"kfold5": 5, "a2b": 1, "splits5": 5}  # a budget is reported once it has all of them
PEERS = {  # P19 sepsis AUROC / AUPRC (AP) in %, Raindrop protocol, from the peer table in HYMATE.md
    "Transformer": (80.7, 42.7), "GRU-D": (83.9, 46.9), "mTAND": (84.4, 50.6), "Raindrop": (87.0, 51.8),
    "ViTST": (89.2, 53.1), "Warpformer": (88.7, 52.4), "GraFITi": (89.1, 56.6), "MTM": (90.3, 58.3),
}  # fmt: skip
NEURAL = ("hymate", "mamba")  # the models whose options (and so their run folder and budget suffix) p19.py sets
TITLES = {"hymate": "HyMaTE", "mamba": "Mamba only", "lightgbm": "LightGBM", "logreg": "Logistic regression"}
ROW_KEYS = ("task", "model", "setting", "split", "seed", "utility", "auroc", "ap", "auprc_trapz", "threshold",
            "train_s", "score_s", "wall_s", "epochs", "epoch_s", "train_stays", "test_stays", "hours", "peak_mb")  # fmt: skip


def missing_folds(recorded: list[dict], task: str, model: str, setting: str, folds: list[int], seed: int,
                  budget: str) -> list[int]:
    """The folds of `folds` that have no row in `recorded` for this task, model, setting, seed and budget."""
    have = {r["split"] for r in recorded
            if (r["task"], r["model"], r["setting"], r["seed"], r.get("budget")) == (task, model, setting, seed, budget)}
    return [f for f in folds if f not in have]


def budget_name(train_stays: int | None, eval_stays: int | None, epochs: int, seed: int, ema_decay: float,
                lr: float = TrainConfig.lr, warmup_epochs: float = TrainConfig.warmup_epochs) -> str:
    """The name of a budget in p19.json and under runs/: an option at its default adds nothing, so the
    names of budgets run before that option existed stay valid (and their folds are not run again)."""
    name = f"train{train_stays or 'all'}-eval{eval_stays or 'all'}-ep{epochs}-seed{seed}"
    name += "" if ema_decay == TrainConfig.ema_decay else f"-ema{ema_decay:g}"
    name += "" if lr == TrainConfig.lr else f"-lr{lr:g}"
    return name + ("" if warmup_epochs == TrainConfig.warmup_epochs else f"-wu{warmup_epochs:g}")


def result_row(row: dict, budget: str) -> dict:
    """A run's result row (report/metrics.json["row"]) as p19.json keeps it: the ROW_KEYS, the task by its
    short name, "setting" for the row's protocol, "hours" the test hours of the online task (None for the
    stay-level one, as in the rows recorded before), and the budget."""
    short = get_task(row["task"]).short
    mapped = {**row, "task": short, "setting": row["protocol"], "utility": row.get("utility"),
              "threshold": row.get("threshold"), "hours": row.get("test_rows") if short == "sepsis-online" else None}
    return {k: mapped.get(k) for k in ROW_KEYS} | {"budget": budget}


def training(task, model: str, args) -> TrainConfig:
    """The training settings of one run: p19.py's own options (its budget), never the task's recipe, so
    that a budget name means the same settings as when its rows were recorded."""
    given = {"max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "seed": args.seed,
             "lr": args.lr, "warmup_epochs": args.warmup_epochs, "ema_decay": args.ema_decay}  # 0: off
    config = training_config(task, model, given)
    # --train-hours-per-stay 0 means every hour: set after training_config, which reads None as "the recipe's".
    hours = (args.train_hours_per_stay or None) if task.short == "sepsis-online" else None
    return replace(config, train_hours_per_stay=hours)


def mean_sd(values: list[float | None], scale: float = 1.0, digits: int = 4) -> str:
    v = np.array([x for x in values if x is not None], dtype=float) * scale
    if len(v) == 0:
        return "-"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sepsis-online,sepsis-stay")
    parser.add_argument("--models", default="hymate,lightgbm", help="online: hymate, mamba, lightgbm; stay: also logreg")
    parser.add_argument("--settings", default="kfold5,a2b", help="online settings (the stay-level task uses splits5)")
    parser.add_argument("--folds", default="0-4", help="folds / splits to run, e.g. 0 or 0-4 (a2b has one: 0)")
    parser.add_argument("--train-stays", type=int, default=None, help="random subset of each split's training stays")
    parser.add_argument("--eval-stays", type=int, default=None, help="random subset of validation and test stays")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                        help="weight averaging (0: off; needs ~1/(1-decay) = 500 steps to leave the initial weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup-epochs", type=float, default=TrainConfig.warmup_epochs,
                        help="linear warm-up before the cosine decay, in epochs")
    parser.add_argument("--train-hours-per-stay", type=int, default=8,
                        help="online training: every positive and up to N random negative hours per stay and step (0: all)")
    parser.add_argument("--no-query-time", action="store_true", help="online HyMaTE without the prediction-hour input")
    parser.add_argument("--no-stay-query-time", action="store_true",
                        help="stay-level HyMaTE without the time of the stay's last event (where its record ends) as "
                             "an input; rows of budgets run before that input existed have no -qt")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark/p19"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", nargs="?", const="", metavar="BUDGETS",
                        help=f"run nothing: tabulate the budgets in {RESULTS.name} that have all their folds into "
                             f"{REPORT.name} (all of them, or those starting with one of these comma-separated prefixes)")
    args = parser.parse_args()
    console = Console(width=max(140, Console().width))
    if args.report is not None:
        report(console, [b for b in args.report.split(",") if b])
        return
    budget = budget_name(args.train_stays, args.eval_stays, args.epochs, args.seed, args.ema_decay, args.lr,
                         args.warmup_epochs)  # fmt: skip
    out = args.out / budget
    folds = parse_int_list(args.folds)
    variants = {  # neural runs whose model options are not the default name them: run folder and budget suffix
        "sepsis-online": f"{'noqt' if args.no_query_time else 'qt'}-h{args.train_hours_per_stay or 'all'}",
        "sepsis-stay": None if args.no_stay_query_time else "qt",
    }
    model_options = {"sepsis-online": {"query_time": not args.no_query_time},
                     "sepsis-stay": {"query_time": not args.no_stay_query_time}}  # fmt: skip

    def variant(task: str, model: str) -> str | None:
        return variants[task] if model in NEURAL else None

    def row_budget(task: str, model: str) -> str:
        return budget + (f"-{variant(task, model)}" if variant(task, model) else "")

    recorded = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    start = time.perf_counter()
    data = load_dataset("physionet2019", progress=not args.quiet)
    console.print(f"loaded {data.stays.height:,} stays in {time.perf_counter() - start:.1f} s; runs in {out}")
    rows = []
    for task in args.tasks.split(","):
        spec = get_task("physionet2019", task)
        view = spec.view(data)
        settings = args.settings.split(",") if task == "sepsis-online" else ["splits5"]
        models = [m for m in args.models.split(",") if task == "sepsis-stay" or m != "logreg"]
        for setting in settings:
            chosen = [0] if setting == "a2b" else folds
            for model in models:
                # a fold already in p19.json at this budget is not run again: runs/ does not survive a fresh machine
                todo = missing_folds(recorded, task, model, setting, chosen, args.seed, row_budget(task, model))
                if todo != chosen:
                    console.print(f"{model} {task} {setting}: folds {sorted(set(chosen) - set(todo))} already in "
                                  f"{RESULTS.name}, skipped")  # fmt: skip
                if not todo:
                    continue
                splits = [s for s in load_or_make_splits(view, spec, setting, 0, cache_dir() / "splits") if s.index in todo]
                if args.train_stays or args.eval_stays:
                    splits = [subsample(s, args.train_stays, args.eval_stays, 0) for s in splits]
                folder = out / task / variant(task, model) if variant(task, model) else out / task
                ran = run_experiment(spec, view, splits, [args.seed], model, training(spec, model, args), folder / model,
                                     model_options[task] if model in NEURAL else None, not args.quiet, resume=True)  # fmt: skip
                rows += [result_row(r, row_budget(task, model)) for r in ran]

    for table in tables(rows, budget):
        console.print(rich_table(table))
    if any(r["task"] == "sepsis-stay" for r in rows):
        console.print(TARGET)

    key = lambda r: (r["task"], r["model"], r["setting"], r["split"], r["seed"], r.get("budget"))  # noqa: E731
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Two of these may run side by side (e.g. --folds 0,1,2 and --folds 3,4, one thread each): the
    # read-merge-write of the results file is done under a lock so neither loses the other's rows.
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
        merged = {key(r): r for r in previous} | {key(r): r for r in rows}
        RESULTS.write_text(json.dumps({"rows": list(merged.values()), "machine": f"{os.cpu_count()} cores",
                                       "peers_stay_level": PEERS}, indent=1) + "\n")  # fmt: skip
    console.print(f"{len(rows)} runs ({time.perf_counter() - start:.0f} s); results in {RESULTS}")


def tables(rows: list[dict], budget: str | None = None) -> list[dict]:
    """The online and stay-level tables of these rows, as {"title", "header", "rows"} of strings: one line
    per model and setting (and budget, when `budget` is None and the rows mix several)."""
    out = []
    by_budget = budget is None
    online = [r for r in rows if r["task"] == "sepsis-online"]
    if online:
        keys = ("model", "setting", "budget") if by_budget else ("model", "setting")
        lines = []
        for key, group in sorted(_groups(online, keys).items(), key=lambda kv: _order(*kv[0])):
            lines.append([TITLES.get(key[0], key[0]), key[1], *([key[2]] if by_budget else []), str(len(group)),
                          mean_sd([r["utility"] for r in group]), mean_sd([r["auroc"] for r in group]),
                          mean_sd([r["ap"] for r in group]), mean_sd([r["train_s"] for r in group], digits=0),
                          mean_sd([r["score_s"] for r in group], digits=1), f"{sum(r['hours'] for r in group):,}"])  # fmt: skip
        out.append({"title": "Sepsis online, PhysioNet 2019 (test; mean ± sd over folds)" + (f" [{budget}]" if budget else ""),
                    "header": ["model", "setting", *(["budget"] if by_budget else []), "runs", "utility", "hourly AUROC",
                               "AUPRC (AP)", "train s", "score s (all test hours)", "test hours"],
                    "rows": lines})  # fmt: skip
    stay = [r for r in rows if r["task"] == "sepsis-stay"]
    if stay:
        keys = ("model", "budget") if by_budget else ("model",)
        lines = [[name, *([""] if by_budget else []), f"{auroc:.1f}", f"{ap:.1f}", "", ""] for name, (auroc, ap) in PEERS.items()]
        for key, group in sorted(_groups(stay, keys).items(), key=lambda kv: _order(kv[0][0], "splits5", *kv[0][1:])):
            lines.append([f"{TITLES.get(key[0], key[0])} (ours)", *([key[1]] if by_budget else []),
                          mean_sd([r["auroc"] for r in group], 100, 1), mean_sd([r["ap"] for r in group], 100, 1),
                          str(len(group)), mean_sd([r["train_s"] for r in group], digits=0)])  # fmt: skip
        out.append({"title": "Sepsis stay-level (first 60 h), 5 stratified 80/10/10 splits, next to the peers"
                    + (f" [{budget}]" if budget else ""),
                    "header": ["model", *(["budget"] if by_budget else []), "AUROC %", "AUPRC (AP) %", "runs", "train s"],
                    "rows": lines})  # fmt: skip
    return out


def complete(rows: list[dict]) -> list[dict]:
    """The rows of (task, model, setting, budget) groups that have every fold or split of their setting:
    a smoke run or a budget still running is left out of the report."""
    groups = _groups(rows, ("task", "model", "setting", "budget"))
    return [r for key, group in groups.items() if len({g["split"] for g in group}) >= RUNS_PER_SETTING[key[2]] for r in group]


def markdown(table: dict) -> str:
    lines = [f"**{table['title']}**", "", "| " + " | ".join(table["header"]) + " |", "|" + "---|" * len(table["header"])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table["rows"]]) + "\n"


def rich_table(table: dict) -> Table:
    out = Table(*table["header"], title=table["title"])
    for row in table["rows"]:
        out.add_row(*row)
    return out


def report(console: Console, prefixes: list[str]) -> None:
    if not RESULTS.exists():
        raise SystemExit(f"no results yet: {RESULTS} does not exist (run this script without --report first)")
    rows = [r for r in json.loads(RESULTS.read_text())["rows"] if not prefixes or r["budget"].startswith(tuple(prefixes))]
    rows = complete(rows)
    if not rows:
        raise SystemExit(f"no budget{' matching ' + ','.join(prefixes) if prefixes else ''} in {RESULTS} has all its "
                         "folds yet: nothing to report")  # fmt: skip
    made = tables(rows)
    for table in made:
        console.print(rich_table(table))
    legend = ("Budget: train<N>-eval<M>-ep<E>-seed<S> = N training stays and M validation / test stays per fold "
              "(random subsets; 'all' = the whole fold), at most E epochs (HyMaTE; LightGBM ignores it), seed S; "
              "online HyMaTE adds its variant (qt: the prediction-hour input, h8: 8 sampled negative hours per stay "
              "and step); stay-level HyMaTE adds -qt when it also embeds the time its record ends "
              "(the default; --no-stay-query-time turns it off); -lr / -wu: a peak learning rate / warm-up other than 1e-3 / 1 epoch. "
              "Only budgets with every fold are listed.")  # fmt: skip
    REPORT.write_text("\n".join(markdown(t) for t in made) + "\n" + TARGET + "\n\n" + legend + "\n")
    console.print(f"{len(rows)} runs tabulated into {REPORT}")


def _order(model: str, setting: str, budget: str = "") -> tuple:
    """Table order: setting, then budget (a model's runs at one budget next to each other), then model."""
    models = list(TITLES)
    return (list(RUNS_PER_SETTING).index(setting), budget, models.index(model) if model in models else len(models), model)


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


if __name__ == "__main__":
    main()
