"""Uniform access to a dataset's raw files, whether they sit in a folder or in tar archives.

PhysioNet ships its challenges as folders of small text files, packed in different ways
(one archive of everything, one archive per set, or extracted). A `Source` hides that: it
lists the relative paths of every file and reads them in one pass, so readers never care.

It reads only what a data folder should hold: regular files (a FIFO would block forever, a
device never ends), symbolic links only when they resolve inside the data folder (a link to
another file of the machine would leak its content into error messages), and no file or archive
member larger than MAX_FILE_BYTES (a stay's file is kilobytes; the whole P19 archive is 42 MB of
members). Anything else is a `DataError` naming the path. Bytes become text per file with
`decode_text`: UTF-8, a byte-order mark stripped, a clear problem naming the byte otherwise.
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
MAX_FILE_BYTES = 64 * 2**20  # per file or archive member (archives themselves are streamed)
_BOM = b"\xef\xbb\xbf"


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) for UTF-8 bytes (a leading BOM dropped, CRLF turned into LF), else
    (None, problem) with the byte offset and value of the first byte that is not UTF-8."""
    try:
        text = data.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(_BOM) if data.startswith(_BOM) else 0)
        return None, f"not UTF-8 text: byte {offset} is 0x{data[offset]:02x} (save the file as UTF-8)"
    return text.replace("\r\n", "\n"), None


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
        return [p for p in self._files() if is_archive(p)]

    def _files(self) -> list[Path]:
        """Every regular file under a root folder, sorted; links only within the folder."""
        return sorted(_walk_files(self.root)) if self.root.is_dir() else []

    def fingerprint(self, wanted=None) -> str:
        """sha256 over the input files' bytes (archives hashed whole, streamed), in a stable order;
        with `wanted`, only the loose files a reader would read (a README beside them does not
        change the key). Used as the cache key, so a changed input is never served stale."""
        h = hashlib.sha256()
        for archive in self._containers():
            with open(archive, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").digest()
            h.update(archive.name.encode())
            h.update(digest)
        for path in self._files():
            rel = path.relative_to(self.root).as_posix()
            if not is_archive(path) and (wanted is None or wanted(rel)):
                h.update(rel.encode())
                h.update(hashlib.sha256(_read_regular(path)).digest())
        return h.hexdigest()

    # --- reading -----------------------------------------------------------------------
    def iter_files(self, wanted) -> Iterator[tuple[str, bytes]]:
        """Yield (relative path, bytes) for every file whose path satisfies `wanted(path)`.

        Paths use '/' separators and keep the archive's inner folders (e.g.
        'physionet-challenge-2012/set-a/132539.txt'), so a reader matches on the tail.
        """
        for archive in self._containers():
            yield from _iter_archive(archive, wanted)
        for path in self._files():
            rel = path.relative_to(self.root).as_posix()
            if not is_archive(path) and wanted(rel):
                yield rel, _read_regular(path)


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files under `root`. A link is followed only if its target lies inside `root`;
    anything that is not a regular file (FIFO, socket, device, a link out) is refused by name."""
    inside = root.resolve()
    for dirpath, _dirnames, filenames in os.walk(root):  # os.walk does not descend into linked folders
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(inside):
                    raise DataError(f"{path} is a link to {_shown(target)}, outside the data folder {root}; "
                                    "copy the file into the folder instead")  # fmt: skip
            if not path.exists():
                raise DataError(f"{path} is a broken link")
            if not path.is_file():
                raise DataError(f"{path} is not a regular file (a FIFO, socket or device); remove it from the data folder")
            yield path


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _shown(path: Path) -> str:
    return str(path) if len(str(path)) < 120 else str(path)[:117] + "..."


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file, refusing one over the size cap before reading it (archives
    are streamed: their cap applies per member)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES and not is_archive(path):
        raise DataError(f"{path} is {_size(size)}, over the {_size(MAX_FILE_BYTES)} a data file may have "
                        "(a stay's file is kilobytes); is it the right folder?")  # fmt: skip
    return path.read_bytes()


def _iter_archive(archive: Path, wanted) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    if member.size > MAX_FILE_BYTES:
                        raise DataError(f"{archive}: member {member.name} is {_size(member.size)}, over the "
                                        f"{_size(MAX_FILE_BYTES)} a data file may have")  # fmt: skip
                    handle = tar.extractfile(member)
                    if handle is None:  # pragma: no cover - isfile() members always extract
                        continue
                    yield member.name, handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"archive {archive} is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Download it again, or point the data location at an extracted folder."
        ) from None


def read_json_object(path: Path) -> dict:
    """A JSON object from a settings file beside the data (hymate.json, hymate-table.json)."""
    import json

    try:
        value = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def content_hash(files: list[Path]) -> str:
    """sha256 over the files' contents, streamed, in the given order (taken once, at preparation)."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()
