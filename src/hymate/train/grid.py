"""Run a grid of training commands, each in its own process, a few at a time.

Each run in its own process keeps its wall time and peak memory its own (and a crash local).
Several at once pay off on small machines: the models here are too small for torch to use two
threads well (measured on this project's 2-core machine: one HyMaTE epoch on 1,000 P12 stays
took 17.1 s alone with 2 threads, and two such runs side by side with 1 thread each took 25 s
for both: ~1.4x the work done). Each process then gets `threads` torch/OpenMP threads.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hymate.errors import HymateError


@dataclass
class GridRun:
    label: str  # for progress and errors, e.g. "mamba strats split 0 seed 3"
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment


def run_grid(
    runs: list[GridRun],
    jobs: int = 1,
    threads: int | None = None,
    on_start: Callable[[GridRun], None] | None = None,
    on_done: Callable[[GridRun], None] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Run every command, at most `jobs` at once. `threads` (default: cores // jobs when jobs > 1,
    else inherited) sets OMP_NUM_THREADS of each process. The first failure stops the grid: the
    other running processes are terminated and the error names the run and ends with its stderr."""
    if jobs < 1:
        raise HymateError(f"jobs must be >= 1, got {jobs}")
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, active = list(runs), []  # active: (process, run, stderr file)
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **run.env}
                err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child cannot block on it
                active.append((subprocess.Popen(run.cmd, stdout=subprocess.DEVNULL, stderr=err, env=env), run, err))
                if on_start:
                    on_start(run)
            time.sleep(poll_s)
            for item in [a for a in active if a[0].poll() is not None]:
                process, run, err = item
                active.remove(item)
                err.seek(0)
                message = err.read().decode(errors="replace").strip()[-2000:]
                err.close()
                if process.returncode != 0:
                    raise HymateError(f"run {run.label} failed (exit {process.returncode}):\n{message}")
                if on_done:
                    on_done(run)
    finally:
        for process, _, err in active:  # after a failure or an interrupt: leave no orphans
            process.terminate()
            process.wait()
            err.close()
