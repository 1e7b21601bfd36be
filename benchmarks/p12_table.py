"""The PhysioNet 2012 comparison: every model, both protocols, one table each.

    python benchmarks/p12_table.py [--protocols strats,splits5] [--models ...] [--out runs/benchmark] [--jobs 2]

Runs `hymate benchmark` for each protocol (each run in its own process; finished runs, including
those of benchmarks/p12_hymate.py, which writes into the same folder, are reused), then collects
every run into benchmarks/results/p12_table.json (rows {"model", "protocol", "seed", "split",
"auroc", "ap", ...}) and copies the Markdown tables next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hymate.evaluate.compare import read_row, run_folder

RESULTS = Path(__file__).parent / "results"
MODELS = "hymate,mamba,hymate-events,strats,grud,lightgbm,logreg"
KEYS = ("model", "protocol", "seed", "split", "auroc", "ap", "auprc_trapz", "min_re_pr", "brier", "ece",
        "params", "epochs", "epoch_s", "wall_s", "threads", "peak_mb")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="strats,splits5")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (2 on a 2-core CPU: ~1.6x the throughput)")
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


if __name__ == "__main__":
    main()
