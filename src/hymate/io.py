"""Writes that never leave a half-written file, and locks so two processes never write one thing.

Every file or folder hymate keeps (the prepared-data cache, split files, run records, checkpoints,
reports) is written under a temporary name beside its target and renamed into place: a reader sees
the old version or the new one, never a torn one, even after SIGKILL. Renames are atomic only within
one file system, hence "beside". `exclusive` serialises processes on one target with a lock file
(filelock: flock on POSIX), so two `prepare` or `train` runs on one cache or run folder take turns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from hymate.errors import HymateError


def _tmp_name(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """A temporary path to write `target` through: renamed onto `target` if the block succeeds,
    removed if it fails. For writers that want a path (`save_file`, `write_parquet`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path | str, data: str | bytes) -> None:
    """Write `data` to `target` so that `target` is always either the old or the new content."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_folder(target: Path | str) -> Iterator[Path]:
    """A temporary folder to fill; it replaces `target` (and what was there) only when the block
    succeeds. Between the removal of the old folder and the rename a reader finds no folder, never
    a partial one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive(lock_file: Path | str, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold `lock_file` for the block; a second process waits (and says so) until the first is done.
    `timeout` seconds (None: wait as long as it takes) before a HymateError naming `what`."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"hymate: waiting for another hymate process using {what} (lock {lock_file})", file=sys.stderr)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise HymateError(f"another hymate process has held {what} for over {timeout:g} s (lock {lock_file})") from None
    try:
        yield
    finally:
        lock.release()
