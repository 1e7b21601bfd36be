"""The readers' fuzz harness, long profile: generated and mutated PhysioNet 2012 / 2019 trees.

    python benchmarks/fuzz.py [--examples 2000] [--seed 0] [--datasets physionet2012,physionet2019]

The strategies and the property are the test suite's (tests/fuzz/records.py): every input either
prepares with its lines / cells accounted for and only in-range events kept, or fails with a
HymateError naming the file; anything else is a crash. Crashes are counted (not raised) with
their first examples. Prints a table and writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for its strategies
from tests.fuzz.records import Crash, outcome, p12_tree, p19_tree  # noqa: E402

from hymate.nn.scan_cpu import machine_info  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz.json"
TREES = {"physionet2012": p12_tree, "physionet2019": p19_tree}


def run(dataset: str, examples: int, at_seed: int) -> dict:
    counts: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []

    @seed(at_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=["generate"],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(TREES[dataset]())
    def one(tree):
        try:
            counts[outcome(dataset, tree)] += 1
        except Crash as exc:
            counts["crash"] += 1
            if len(crashes) < 10:
                crashes.append(str(exc))

    start = time.perf_counter()
    one()
    return {"dataset": dataset, "inputs": sum(counts.values()), "outcomes": dict(counts.most_common()),
            "crashes": counts["crash"], "crash_examples": crashes, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="physionet2012,physionet2019")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [run(d, args.examples, args.seed) for d in args.datasets.split(",")]
    table = Table("dataset", "inputs", "outcomes", "crashes", "s", title="reader fuzz harness (long profile)")
    for r in rows:
        table.add_row(r["dataset"], f"{r['inputs']:,}", ", ".join(f"{k} {v:,}" for k, v in r["outcomes"].items()),
                      str(r["crashes"]), f"{r['seconds']:.0f}")  # fmt: skip
    Console().print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"seed": args.seed, "examples": args.examples, "machine": machine_info(), "rows": rows}, indent=1) + "\n")
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
