"""Interpretability of HyMaTE on PhysioNet 2012 (`strats` protocol, test = set-a): which
variables drive its predictions, and is its attention a faithful explanation?

    python benchmarks/explain_p12.py [--checkpoint runs/benchmark/hymate/strats-split0-seed0/checkpoint]

Prints the global top-10 variables by HyMaTE's attention (pooling weights, and their rollout
through the channel attention) and by Integrated Gradients, the deletion test (remove each test
stay's top-k variables by each method vs k random ones, 10 draws; AUROC drop) and a sample
per-stay explanation. Writes benchmarks/results/explain_p12.json (rows {method, k, auroc_drop}),
the deletion and importance plots and the sample stay's HTML report beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from hymate.data.store import load_dataset
from hymate.explain.report import METHODS, explain_cohort, explain_stay
from hymate.tasks.splits import make_splits
from hymate.train.estimators import load_checkpoint

RESULTS = Path(__file__).parent / "results"
KS = (1, 5, 10)  # each k re-scores the test set 13 times (3 methods + 10 random draws)
TARGET_RATIO = 2.0  # top-5 by attention must cost >= 2x the AUROC of 5 random variables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/benchmark/hymate/strats-split0-seed0/checkpoint"))
    parser.add_argument("--out", type=Path, default=Path("runs/explain_p12"))
    parser.add_argument("--ig-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a busy 2-core machine, 2 was 5x slower)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--stays", type=int, default=None, help="first N test stays only (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    start = time.perf_counter()

    estimator, task, meta = load_checkpoint(args.checkpoint)
    model, normalizer = estimator.model, estimator.normalizer
    data = task.view(load_dataset(task.dataset, progress=False))
    split = next(s for s in make_splits(data, task, "strats", 0) if s.name == meta["split"])
    test = list(split.test[: args.stays])
    console.print(f"{meta['split']}: {len(test):,} test stays; checkpoint {args.checkpoint}")
    result = explain_cohort(model, normalizer, meta, data, test, args.out / "cohort", args.ig_steps, KS,
                            args.draws, progress=lambda m: console.print(f"  {m}"))  # fmt: skip
    rows, top = result["rows"], result["top"]

    table = Table("rank", *(m.replace("_", " ") for m in METHODS), title="global top-10 variables (test set)")
    for r, names in enumerate(zip(*(top[m] for m in METHODS), strict=True)):
        table.add_row(str(r + 1), *(f"{n} ({w:.3f})" for n, w in names))
    console.print(table)
    base = rows[0]["base_auroc"]
    drops = Table(
        "method",
        *(f"k={k}" for k in KS),
        title=f"AUROC drop, each stay's top-k variables removed (base AUROC {base:.4f})",
    )
    for method in (*METHODS, "random"):
        cells = []
        for k in KS:
            row = next(r for r in rows if r["method"] == method and r["k"] == k)
            cells.append(f"{row['auroc_drop']:.4f}" + (f" ± {row['sd']:.4f}" if "sd" in row else ""))
        drops.add_row(method + (f" (mean ± sd, {args.draws} draws)" if method == "random" else ""), *cells)
    console.print(drops)
    drop5 = {r["method"]: r["auroc_drop"] for r in rows if r["k"] == 5}
    ratios = {m: drop5[m] / drop5["random"] for m in METHODS}
    met = ratios["attention"] >= TARGET_RATIO
    console.print(f"target (attention top-5 drop >= {TARGET_RATIO:g} x random-5 drop): ratio {ratios['attention']:.2f} -> "
                  f"{'met' if met else 'NOT met'}; rollout {ratios['attention_rollout']:.2f}, IG {ratios['integrated_gradients']:.2f}")  # fmt: skip

    # A sample stay: the test stay that died with the highest predicted risk.
    ce = result["explanations"]
    died = np.flatnonzero(ce.labels == 1)
    sample = int(ce.stay_ids[died[np.argmax(ce.logits[died])]])
    written = explain_stay(model, normalizer, meta, data, sample, args.out / f"stay-{sample}", args.ig_steps)
    stay = json.loads(written["json"].read_text())
    local = Table(
        "rank",
        *(m.replace("_", " ") for m in METHODS),
        title=f"sample stay {sample}: risk {stay['probability']:.1%}, died",
    )
    scores = {m: np.abs(np.asarray(stay[m])) for m in METHODS}
    orders = {m: np.argsort(-scores[m], kind="stable")[:5] for m in METHODS}
    for r in range(5):
        local.add_row(
            str(r + 1), *(f"{stay['variables'][orders[m][r]]} ({stay[m][orders[m][r]]:+.3f})" for m in METHODS)
        )
    console.print(local)

    if args.stays is not None:
        return  # a smoke run writes no results
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(result["deletion"], RESULTS / "explain_p12_deletion.png")
    shutil.copy(result["importance"], RESULTS / "explain_p12_importance.png")
    shutil.copy(written["html"], RESULTS / "explain_p12_stay.html")
    summary = {
        "checkpoint": str(args.checkpoint), "split": meta["split"], "test_stays": len(test), "base_auroc": base,
        "rows": [{k: r[k] for k in ("method", "k", "auroc_drop", "auroc", "sd") if k in r} for r in rows],
        "random_draws": {r["k"]: r["draws"] for r in rows if r["method"] == "random"},
        "ranking": "per stay, among the stay's measured variables; each stay keeps >= 1 variable",
        "global_top10": {m: [[n, round(w, 5)] for n, w in top[m]] for m in METHODS},
        "target": {"ratio_top5_vs_random5": ratios, "required": TARGET_RATIO, "met": met},
        "ig": {"n_steps": args.ig_steps, "baseline": "each variable's training mean (z = 0)",
               "completeness_gap_mean_abs": result["numbers"]["ig_completeness_gap_mean_abs"]},
        "sample_stay": {"stay_id": sample, "probability": stay["probability"]},
        "timings_s": {**result["numbers"]["timings_s"], "total": round(time.perf_counter() - start, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
    }  # fmt: skip
    (RESULTS / "explain_p12.json").write_text(json.dumps(summary, indent=1))
    console.print(
        f"wrote {RESULTS / 'explain_p12.json'} ({summary['timings_s']['total']:.0f} s); reports in {args.out}"
    )


if __name__ == "__main__":
    main()
