"""The PhysioNet 2012 comparison: every model, both protocols, one table each.

    python benchmarks/p12_table.py [--protocols strats,splits5] [--models ...] [--out runs/benchmark] [--jobs 2]

Runs `hymate benchmark` for each protocol (each run in its own process; finished runs, including
those of benchmarks/p12_hymate.py, which writes into the same folder, are reused), then collects
every run into benchmarks/results/p12_table.json (rows {"model", "protocol", "seed", "split",
"auroc", "ap", ...}) and copies the Markdown tables next to it. Then measures every model's cost
one run at a time (benchmarks/p12_cost.py: the grid's own times depend on what ran beside each
run) and writes benchmarks/results/p12_table.md: both protocols side by side with those costs,
and whether HyMaTE's mean AUROC beats each baseline's on the strats protocol, by how much.
With --collect-only nothing is run: the summary uses the finished runs and costs measured so far.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from hymate.evaluate.compare import paired_difference, read_row, run_folder

sys.path.insert(0, str(Path(__file__).parent))
import p12_cost  # noqa: E402  (a sibling script)

RESULTS = Path(__file__).parent / "results"
MODELS = "hymate,mamba,hymate-events,strats,grud,lightgbm,logreg"
KEYS = ("model", "protocol", "seed", "split", "auroc", "ap", "auprc_trapz", "min_re_pr", "brier", "ece",
        "params", "epochs", "epoch_s", "wall_s", "threads", "peak_mb")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="strats,splits5")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (2 on a 2-core CPU: ~1.4x the throughput)")
    parser.add_argument("--cost-threads", type=int, default=2, help="threads of the one-at-a-time cost runs")
    parser.add_argument("--collect-only", action="store_true", help="run nothing; tabulate the finished runs")
    args = parser.parse_args()
    path = RESULTS / "p12_table.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    for protocol in args.protocols.split(","):
        cmd = [sys.executable, "-m", "hymate.cli", "benchmark", "physionet2012", "--protocol", protocol,
               "--models", args.models, "--out", str(args.out), "--jobs", str(args.jobs),
               *(["--collect-only"] if args.collect_only else [])]  # fmt: skip
        subprocess.run(cmd, check=True)
        seeds, splits = ([0, 1, 2, 3, 4], [0]) if protocol == "strats" else ([0], [0, 1, 2, 3, 4])
        rows, missing = [], []
        for model in args.models.split(","):
            for split in splits:
                for seed in seeds:
                    row = read_row(run_folder(args.out, model, protocol, split, seed))
                    if row is None:  # only with --collect-only: the grid is not finished
                        missing.append({"model": model, "protocol": protocol, "split": split, "seed": seed})
                    else:
                        rows.append({k: row.get(k) for k in KEYS})
        results["rows"] = [r for r in results["rows"] if r["protocol"] != protocol] + rows
        results.setdefault("missing", {})[protocol] = missing
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
        shutil.copy(args.out / "tables" / protocol / "table.md", RESULTS / f"p12_table_{protocol}.md")
        shutil.copy(args.out / "tables" / protocol / "table.png", RESULTS / f"p12_table_{protocol}.png")
    models = args.models.split(",")
    if not args.collect_only:
        costs = [p12_cost.measure(m, args.cost_threads, p12_cost.EPOCHS, p12_cost.OUT) for m in models]
        p12_cost.save(costs, models, p12_cost.setting_name(args.cost_threads, p12_cost.EPOCHS))
    cost_path = RESULTS / "p12_cost.json"
    costs = json.loads(cost_path.read_text())["rows"] if cost_path.exists() else []
    summary = summary_markdown(results["rows"], costs, models, args.cost_threads)
    (RESULTS / "p12_table.md").write_text(summary)
    print(summary)


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 run)"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def summary_markdown(rows: list[dict], costs: list[dict], models: list[str], threads: int) -> str:
    """Both protocols side by side, the one-at-a-time costs, and HyMaTE against each baseline."""
    setting = p12_cost.setting_name(threads, p12_cost.EPOCHS)
    cost = {c["model"]: c for c in costs if c.get("setting") == setting}
    head = ["model", "strats AUROC", "strats AP", "runs", "splits5 AUROC", "splits5 AP", "runs", "params",
            "s / epoch", "s / run", "peak MB"]  # fmt: skip
    out = ["# PhysioNet 2012 in-hospital mortality: every model, both protocols", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    auroc, fmt = {}, p12_cost.fmt
    for model in models:
        cells = [model]
        for protocol in ("strats", "splits5"):
            got = [r for r in rows if r["model"] == model and r["protocol"] == protocol]
            cells += [mean_sd([r["auroc"] for r in got]), mean_sd([r["ap"] for r in got]), str(len(got))]
            if protocol == "strats" and got:
                auroc[model] = float(np.mean([r["auroc"] for r in got]))
        c = cost.get(model, {})
        params = c.get("params") or next((r["params"] for r in rows if r["model"] == model and r.get("params")), None)
        cells += [fmt(params, ","), fmt(c.get("epoch_s"), ".1f"), fmt(c.get("wall_s"), ".0f"), fmt(c.get("peak_mb"), ".0f")]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Mean ± sample sd over the runs counted in each `runs` column (strats: its one split, one run per "
            "seed; splits5: one run per split, seed 0). Costs: "
            f"one run at a time on the strats split, {threads} threads, {p12_cost.EPOCHS} epochs of the neural "
            "models (s / epoch includes validation; s / run is that short run, not a full 15-epoch one; tabular: "
            "the whole fit with its hyper-parameter grid), from benchmarks/results/p12_cost.json.", ""]  # fmt: skip
    if "hymate" in auroc:
        out += comparison_lines(rows, auroc, models)
    return "\n".join(out) + "\n"


def comparison_lines(rows: list[dict], auroc: dict[str, float], models: list[str]) -> list[str]:
    """HyMaTE minus each baseline in AUROC points: over all runs (the issue's target) and paired by run."""
    head = ["baseline", "strats AUROC", "HyMaTE − it (all runs)", "strats paired: mean ± sd", "HyMaTE wins",
            "splits5 paired: mean ± sd", "HyMaTE wins"]  # fmt: skip
    out = ["HyMaTE against each baseline, test AUROC in points (0.01). 'All runs' compares the strats-protocol "
           "means of the table; 'paired' uses only the runs both models finished (same split and seed), "
           "which matters on splits5, where the test fold moves AUROC more than the models differ.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for model in models:
        if model == "hymate" or model not in auroc:
            continue
        cells = [model, f"{auroc[model]:.4f}", f"{(auroc['hymate'] - auroc[model]) * 100:+.2f}"]
        for protocol in ("strats", "splits5"):
            got = paired_difference([r for r in rows if r["protocol"] == protocol], "hymate", model)
            cells += [f"{got['mean'] * 100:+.2f} ± {got['sd'] * 100:.2f}", f"{got['wins']}/{got['n']}"] if got else ["-", "-"]
        out.append("| " + " | ".join(cells) + " |")
    beaten = all(auroc["hymate"] > v for m, v in auroc.items() if m != "hymate")
    return out + ["", f"HyMaTE's mean strats AUROC ({auroc['hymate']:.4f}) beats every baseline's: **{'yes' if beaten else 'no'}**."]


if __name__ == "__main__":
    main()
