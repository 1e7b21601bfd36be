"""Uniform access to a dataset's raw files, whether they sit in a folder or in tar archives.

PhysioNet ships its challenges as folders of small text files, packed in different ways
(one archive of everything, one archive per set, or extracted). A `Source` hides that: it
lists the relative paths of every file and reads them in one pass, so readers never care.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hymate.errors import DataError, DataNotFoundError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Source:
    """A folder or an archive, plus (for folders) archives found inside it."""

    root: Path

    def __post_init__(self) -> None:
        if not self.root.exists():
            raise DataNotFoundError(f"data location does not exist: {self.root}")

    # --- listing -----------------------------------------------------------------------
    def _containers(self) -> list[Path]:
        """The archives to read: the root itself, or archives directly inside a root folder."""
        if self.root.is_file():
            if not is_archive(self.root):
                raise DataError(f"{self.root} is a file but not a .tar.gz/.tgz/.tar archive")
            return [self.root]
        return sorted(p for p in self.root.iterdir() if is_archive(p))

    def fingerprint(self) -> str:
        """sha256 over every input file's bytes (archives hashed whole), in a stable order.

        Used as the cache key, so a changed input is never served from a stale cache.
        """
        h = hashlib.sha256()
        for name, data in self._raw_blobs_for_hash():
            h.update(name.encode())
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    def _raw_blobs_for_hash(self) -> Iterator[tuple[str, bytes]]:
        for archive in self._containers():
            yield archive.name, archive.read_bytes()
        if self.root.is_dir():
            for path in sorted(_walk_files(self.root)):
                if not is_archive(path):
                    yield str(path.relative_to(self.root)), path.read_bytes()

    # --- reading -----------------------------------------------------------------------
    def iter_files(self, wanted) -> Iterator[tuple[str, bytes]]:
        """Yield (relative path, bytes) for every file whose path satisfies `wanted(path)`.

        Paths use '/' separators and keep the archive's inner folders (e.g.
        'physionet-challenge-2012/set-a/132539.txt'), so a reader matches on the tail.
        """
        for archive in self._containers():
            yield from _iter_archive(archive, wanted)
        if self.root.is_dir():
            for path in sorted(_walk_files(self.root)):
                rel = path.relative_to(self.root).as_posix()
                if not is_archive(path) and wanted(rel):
                    yield rel, path.read_bytes()


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            yield Path(dirpath) / name


def _iter_archive(archive: Path, wanted) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    handle = tar.extractfile(member)
                    if handle is None:  # pragma: no cover - isfile() members always extract
                        continue
                    yield member.name, handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"archive {archive} is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Download it again, or point the data location at an extracted folder."
        ) from None
