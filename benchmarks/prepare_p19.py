"""Time to prepare PhysioNet 2019 (all 40,336 stays) from the archive, and to load the cache.

    python benchmarks/prepare_p19.py [--data-dir ../shared/data] [--reps 3]

Prints a table and writes benchmarks/results/prepare_p19.json. Each preparation goes into a
fresh cache folder, so nothing is reused; each cached load is a full `load_dataset` call (source
checksum + Parquet read), as a second `hymate` run would do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hymate.data.store import data_dir
from prepare import time_preparation  # benchmarks/ is on sys.path when a script here runs

RESULTS = Path(__file__).parent / "results" / "prepare_p19.json"
TARGETS = {"prepare_s": 60.0, "load_s": 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = data_dir(args.data_dir)

    data, cached, prepare_s, load_s, cache_mb = time_preparation("physionet2019", root, args.reps)
    assert cached.events.height == data.events.height and cached.labels.height == data.labels.height

    result = {
        "stays": data.stays.height,
        "prepare_s": round(statistics.median(prepare_s), 3),
        "load_s": round(statistics.median(load_s), 3),
        "hourly_rows": data.report["hourly_rows"],
        "events": data.events.height,
        "label_rows": data.labels.height,
        "prepare_runs_s": [round(x, 3) for x in prepare_s],
        "load_runs_s": [round(x, 3) for x in load_s],
        "cache_mb": round(cache_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "targets": TARGETS,
    }
    table = Table("what", "median s", "runs s", "target s", title="PhysioNet 2019 preparation")
    table.add_row(f"prepare {result['stays']:,} stays from the archive", f"{result['prepare_s']:.2f}",
                  ", ".join(f"{x:.2f}" for x in prepare_s), f"<= {TARGETS['prepare_s']:g}")  # fmt: skip
    table.add_row("load the prepared cache", f"{result['load_s']:.2f}", ", ".join(f"{x:.2f}" for x in load_s),
                  f"<= {TARGETS['load_s']:g}")  # fmt: skip
    Console().print(table)
    Console().print(
        f"{result['stays']:,} stays, {result['hourly_rows']:,} hourly rows, {result['events']:,} events, "
        f"cache {result['cache_mb']} MB, peak RSS {result['peak_rss_mb']} MB"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
