"""Atomic writes and the file lock: a failed writer leaves the old content, a second process waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hymate
from hymate.errors import HymateError
from hymate.io import atomic_folder, atomic_path, exclusive, remove_leftovers, write_atomic

SRC = str(Path(hymate.__file__).resolve().parents[1])


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_kept_files_and_folders_follow_the_umask_not_mkstemps_0600(tmp_path):
    write_atomic(tmp_path / "a.txt", "x")
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "b.txt").write_text("y")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o777 & ~mask


def test_atomic_folder_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "prepared"
    with atomic_folder(target) as tmp:
        (tmp / "old.txt").write_text("1")
        assert not target.exists()  # nothing to see until the block succeeds
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]  # replaced, not merged
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "partial.txt").write_text("3")
            raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".prepared.abc123.tmp").mkdir()
    (tmp_path / ".prepared.abc123.tmp" / "events.parquet").write_text("partial")
    (tmp_path / ".prepared.def456.old").mkdir()
    (tmp_path / ".run.json.xyz.tmp").write_text("{")
    (tmp_path / "prepared").mkdir()
    assert {p.name for p in remove_leftovers(tmp_path, "prepared")} == {".prepared.abc123.tmp", ".prepared.def456.old"}
    assert {p.name for p in tmp_path.iterdir()} == {".run.json.xyz.tmp", "prepared"}
    remove_leftovers(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"prepared"}


HOLDER = """
import sys, time
from pathlib import Path
from hymate.io import exclusive
with exclusive(sys.argv[1], "the test cache"):
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2]).write_text("released")
"""


def _hold(tmp_path: Path, seconds: float) -> tuple[subprocess.Popen, Path]:
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "locks" / "x.lock"), str(state), str(seconds)],
                              env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    deadline = time.monotonic() + 30
    while not state.exists():
        assert time.monotonic() < deadline and holder.poll() is None, "the lock holder did not start"
        time.sleep(0.05)
    return holder, state


def test_a_second_process_waits_for_the_lock_and_says_so(tmp_path, capsys):
    holder, state = _hold(tmp_path, 1.5)
    with exclusive(tmp_path / "locks" / "x.lock", "the test cache"):
        assert state.read_text() == "released"  # entered only after the holder was done
    assert holder.wait(30) == 0
    err = capsys.readouterr().err
    assert "waiting for another hymate process using the test cache" in err


def test_a_lock_held_too_long_is_a_clear_error(tmp_path):
    holder, _ = _hold(tmp_path, 5)
    try:
        with pytest.raises(HymateError, match="another hymate process has held the test cache"):
            with exclusive(tmp_path / "locks" / "x.lock", "the test cache", timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path / "locks" / "x.lock", "the test cache", timeout=5):  # a killed holder frees it
        pass
