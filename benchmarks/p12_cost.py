"""What each P12 model costs to train, measured one run at a time on an otherwise idle machine.

    python benchmarks/p12_cost.py [--threads 2] [--epochs 2] [--models ...] [--out runs/cost]

The comparison grid's own time columns are only as clean as the machine was while it ran (two
lanes side by side, or other jobs: torch slows far more than 2x when its threads are
oversubscribed). This measures the cost columns again under one condition for every model: the
strats split, seed 0, `--epochs` epochs of the neural models (seconds per epoch include the
validation pass; the first epoch's warm-up is averaged in), a full fit of the tabular ones
(their hyper-parameter grid included), each in its own process via `hymate benchmark`, with
`--threads` torch threads and nothing else of ours running. The load average before each run is
recorded: above ~0.5 the machine was not idle and the numbers are upper bounds.
Writes benchmarks/results/p12_cost.json (rows {"model", "setting", "threads", "epoch_s", "wall_s",
"peak_mb", "params", "load_before"}) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hymate.evaluate.compare import read_row, run_folder

RESULTS = Path(__file__).parent / "results" / "p12_cost.json"
MODELS = "hymate,mamba,hymate-events,strats,grud,lightgbm,logreg"
EPOCHS, OUT = 2, Path("runs/cost")


def setting_name(threads: int, epochs: int) -> str:
    """The measuring condition: the run folder's name and the results rows' `setting`."""
    return f"threads{threads}-epochs{epochs}"


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def measure(model: str, threads: int, epochs: int, out: Path) -> dict:
    setting = setting_name(threads, epochs)
    run = run_folder(out / setting, model, "strats", 0, 0)
    saved = run / "load_before.json"  # the load average when the measurement started
    row = read_row(run)
    if row is None:
        load = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "hymate.cli", "benchmark", "physionet2012", "--protocol", "strats",
               "--models", model, "--seeds", "0", "--epochs", str(epochs), "--out", str(out / setting), "--quiet"]  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        row = read_row(run)
        saved.write_text(json.dumps({"load_1min": load}))
    else:  # a finished measurement: reuse it with the load recorded when it ran
        load = json.loads(saved.read_text())["load_1min"] if saved.exists() else None
    keys = ("threads", "epochs", "epoch_s", "train_s", "wall_s", "peak_mb", "params")
    return {"model": model, "setting": setting, **{k: row.get(k) for k in keys}, "load_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [measure(m, args.threads, args.epochs, args.out) for m in args.models.split(",")]
    table = Table("model", "params", "s / epoch", "train s", "s / run", "peak MB", "threads", "load before",
                  title=f"P12 training cost, strats split, one run at a time ({args.epochs} epochs of the neural models)")  # fmt: skip
    for r in rows:
        table.add_row(r["model"], fmt(r["params"], ","), fmt(r["epoch_s"], ".1f"), fmt(r["train_s"], ".1f"),
                      fmt(r["wall_s"], ".0f"), fmt(r["peak_mb"], ".0f"), str(r["threads"]), fmt(r["load_before"], ".2f"))  # fmt: skip
    Console().print(table)
    save(rows, args.models.split(","), setting_name(args.threads, args.epochs))


def save(rows: list[dict], models: list[str], setting: str) -> None:
    """Replace these models' rows of this setting in the results file, keep all others."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    keep = [r for r in results["rows"] if not (r["model"] in models and r.get("setting") == setting)]
    results["rows"] = keep + rows
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
