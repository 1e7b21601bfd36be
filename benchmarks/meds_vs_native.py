"""The MEDS path against the native one: PhysioNet 2012 mortality and PhysioNet 2019 stay-level sepsis
through `hymate export meds` -> `hymate prepare meds` -> `hymate train meds`, next to `hymate prepare`
-> `hymate train` on the same split and seed.

    python benchmarks/meds_vs_native.py                                  # preparation only (minutes)
    python benchmarks/meds_vs_native.py --train --epochs 3 --train-stays 2000 --models hymate,lightgbm

Each step is its own process in a fresh cache, timed, with its peak resident memory (GNU time's
maximum RSS). With --train, each model is trained on both paths at the given budget and its test
AUROC / AP compared. Prints a table and writes benchmarks/results/meds.json: rows
{"dataset", "path": "native"|"meds", "model", "auroc", "ap", "prepare_s", "peak_mb", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hymate.nn.scan_cpu import machine_info

RESULTS = Path(__file__).parent / "results" / "meds.json"
# dataset -> (native task, protocol, the exported label file)
CASES = {"physionet2012": ("mortality", "strats", "mortality"), "physionet2019": ("sepsis-stay", "splits5", "sepsis-stay")}


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, output) of one command in its own process."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak_kb = float(done.stderr.strip().splitlines()[-1])
    return wall, peak_kb / 1024, done.stdout


def hymate(*args: str) -> list[str]:
    return [sys.executable, "-m", "hymate.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(CASES))
    parser.add_argument("--train", action="store_true", help="also train each model on both paths")
    parser.add_argument("--models", default="hymate,lightgbm")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-stays", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    data = os.environ.get("HYMATE_DATA")
    if not data:
        raise SystemExit("set HYMATE_DATA to the folder holding physionet2012/ and physionet2019/")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hymate-meds-bench-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        for dataset in args.datasets.split(","):
            task, protocol, label_file = CASES[dataset]
            native_cache, meds_cache, root = tmp / f"{dataset}-native", tmp / f"{dataset}-meds-cache", tmp / f"{dataset}-meds"
            prep_native = timed(hymate("prepare", dataset, "--data-dir", data, "--cache-dir", str(native_cache), "-q"), env)
            export = timed(hymate("export", "meds", dataset, str(root), "--data-dir", data, "--cache-dir", str(native_cache),
                                  "--task", task, "-q"), env)  # fmt: skip
            prep_meds = timed(hymate("prepare", "meds", "--data-dir", str(root), "--cache-dir", str(meds_cache), "-q"), env)
            paths = {"native": (prep_native, [dataset, "--task", task, "--protocol", protocol, "--data-dir", data,
                                              "--cache-dir", str(native_cache)]),
                     "meds": (prep_meds, ["meds", "--task", str(root / "labels" / f"{label_file}.parquet"), "--protocol", "meds",
                                          "--data-dir", str(root), "--cache-dir", str(meds_cache)])}  # fmt: skip
            for path, ((prep_s, prep_mb, _), where) in paths.items():
                base = {"dataset": dataset, "path": path, "prepare_s": round(prep_s, 1), "prepare_peak_mb": round(prep_mb),
                        "export_s": round(export[0], 1) if path == "meds" else None}  # fmt: skip
                if not args.train:
                    rows.append({**base, "model": None, "auroc": None, "ap": None, "peak_mb": round(prep_mb)})
                    continue
                for model in args.models.split(","):
                    out = tmp / f"{dataset}-{path}-{model}"
                    budget = [*(["--epochs", str(args.epochs)] if args.epochs and model != "lightgbm" else []),
                              *(["--train-stays", str(args.train_stays)] if args.train_stays else [])]  # fmt: skip
                    wall, peak, _ = timed(hymate("train", *where, "--model", model, "--seeds", str(args.seed), "--out", str(out),
                                                 "-q", *budget), env)  # fmt: skip
                    (run,) = [p for p in out.iterdir() if p.is_dir()]
                    metrics = json.loads((run / "report" / "metrics.json").read_text())["metrics"]
                    rows.append({**base, "model": model, "auroc": metrics["auroc"], "ap": metrics["ap"],
                                 "train_s": round(wall, 1), "peak_mb": round(max(peak, prep_mb))})  # fmt: skip
    table = Table("dataset", "path", "model", "AUROC", "AP", "prepare s", "prepare peak MB", "export s", "train s",
                  title="MEDS path vs native")  # fmt: skip
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        table.add_row(r["dataset"], r["path"], r["model"] or "-", fmt(r["auroc"], ".4f"), fmt(r["ap"], ".4f"),
                      fmt(r["prepare_s"], ".1f"), fmt(r["prepare_peak_mb"], ",.0f"), fmt(r["export_s"], ".1f"),
                      fmt(r.get("train_s"), ".0f"))  # fmt: skip
    Console().print(table)
    budget = {"train": args.train, "epochs": args.epochs, "train_stays": args.train_stays, "seed": args.seed}
    args.results.write_text(json.dumps({"machine": machine_info(), "budget": budget, "rows": rows}, indent=1) + "\n")
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
