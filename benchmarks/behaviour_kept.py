"""Behaviour kept across the one-pipeline change (issue 17): reruns of committed runs, side by side.

    python benchmarks/behaviour_kept.py --p12-hymate RUN --p12-lightgbm RUN --p19-lightgbm RUN --p19-hymate RUN

Each RUN is a run folder written by `hymate train` after the change (<out>/<protocol>-split<k>-seed<s>):
P12 mortality `strats` seed 0 (HyMaTE, LightGBM) and P19 online `kfold5` fold 0 on all training stays
(LightGBM; HyMaTE with the P19 recipe, 3 epochs). A missing folder is reported as not run. The
committed figures are read from benchmarks/results (p12_hymate.json, p12_table.json, p19.json).
Prints the table and writes benchmarks/results/behaviour_kept.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
P12_KEYS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "ece")
P19_KEYS = ("utility", "auroc", "ap", "auprc_trapz")


def committed(which: str) -> dict:
    if which == "p12-hymate":
        rows = json.loads((RESULTS / "p12_hymate.json").read_text())["strats"]
        return next(r for r in rows if r["seed"] == 0)
    if which == "p12-lightgbm":
        rows = json.loads((RESULTS / "p12_table.json").read_text())["rows"]
        return next(r for r in rows if (r["model"], r["protocol"], r["seed"]) == ("lightgbm", "strats", 0))
    model = which.removeprefix("p19-")
    rows = json.loads((RESULTS / "p19.json").read_text())["rows"]
    return next(r for r in rows if (r["task"], r["model"], r["setting"], r["split"]) == ("sepsis-online", model, "kfold5", 0)
                and str(r.get("budget", "")).startswith("trainall-evalall"))  # fmt: skip


def cpu_name() -> str:
    from hymate.nn.scan_cpu import cpu_isas, cpu_model

    return f"{cpu_model()} ({ {'avx512': 'AVX-512', 'avx2': 'AVX2'}.get(cpu_isas()[0], 'no AVX2') })"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("p12-hymate", "p12-lightgbm", "p19-lightgbm", "p19-hymate"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    args = parser.parse_args()
    out, table = [], Table("run", "metric", "committed", "after the change", "difference", title="behaviour kept (test metrics)")
    for name in ("p12-hymate", "p12-lightgbm", "p19-lightgbm", "p19-hymate"):
        folder = getattr(args, name.replace("-", "_"))
        before = committed(name)
        report = folder / "report" / "metrics.json" if folder else None
        if report is None or not report.exists():
            out.append({"run": name, "status": "not run"})
            table.add_row(name, "-", "-", "not run", "-")
            continue
        after = json.loads(report.read_text())["row"]
        keys = P12_KEYS if name.startswith("p12") else P19_KEYS
        row = {"run": name, "status": "rerun", "folder": str(folder), "cpu": cpu_name(), "wall_s": after.get("wall_s"),
               "metrics": {k: {"committed": before[k], "after": after[k], "difference": after[k] - before[k]} for k in keys}}  # fmt: skip
        out.append(row)
        for k in keys:
            m = row["metrics"][k]
            table.add_row(name, k, f"{m['committed']:.6f}", f"{m['after']:.6f}", f"{m['difference']:+.2e}")
    Console().print(table)
    (RESULTS / "behaviour_kept.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {RESULTS / 'behaviour_kept.json'}")


if __name__ == "__main__":
    main()
