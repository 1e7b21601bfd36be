"""What the plausibility table (hymate.data.plausible) drops on the real PhysioNet data.

    python benchmarks/plausible.py

For each dataset: the values dropped per variable, the variable's range and its source, and the
events kept. Prints a table and writes benchmarks/results/plausible.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hymate.data.plausible import RANGES
from hymate.data.store import load_dataset

RESULTS = Path(__file__).parent / "results" / "plausible.json"
_REASON = re.compile(r"^implausible (\w+) ")


def main() -> None:
    rows, totals = [], {}
    for dataset in ("physionet2012", "physionet2019"):
        data = load_dataset(dataset, progress=True)
        skipped = data.report.get("skipped_lines") or data.report.get("skipped_values") or {}
        for reason, entry in skipped.items():
            if m := _REASON.match(reason):
                r = RANGES[m.group(1)]
                rows.append({"dataset": dataset, "variable": m.group(1), "kind": reason.split(" ")[2].strip("("),
                             "dropped": entry["count"], "lo": r.lo, "hi": r.hi, "unit": r.unit, "source": r.source,
                             "examples": entry["examples"][:3]})  # fmt: skip
        totals[dataset] = {"events_kept": data.events.height, "dropped": sum(r["dropped"] for r in rows if r["dataset"] == dataset)}
    table = Table("dataset", "variable", "dropped", "range", "source", title="values outside the plausibility table")
    for r in rows:
        table.add_row(r["dataset"], r["variable"], f"{r['dropped']:,}", f"{r['lo']:g}..{r['hi']:g} {r['unit']}", r["source"])
    Console().print(table)
    Console().print(totals)
    RESULTS.write_text(json.dumps({"totals": totals, "rows": rows}, indent=1) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
