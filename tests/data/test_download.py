"""Downloading from a PhysioNet-shaped mirror on loopback: checksums verified, bad files refused."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading

import pytest

from hymate.data.download import PHYSIONET2012_FILES, download_physionet2012
from hymate.data.store import load_dataset
from hymate.errors import DataError
from tests.conftest import write_p12


@pytest.fixture
def mirror(tmp_path):
    """Official file names (set-x.tar.gz, Outcomes-x.txt, SHA256SUMS.txt) served on 127.0.0.1."""
    tree, site = tmp_path / "tree", tmp_path / "site"
    write_p12(tree)
    site.mkdir()
    for s in "abc":
        with tarfile.open(site / f"set-{s}.tar.gz", "w:gz") as tar:
            tar.add(tree / f"set-{s}", arcname=f"set-{s}")
        (site / f"Outcomes-{s}.txt").write_bytes((tree / f"Outcomes-{s}.txt").read_bytes())
    sums = "".join(f"{hashlib.sha256((site / n).read_bytes()).hexdigest()}  {n}\n" for n in PHYSIONET2012_FILES)
    (site / "SHA256SUMS.txt").write_text(sums)
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_verifies_and_the_files_load(mirror, tmp_path):
    site, url = mirror
    dest = download_physionet2012(tmp_path / "raw" / "physionet2012", base_url=url, pinned={}, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(PHYSIONET2012_FILES)
    data = load_dataset("physionet2012", tmp_path / "raw", tmp_path / "cache", progress=False)
    assert data.stays.height == 18 and data.report["outcomes_per_set"]["c"]["records"] == 6


def test_a_corrupted_download_is_refused_and_removed(mirror, tmp_path):
    site, url = mirror
    (site / "set-b.tar.gz").write_bytes(b"tampered")
    with pytest.raises(DataError, match="checksum mismatch for .*set-b.tar.gz"):
        download_physionet2012(tmp_path / "dl", base_url=url, pinned={}, progress=False)
    assert not (tmp_path / "dl" / "set-b.tar.gz").exists()
    assert not list((tmp_path / "dl").glob("*.part"))


def test_pinned_checksum_disagreement_is_refused(mirror, tmp_path):
    _, url = mirror
    with pytest.raises(DataError, match="differs from the pinned"):
        download_physionet2012(tmp_path / "dl", base_url=url, pinned={"Outcomes-a.txt": "0" * 64}, progress=False)


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        download_physionet2012(tmp_path / "dl", base_url="http://127.0.0.1:9/", progress=False, timeout=2)
