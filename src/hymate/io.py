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

TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())  # mkstemp's 0600 would make every kept file private
    return Path(name)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def is_leftover(path: Path) -> bool:
    """A temporary file or folder of these writers (`.<name>.<random>.tmp` / `.old`)."""
    return path.name.startswith(".") and path.name.endswith((TMP_SUFFIX, OLD_SUFFIX))


def remove_leftovers(folder: Path | str, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders a killed writer left in `folder` (of target `name`
    only, if given); returns them. Call it holding the target's lock: a live writer's temporary
    is not a leftover."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if is_leftover(p) and (name is None or p.name.startswith(f".{name}."))]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """A temporary path to write `target` through: renamed onto `target` if the block succeeds,
    removed if it fails. For writers that want a path (`save_file`, `write_parquet`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path | str, data: str | bytes) -> None:
    """Write `data` to `target` so that `target` is always either the old or the new content."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_folder(target: Path | str) -> Iterator[Path]:
    """A temporary folder to fill; it replaces `target` (and what was there) only when the block
    succeeds. Between the removal of the old folder and the rename a reader finds no folder, never
    a partial one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                _fsync(path)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=OLD_SUFFIX, dir=target.parent))
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
