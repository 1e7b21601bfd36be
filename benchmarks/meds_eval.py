"""The real `meds-evaluation` package on hymate's predictions: its AUROC / AP against hymate's report.

    python benchmarks/meds_eval.py                      # trains two small P12 mortality runs first
    python benchmarks/meds_eval.py RUN_FOLDER ...       # binary runs (report/predictions_meds.parquet)

meds-evaluation lives in its own virtual environment (benchmarks/.venv-meds-eval, made on first use
with pip), so its dependencies never meet hymate's. Without run folders, the script trains HyMaTE and
LightGBM on P12 mortality (`strats`, seed 0) at a small budget (--train-stays, --epochs): the point is
the two evaluators agreeing on the same predictions, not the models' accuracy. Prints a table and
writes benchmarks/results/meds_eval.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
VENV = HERE / ".venv-meds-eval"
RESULTS = HERE / "results" / "meds_eval.json"
PACKAGE = "meds-evaluation==0.0.6"


def meds_evaluation() -> Path:
    cli = VENV / "bin" / "meds-evaluation-cli"
    if not cli.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", PACKAGE], check=True)
    return cli


def small_runs(out: Path, train_stays: int, epochs: int) -> list[Path]:
    runs = []
    for model in ("hymate", "lightgbm"):
        cmd = [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--protocol", "strats", "--seeds", "0",
               "--model", model, "--train-stays", str(train_stays), "--out", str(out / model), "-q",
               *(["--epochs", str(epochs)] if model != "lightgbm" else [])]  # fmt: skip
        subprocess.run(cmd, check=True)
        runs.append(out / model / "strats-split0-seed0")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--train-stays", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/meds-eval"))
    args = parser.parse_args()
    cli = meds_evaluation()
    runs = args.runs or small_runs(args.out, args.train_stays, args.epochs)
    rows = []
    for run in runs:
        report = json.loads((run / "report" / "metrics.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "result.json"
            subprocess.run([str(cli), f"predictions_path={run / 'report' / 'predictions_meds.parquet'}",
                            f"output_file={result}"], check=True, capture_output=True)  # fmt: skip
            theirs = json.loads(result.read_text())["samples_equally_weighted"]
        rows.append({"run": str(run), "model": report["row"]["model"], "task": report["row"]["task"],
                     "hymate_auroc": report["metrics"]["auroc"], "meds_evaluation_auroc": theirs["roc_auc_score"],
                     "hymate_ap": report["metrics"]["ap"], "meds_evaluation_ap": theirs["average_precision_score"]})  # fmt: skip
    table = Table("run", "AUROC hymate", "AUROC meds-evaluation", "AP hymate", "AP meds-evaluation",
                  title=f"{PACKAGE} on hymate's predictions (samples equally weighted)")  # fmt: skip
    for r in rows:
        table.add_row(f"{r['model']} {r['task']}", *(f"{r[k]:.6f}" for k in
                      ("hymate_auroc", "meds_evaluation_auroc", "hymate_ap", "meds_evaluation_ap")))  # fmt: skip
    Console().print(table)
    RESULTS.write_text(json.dumps({"package": PACKAGE, "budget": None if args.runs else
                                   {"train_stays": args.train_stays, "epochs": args.epochs}, "rows": rows}, indent=1) + "\n")  # fmt: skip
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
