"""The P12 tasks beyond mortality: HyMaTE and LightGBM on length of stay > 3 days (binary), in days
(regression) and in 4 bands (multiclass), `strats` protocol, 3 seeds, next to the trivial baseline.

    python benchmarks/tasks.py                                   # the full benchmark (hours on 2 cores)
    python benchmarks/tasks.py --epochs 1 --train-stays 300 --eval-stays 300 --seeds 0 --out runs/smoke-tasks
    python benchmarks/tasks.py --models hymate,hymate-l1,lightgbm   # also HyMaTE with the L1 loss on los-days

Each run is its own `hymate train` process (its wall time and peak memory are its own); finished
runs are reused, so an interrupted benchmark continues. The trivial baseline predicts from the
training labels alone, on the same test stays: the training prevalence (binary), the class
frequencies (multiclass), the training median (regression). Prints the table and writes
benchmarks/results/tasks.json: rows {"task", "model", "seed", "label_type", <metrics>, "budget", ...};
a run with a budget other than the default writes beside its runs instead, unless --results names the file
(the reduced-budget table of 2026-12-03 is results/tasks_ep5-train2000.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from hymate.cli import parse_int_list
from hymate.data.store import load_dataset
from hymate.evaluate.metrics import METRICS_BY_TYPE
from hymate.evaluate.scores import evaluate_rows
from hymate.nn.scan_cpu import machine_info
from hymate.tasks.registry import get_task
from hymate.tasks.splits import load_or_make_splits, subsample

RESULTS = Path(__file__).parent / "results" / "tasks.json"
DEFAULT_OUT = Path("runs/benchmark/tasks")
TASKS = ("los-3d", "los-days", "los-bands")
MODELS = ("hymate", "lightgbm")
# Extra arms (`--models hymate,hymate-l1,lightgbm`): a model with extra `train` flags, on tasks of one
# label type only (elsewhere they are not run and not listed as missing).
ARMS = {"hymate-l1": ("hymate", ("--regression-loss", "l1"), "regression")}
SHOWN = {"binary": ("auroc", "ap", "ece"), "multiclass": ("accuracy", "macro_auroc", "macro_f1"), "regression": ("mae", "rmse", "r2")}


def budget_name(args) -> str:
    parts = [f"ep{args.epochs}" if args.epochs else "", f"train{args.train_stays}" if args.train_stays else "",
             f"eval{args.eval_stays}" if args.eval_stays else ""]  # fmt: skip
    return "-".join(p for p in parts if p) or "full"


def applies(task: str, model: str) -> bool:
    return model not in ARMS or get_task("physionet2012", task).label_type == ARMS[model][2]


def run(task: str, model: str, seed: int, out: Path, args) -> dict | None:
    base, flags, _ = ARMS.get(model, (model, (), None))
    folder = out / task / model / f"strats-split0-seed{seed}"
    done = folder / "report" / "metrics.json"
    if not done.exists() and args.only_finished:
        return None
    if not done.exists():
        cmd = [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--task", task, "--model", base,
               "--protocol", "strats", "--seeds", str(seed), "--out", str(out / task / model), "--quiet", *flags]  # fmt: skip
        if args.epochs and base != "lightgbm":
            cmd += ["--epochs", str(args.epochs)]
        for flag, value in (("--train-stays", args.train_stays), ("--eval-stays", args.eval_stays)):
            if value:
                cmd += [flag, str(value)]
        subprocess.run(cmd, check=True)
    report = json.loads(done.read_text())
    return {**report["row"], "model": model, "ci95": report["ci95"]}


def trivial(task_name: str, seed: int, args) -> dict:
    """The label-only baseline on the same test stays as the models' runs."""
    from hymate.data.store import cache_dir

    task = get_task("physionet2012", task_name)
    view = task.view(load_dataset(task.dataset, progress=False))
    split = load_or_make_splits(view, task, "strats", 0, cache_dir() / "splits")[0]
    if args.train_stays or args.eval_stays:
        split = subsample(split, args.train_stays, args.eval_stays, 0)
    labels = view.labels.filter(pl.col("label").is_not_null())
    y_train = labels.filter(pl.col("stay_id").is_in(list(split.train))).get_column("label").to_numpy()
    test = labels.filter(pl.col("stay_id").is_in(list(split.test)))
    y, ids = test.get_column("label").to_numpy(), test.get_column("stay_id").to_numpy()
    kind = task.label_type
    if kind == "binary":
        pred = np.full(len(y), y_train.mean())
    elif kind == "multiclass":
        freq = np.bincount(y_train.astype(int), minlength=len(task.classes)) / len(y_train)
        pred = np.tile(freq, (len(y), 1))
    else:
        pred = np.full(len(y), np.median(y_train))
    metrics, ci = evaluate_rows(kind, y, pred, ids, n_boot=200, seed=seed)
    return {"task": task.name, "model": "trivial", "seed": seed, "label_type": kind, "protocol": "strats",
            **metrics, "ci95": ci}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--epochs", type=int, default=None, help="neural models' maximum epochs (default: train's)")
    parser.add_argument("--train-stays", type=int, default=None)
    parser.add_argument("--eval-stays", type=int, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, default=None, help="the results file (default: see above)")
    parser.add_argument("--only-finished", action="store_true", help="start no run: tabulate the finished ones (the table says which are missing)")
    args = parser.parse_args()
    console = Console(width=max(140, Console().width))
    budget = budget_name(args)
    path = args.results or (RESULTS if args.out == DEFAULT_OUT and budget == "full" else args.out / RESULTS.name)
    rows, missing = [], []
    for task in args.tasks.split(","):
        for seed in parse_int_list(args.seeds):
            for model in (m for m in args.models.split(",") if applies(task, m)):
                row = run(task, model, seed, args.out, args)
                if row is None:
                    missing.append(f"{task}/{model}/seed {seed}")
                else:
                    rows.append(row)
            if seed == parse_int_list(args.seeds)[0]:
                rows.append(trivial(task, seed, args))  # depends on the split only, not the seed
        kind = rows[-1]["label_type"]
        mine = [r for r in rows if r["task"].endswith(task)]
        table = Table("model", "runs", *SHOWN[kind], "wall s", title=f"{mine[0]['task']} ({kind}), strats, test, budget {budget}")
        for model in (*(m for m in args.models.split(",") if applies(task, m)), "trivial"):
            runs = [r for r in mine if r["model"] == model]
            if not runs:
                table.add_row(model, "0", *("-" for _ in SHOWN[kind]), "-")
                continue
            cells = []
            for k in SHOWN[kind]:
                v = np.array([r[k] for r in runs])
                cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
            wall = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
            table.add_row(model, str(len(runs)), *cells, f"{np.mean(wall):.0f}" if wall else "-")
        console.print(table)
    keep = ("task", "model", "seed", "label_type", "protocol", "wall_s", "train_s", "epochs", "peak_mb", "params")
    machine = machine_info()
    out_rows = [{**{k: r.get(k) for k in keep}, **{k: r[k] for k in METRICS_BY_TYPE[r["label_type"]]},
                 "ci95": r["ci95"], "budget": budget, **machine} for r in rows]  # fmt: skip
    out_rows += [{"run": m, "status": "not run", "budget": budget} for m in missing]
    if missing:
        console.print(f"[yellow]not run: {', '.join(missing)}[/yellow]")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out_rows, indent=1) + "\n")
    console.print(f"rows written to {path}")


if __name__ == "__main__":
    main()
