"""Fetch the official PhysioNet files into a local folder, verifying every checksum.

PhysioNet publishes a ``SHA256SUMS.txt`` beside each project's files; every download is checked
against it, and the small outcome files are also checked against checksums pinned here, so a
changed or truncated file is never used.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from hymate.errors import DataError

PHYSIONET2012_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
PHYSIONET2012_FILES = (
    "set-a.tar.gz", "set-b.tar.gz", "set-c.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt", "Outcomes-c.txt",
)  # fmt: skip
# sha256 of the official v1.0.0 outcome files (they are small and never change).
PHYSIONET2012_PINNED = {
    "Outcomes-a.txt": "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
    "Outcomes-b.txt": "1305f29734da374a809483229a99f33a9230aa8d4fa74b1a2d6ad788136423d5",
    "Outcomes-c.txt": "0b32dcb7753c0f18f2f5fde498a28618b8879c5e527ce0dae8ad120dd7e205c9",
}
_CHUNK = 1 << 20


def download_physionet2012(
    dest: Path,
    base_url: str = PHYSIONET2012_URL,
    pinned: dict[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the PhysioNet 2012 files into `dest` (skipping files already verified there)."""
    pinned = PHYSIONET2012_PINNED if pinned is None else pinned
    dest.mkdir(parents=True, exist_ok=True)
    sums = parse_sha256sums(_fetch(base_url + "SHA256SUMS.txt", timeout).decode("utf-8", "replace"))
    for name in PHYSIONET2012_FILES:
        expected = sums.get(name)
        if expected is None:
            raise DataError(f"{base_url}SHA256SUMS.txt lists no checksum for {name}; refusing an unverified file")
        if name in pinned and pinned[name] != expected:
            raise DataError(f"{name}: PhysioNet's checksum {expected} differs from the pinned {pinned[name]}")
        target = dest / name
        if target.exists() and sha256_file(target) == expected:
            continue
        _download_file(base_url + name, target, expected, progress, timeout)
    return dest


def parse_sha256sums(text: str) -> dict[str, str]:
    """Parse `sha256sum` output ('<hex>  <path>' per line) into {file name: hex}."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").split("/")[-1]] = parts[0].lower()
    return sums


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(f"could not download {url}: {exc}. Check the network, or provide the files by hand.") from None


def _download_file(url: str, target: Path, expected: str, progress: bool, timeout: float) -> None:
    partial = target.with_name(target.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (TextColumn(target.name), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, disable=not progress, transient=True) as bar:
                task = bar.add_task("download", total=total)
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    bar.advance(task, len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {exc}") from None
    if h.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {expected}; the file was discarded")
    partial.replace(target)
