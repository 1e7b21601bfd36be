"""The grid runner: every command runs, at most `jobs` at once, with its thread count; a failure
stops the grid with the run's name and stderr."""

from __future__ import annotations

import sys

import pytest

from hymate.errors import HymateError
from hymate.train.grid import GridRun, run_grid

# Each child marks itself running, waits (up to 10 s) until another child is running too, records
# what it saw and its thread setting, then unmarks itself.
CHILD = """
import os, pathlib, sys, time
folder, name = pathlib.Path(sys.argv[1]), sys.argv[2]
(folder / f"running-{name}").touch()
deadline, partner = time.time() + float(sys.argv[3]), False
while time.time() < deadline and not partner:
    partner = len(list(folder.glob("running-*"))) > 1
    time.sleep(0.05)
most = len(list(folder.glob("running-*")))
(folder / f"running-{name}").unlink()
(folder / f"done-{name}").write_text(f"{partner} {most} {os.environ.get('OMP_NUM_THREADS')} {os.environ.get('EXTRA')}")
"""


def child(tmp_path, name: str, wait_s: float = 10.0, **env) -> GridRun:
    return GridRun(name, [sys.executable, "-c", CHILD, str(tmp_path), name, str(wait_s)], env)


def test_two_jobs_run_side_by_side_never_more_with_their_threads(tmp_path):
    started, done = [], []
    runs = [child(tmp_path, f"r{i}", EXTRA=f"x{i}") for i in range(4)]
    run_grid(runs, jobs=2, threads=1, on_start=lambda r: started.append(r.label), on_done=lambda r: done.append(r.label))
    assert started == ["r0", "r1", "r2", "r3"] and sorted(done) == started
    for i in range(4):
        partner, most, threads, extra = (tmp_path / f"done-r{i}").read_text().split()
        assert int(most) <= 2 and threads == "1" and extra == f"x{i}"
    assert (tmp_path / "done-r0").read_text().startswith("True")  # r0 and r1 overlapped


def test_one_job_runs_them_one_after_another(tmp_path):
    run_grid([child(tmp_path, f"r{i}", wait_s=0.3) for i in range(2)], jobs=1)
    for i in range(2):
        assert (tmp_path / f"done-r{i}").read_text().startswith("False")


def test_a_failure_stops_the_grid_and_names_the_run(tmp_path):
    boom = GridRun("bad run", [sys.executable, "-c", "import sys; sys.stderr.write('boom: no data'); sys.exit(3)"])
    later = child(tmp_path, "later", wait_s=0.1)
    with pytest.raises(HymateError, match=r"run bad run failed \(exit 3\):\nboom: no data"):
        run_grid([boom, later], jobs=1)
    assert not (tmp_path / "done-later").exists()
    with pytest.raises(HymateError, match="jobs must be >= 1"):
        run_grid([later], jobs=0)
