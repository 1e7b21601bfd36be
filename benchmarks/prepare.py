"""Time to prepare PhysioNet 2012 (all 12,000 records) from the archive, and to load the cache.

    python benchmarks/prepare.py [--data-dir ../shared/data] [--reps 3]

Prints a table and writes benchmarks/results/prepare.json. Each preparation goes into a fresh
cache folder, so nothing is reused; each cached load is a full `load_dataset` call (source
checksum + Parquet read), as a second `hymate` run would do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from hymate.data.store import data_dir, load_dataset

RESULTS = Path(__file__).parent / "results" / "prepare.json"


def time_preparation(dataset: str, root: Path, reps: int):
    """Prepare `dataset` `reps` times, each into a fresh cache (nothing reused), then load the last
    cache 2 x `reps` times (each a full `load_dataset`: hashing included). Returns (prepared data,
    cached data, prepare seconds, load seconds, cache size in MB)."""
    prepare_s, load_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            cache = Path(tmp) / f"cache{rep}"
            start = time.perf_counter()
            data = load_dataset(dataset, root, cache, progress=False)
            prepare_s.append(time.perf_counter() - start)
        for _ in range(reps * 2):
            start = time.perf_counter()
            cached = load_dataset(dataset, root, cache, progress=False)
            load_s.append(time.perf_counter() - start)
        cache_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
    return data, cached, prepare_s, load_s, cache_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = data_dir(args.data_dir)

    data, cached, prepare_s, load_s, _ = time_preparation("physionet2012", root, args.reps)
    assert cached.events.height == data.events.height

    result = {
        "stays": data.stays.height,
        "records": data.report["records_read"],
        "events": data.events.height,
        "prepare_s": round(statistics.median(prepare_s), 3),
        "load_s": round(statistics.median(load_s), 3),
        "prepare_runs_s": [round(x, 3) for x in prepare_s],
        "load_runs_s": [round(x, 3) for x in load_s],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "targets": {"prepare_s": 20.0, "load_s": 2.0},
    }
    table = Table("what", "median s", "runs s", "target s", title="PhysioNet 2012 preparation")
    table.add_row(f"prepare {result['records']:,} records from the archive", f"{result['prepare_s']:.2f}",
                  ", ".join(f"{x:.2f}" for x in prepare_s), "<= 20")  # fmt: skip
    table.add_row("load the prepared cache", f"{result['load_s']:.2f}", ", ".join(f"{x:.2f}" for x in load_s), "<= 2")
    Console().print(table)
    Console().print(f"{result['stays']:,} stays, {result['events']:,} events")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
