"""Run hymate with the scan kernel's C++ source as it was at an earlier git revision.

    python benchmarks/kernel_at.py REV train physionet2012 ...   (the hymate CLI, old kernel)

For before/after figures in one run on one machine (`scan.py`'s ``cpp@REV`` backends, `cpu.py
--before REV`): everything but the kernel source is today's code, so the difference between two
rows is the kernel's alone. The old source is built by today's `scan_cpu` with today's flags for
the requested path (``HYMATE_SCAN_ISA``); a source older than the AVX2 path ignores the path's
level macro but not its flags, so ``avx2@REV`` on an AVX-512 host is what an AVX2 CPU built
then (its generic loops). Sources older than ``isa()`` in the binding get a stand-in for it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = "src/hymate/nn/csrc/selective_scan.cpp"


def source_at(rev: str) -> Path:
    """The kernel source at `rev`, written to a temporary folder named by the revision."""
    code = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{SOURCE}"], check=True, capture_output=True).stdout
    folder = Path(tempfile.gettempdir()) / f"hymate-kernel-{rev}"
    folder.mkdir(exist_ok=True)
    path = folder / Path(SOURCE).name
    if not path.exists() or path.read_bytes() != code:
        path.write_bytes(code)
    return path


def use_kernel_at(rev: str) -> None:
    """Make this process's scan kernel the one at `rev` (before the first scan call)."""
    from hymate.nn import scan_cpu

    scan_cpu._SOURCE = source_at(rev)
    load = scan_cpu.load_extension

    def load_with_isa(isa=None):
        ext = load(isa)
        if ext is not None and not hasattr(ext, "isa"):
            ext.isa = lambda: f"{scan_cpu.requested_isa(isa)}@{rev}"
        return ext

    scan_cpu.load_extension = load_with_isa


if __name__ == "__main__":
    from hymate.cli import app  # first: it sets the OpenMP spin count before torch loads

    use_kernel_at(sys.argv[1])

    sys.argv = ["hymate", *sys.argv[2:]]
    app()
