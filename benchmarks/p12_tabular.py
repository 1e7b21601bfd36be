"""Tabular baselines (LightGBM, logistic regression on summary features) on PhysioNet 2012.

    python benchmarks/p12_tabular.py [--seeds 0-4] [--protocols strats,splits5] [--models lightgbm,logreg]
                                     [--out runs/benchmark]

strats: the one strats split (split seed 0, as for HyMaTE) with model seeds 0-4. The seed moves
LightGBM's bagging and feature sampling. Logistic regression (lbfgs, no sampling) has no
randomness: every seed fits the same model (checked: seeds 0 and 1 gave identical metrics), so
it runs once on strats, with the first seed. splits5: the five splits, one seed (0) each. Each run is its own process, so its wall time and
peak memory (max RSS) are its own; LightGBM runs with 2 threads and OMP_WAIT_POLICY=passive
(spin-waiting threads on a busy machine cost 50x the CPU). Finished runs are reused, so an
interrupted benchmark continues where it stopped. Prints the tables and writes
benchmarks/results/p12_tabular.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hymate.cli import parse_int_list

RESULTS = Path(__file__).parent / "results" / "p12_tabular.json"
HYMATE_RESULTS = Path(__file__).parent / "results" / "p12_hymate.json"
KEYS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "ece")
ROW_KEYS = ("model", "protocol", "seed", "split", *KEYS, "wall_s", "peak_mb", "train_s", "train_cpu_s")
TITLES = {"lightgbm": "LightGBM", "logreg": "Logistic regression"}


def run_in_process(model: str, protocol: str, seed: int, split: int, out: Path) -> None:
    """The body of one run (called in a fresh process by `run`)."""
    from hymate.data.store import cache_dir, load_dataset
    from hymate.tasks.registry import get_task
    from hymate.tasks.splits import load_or_make_splits
    from hymate.train.module import training_config
    from hymate.train.run import run_one

    task = get_task("physionet2012", "mortality")
    view = task.view(load_dataset(task.dataset, progress=False))
    chosen = [s for s in load_or_make_splits(view, task, protocol, 0, cache_dir() / "splits") if s.index == split]
    # run_one's folder: <out>/<model>/<protocol>-split<k>-seed<s>, what `run` looks for
    train = training_config(task, model, {"seed": seed})
    run_one(task, view, chosen[0], model, train, out / model, progress=False, resume=True)


def run(model: str, protocol: str, seed: int, split: int, out: Path) -> dict:
    done = out / model / f"{protocol}-split{split}-seed{seed}" / "report" / "metrics.json"
    if not done.exists():
        cmd = [sys.executable, __file__, "--one", model, protocol, str(seed), str(split), "--out", str(out)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    report = json.loads(done.read_text())
    return {**report["row"], "train_cpu_s": report["train_cpu_s"], "ci95": report["ci95"],
            "hyperparameters": report["hyperparameters"]}  # fmt: skip


def mean_sd(rows: list[dict], key: str, digits: int = 4) -> str:
    values = np.array([r[key] for r in rows], dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def chosen(h: dict) -> str:
    if "num_leaves" in h:
        return f"leaves {h['num_leaves']}, lr {h['learning_rate']}, mcs {h['min_child_samples']}, ff {h['feature_fraction']}, {h['trees']} trees"
    return f"C {h['C']:g}, {h['class_weight'] or 'unweighted'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--protocols", default="strats,splits5")
    parser.add_argument("--models", default="lightgbm,logreg")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "PROTOCOL", "SEED", "SPLIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, protocol, seed, split = args.one
        run_in_process(model, protocol, int(seed), int(split), args.out)
        return

    console = Console()
    all_rows = []
    for protocol in args.protocols.split(","):
        seeds = parse_int_list(args.seeds)
        for model in args.models.split(","):
            if protocol == "strats":  # logistic regression is deterministic: one run stands for every seed
                jobs = [(s, 0) for s in (seeds[:1] if model == "logreg" else seeds)]
            else:
                jobs = [(0, k) for k in range(5)]
            rows = [run(model, protocol, seed, split, args.out) for seed, split in jobs]
            all_rows += rows
            table = Table("seed", "split", "AUROC (95 % CI)", "AP", "AUPRC trapz", "min(Re,Pr)", "ECE", "train s",
                          "train CPU s", "wall s", "peak MB", "chosen on validation",
                          title=f"{TITLES[model]} (summary features), PhysioNet 2012, {protocol} protocol (test)")  # fmt: skip
            for r in rows:
                lo, hi = r["ci95"]["auroc"]
                table.add_row(str(r["seed"]), str(r["split"]), f"{r['auroc']:.4f} ({lo:.3f}-{hi:.3f})", f"{r['ap']:.4f}",
                              f"{r['auprc_trapz']:.4f}", f"{r['min_re_pr']:.4f}", f"{r['ece']:.4f}", f"{r['train_s']:.1f}",
                              f"{r['train_cpu_s']:.1f}", f"{r['wall_s']:.0f}", f"{r['peak_mb']:.0f}",
                              chosen(r["hyperparameters"]))  # fmt: skip
            table.add_row("mean ± sd", "", *(mean_sd(rows, k) for k in KEYS), mean_sd(rows, "train_s", 1),
                          mean_sd(rows, "train_cpu_s", 1), mean_sd(rows, "wall_s", 0), "", "")  # fmt: skip
            console.print(table)

    summary = Table("model", "protocol", "runs", "AUROC", "AP", "AUPRC trapz", "min(Re,Pr)", "ECE", "train s",
                    title="PhysioNet 2012 mortality, test, mean ± sd over runs")  # fmt: skip
    for model in args.models.split(","):
        for protocol in args.protocols.split(","):
            rows = [r for r in all_rows if r["model"] == model and r["protocol"] == protocol]
            summary.add_row(TITLES[model], protocol, str(len(rows)), *(mean_sd(rows, k) for k in KEYS),
                            mean_sd(rows, "train_s", 1))  # fmt: skip
    if HYMATE_RESULTS.exists():  # HyMaTE's own benchmark, where it has been run
        for protocol, rows in json.loads(HYMATE_RESULTS.read_text()).items():
            if protocol in args.protocols.split(",") and rows:
                summary.add_row(
                    "HyMaTE (p12_hymate.json)", protocol, str(len(rows)), *(mean_sd(rows, k) for k in KEYS), ""
                )
    console.print(summary)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = [{k: r[k] for k in ROW_KEYS} for r in all_rows]
    ran = {(r["model"], r["protocol"]) for r in runs}
    if RESULTS.exists():  # keep the rows of models/protocols this invocation did not run
        runs = [r for r in json.loads(RESULTS.read_text())["runs"] if (r["model"], r["protocol"]) not in ran] + runs
    RESULTS.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
