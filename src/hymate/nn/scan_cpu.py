"""The fused C++ CPU selective scan: lazy JIT build, and its autograd.Function.

The extension (``csrc/selective_scan.cpp``) is compiled with ``torch.utils.cpp_extension.load``
on first use, never at import time: ~30 s the first time, then loaded from the torch extensions
cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) in ~0.1 s. If the build
fails (no compiler, no ninja), one warning is issued and callers fall back to the reference scan.

Large outputs (y, du, ddelta, dz, dB, dC, the backward's checkpoints; blocks >= 1 MiB) come from a
small cache of freed blocks inside the extension rather than from a fresh allocation each call:
glibc maps and unmaps blocks of >= 32 MiB on every call, and faulting their pages in again cost ~25
ms of a ~150 ms forward+backward at L=4096. Only the extension's own tensors are affected (the
process's allocator settings are left alone). The cache keeps at most ``HYMATE_SCAN_CACHE_MB`` MiB
of free blocks (default 512, read when the extension loads; ``0`` turns it off); ``clear_cache()``
frees them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from hymate.nn.scan_reference import compute_dtype

_SOURCE = Path(__file__).parent / "csrc" / "selective_scan.cpp"
_ext: ModuleType | None = None
_error: str | None = None


def _cpu_tag() -> str:
    """Short hash of the CPU's feature flags: ``-march=native`` builds must not be shared
    through one cache directory between different CPUs."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def build_name(code: bytes) -> str:
    """The build's name: CPU features and the source's content, never its path, so every
    checkout or virtual environment with the same source shares one build, and a changed source
    gets a new one instead of overwriting a library other processes have loaded."""
    return f"hymate_selective_scan_{_cpu_tag()}_{hashlib.sha1(code).hexdigest()[:10]}"


def _staged_source() -> tuple[str, Path]:
    """Copy the source into its build folder (content-addressed), so the build never depends on
    where this checkout lives (ninja rebuilds when a source path changes)."""
    from torch.utils.cpp_extension import _get_build_directory

    code = _SOURCE.read_bytes()
    name = build_name(code)
    folder = Path(_get_build_directory(name, verbose=False))
    staged = folder / _SOURCE.name
    if not staged.exists() or staged.read_bytes() != code:
        partial = staged.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(code)
        partial.replace(staged)  # atomic: concurrent first builds see a whole file
    return name, staged


def load_extension() -> ModuleType | None:
    """The compiled extension, building it on the first call; None if the build failed."""
    global _ext, _error
    if _ext is not None or _error is not None:
        return _ext
    try:
        from torch.utils.cpp_extension import load

        name, source = _staged_source()
        _ext = load(
            name=name,
            sources=[str(source)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(source.parent),
        )
    except Exception as exc:  # any build or load failure means: use the fallback
        last_line = (str(exc).strip().splitlines() or [""])[-1]  # build logs can be long
        _error = f"{type(exc).__name__}: {last_line}"
        warnings.warn(
            f"hymate: the C++ selective scan could not be built ({_error}); using the slower pure-PyTorch scan",
            RuntimeWarning,
            stacklevel=3,
        )
    return _ext


def clear_cache() -> None:
    """Free the extension's cached output buffers (no-op if it is not loaded)."""
    if _ext is not None:
        _ext.clear_cache()


def cache_info() -> tuple[int, int]:
    """(bytes of free blocks held, capacity in bytes) of the output-buffer cache; (0, 0) if the
    extension is not loaded."""
    return tuple(_ext.cache_info()) if _ext is not None else (0, 0)


def build_error() -> str | None:
    return _error


def may_be_available() -> bool:
    """True if the extension is loaded, or not yet tried and a compiler and ninja exist."""
    if _ext is not None:
        return True
    if _error is not None:
        return False
    from torch.utils.cpp_extension import is_ninja_available

    return shutil.which("c++") is not None and is_ninja_available()


class _SelectiveScanCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):  # noqa: N803
        ext = load_extension()
        needs_grad = any(ctx.needs_input_grad[:8])
        out, last_state, checkpoints = ext.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, needs_grad)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints)
        ctx.delta_softplus = delta_softplus
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, grad_out, _grad_last_state):
        u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dz, dbias = load_extension().backward(
            u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, checkpoints, grad_out
        )
        return (
            du,
            ddelta,
            dA,
            dB,
            dC,
            None if D is None else dD,
            None if z is None else dz,
            None if delta_bias is None else dbias,
            None,
        )


def selective_scan_cpp(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as ``selective_scan_reference``; half precision is computed in float32.
    The final state is returned without gradient."""
    ct = compute_dtype(u.dtype)
    cast = [None if t is None else t.to(ct) for t in (u, delta, A, B, C, D, z, delta_bias)]
    out, last_state = _SelectiveScanCpp.apply(*cast, delta_softplus)
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out
