"""The fused C++ CPU selective scan: lazy JIT build, and its autograd.Function.

The extension (``csrc/selective_scan.cpp``) is compiled with ``torch.utils.cpp_extension.load``
on first use, never at import time: ~1-2 min on 2 cores the first time (a message on stderr says
so), then loaded from the torch extensions cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) in ~0.1 s. If the build fails (no compiler, no ninja), one warning
is issued and callers fall back to the reference scan.

Large outputs (y, du, ddelta, dz, dB, dC, the backward's checkpoints; blocks >= 1 MiB) come from a
small cache of freed blocks inside the extension rather than from a fresh allocation each call:
glibc maps and unmaps blocks of >= 32 MiB on every call, and faulting their pages in again cost ~25
ms of a ~150 ms forward+backward at L=4096. Only the extension's own tensors are affected (the
process's allocator settings are left alone). The cache keeps at most ``HYMATE_SCAN_CACHE_MB`` MiB
of free blocks (default 512, read when the extension loads; ``0`` turns it off); ``clear_cache()``
frees them.

The vector path is chosen by the build, not at run time: the source is compiled with
``-march=native`` on the machine that runs it (the build is keyed on its CPU flags), and takes
AVX-512 where the CPU has it, else AVX2 + FMA, else GCC / Clang vector extensions (NEON on ARM).
A build-time choice costs nothing per call and needs no dispatch code; the one build per CPU is
what the cache key already gives. ``HYMATE_SCAN_ISA`` (``avx512``, ``avx2``, ``generic``) asks for
a lower path than the CPU's best, e.g. to compare them; one the CPU lacks is an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from hymate.nn.scan_reference import compute_dtype
from hymate.output import verbose

_SOURCE = Path(__file__).parent / "csrc" / "selective_scan.cpp"
ISA_ENV = "HYMATE_SCAN_ISA"
ISAS = ("avx512", "avx2", "generic")  # best first; the C++ source's HYMATE_SCAN_ISA_LEVEL 2, 1, 0
_ext: dict[str, ModuleType] = {}
_error: dict[str, str] = {}


@functools.cache  # asked on every scan call: read the file once
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def cpu_isas() -> tuple[str, ...]:
    """The vector paths this CPU can run, best first (``generic`` always)."""
    flags = _cpu_flags()
    have = {"avx512": "avx512f" in flags, "avx2": {"avx2", "fma"} <= flags, "generic": True}
    return tuple(isa for isa in ISAS if have[isa])


def requested_isa(isa: str | None = None) -> str:
    """The path to build: `isa`, else ``HYMATE_SCAN_ISA``, else the CPU's best."""
    from hymate.errors import HymateError

    wanted = isa or os.environ.get(ISA_ENV) or cpu_isas()[0]
    if wanted not in ISAS:
        raise HymateError(f"scan ISA {wanted!r}: choose one of {', '.join(ISAS)}")
    if wanted not in cpu_isas():
        raise HymateError(f"scan ISA {wanted!r}: this CPU cannot run it (it can run {', '.join(cpu_isas())})")
    return wanted


def _cpu_tag() -> str:
    """Short hash of the CPU's feature flags: ``-march=native`` builds must not be shared
    through one cache directory between different CPUs."""
    return hashlib.sha1(" ".join(sorted(_cpu_flags())).encode()).hexdigest()[:8]


def build_flags(isa: str) -> list[str]:
    # -ffp-contract=fast: a * b + c becomes one FMA (GCC's ISO modes, like torch's -std=c++20,
    # leave it off); it is what the intrinsics paths do by hand, and the generic path needs it.
    # A lower path on x86 also turns the higher instruction sets off, so that its auto-vectorised
    # code is what a CPU without them runs (the avx2 build of an AVX-512 host is an AVX2 build).
    level = len(ISAS) - 1 - ISAS.index(isa)
    lower = []
    if platform.machine().lower() in ("x86_64", "amd64") and isa != cpu_isas()[0]:
        lower = ["-mno-avx512f"] if isa == "avx2" else ["-mno-avx512f", "-mno-avx2", "-mno-fma"]
    return ["-O3", "-march=native", *lower, "-fopenmp", "-ffp-contract=fast", "-Wno-psabi",
            f"-DHYMATE_SCAN_ISA_LEVEL={level}"]  # fmt: skip


def _toolchain_tag() -> str:
    """What else the build depends on: torch (version and headers' location) and Python. torch's
    build command holds the environment's include paths, and ninja rebuilds whenever the command
    changes, so two environments sharing one build folder would rebuild and overwrite each other's
    library; one build per environment (any checkout in it shares it) avoids that."""
    import sysconfig

    parts = (torch.__version__, str(Path(torch.__file__).parent), sysconfig.get_paths()["include"], sys.version)
    return "|".join(parts)


def build_name(code: bytes, isa: str | None = None) -> str:
    """The build's name: vector path, CPU features, the source's content, the flags and the
    toolchain, never the checkout's path, so every checkout using one environment shares one build,
    and a changed source gets a new one instead of overwriting a library other processes have
    loaded."""
    isa = isa or requested_isa()
    key = code + " ".join(build_flags(isa)).encode() + _toolchain_tag().encode()
    return f"hymate_selective_scan_{isa}_{_cpu_tag()}_{hashlib.sha1(key).hexdigest()[:10]}"


def _staged_source(isa: str) -> tuple[str, Path]:
    """Copy the source into its build folder (content-addressed), so the build never depends on
    where this checkout lives (ninja rebuilds when a source path changes)."""
    from torch.utils.cpp_extension import _get_build_directory

    code = _SOURCE.read_bytes()
    name = build_name(code, isa)
    folder = Path(_get_build_directory(name, verbose=False))
    staged = folder / _SOURCE.name
    if not staged.exists() or staged.read_bytes() != code:
        partial = staged.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(code)
        partial.replace(staged)  # atomic: concurrent first builds see a whole file
    return name, staged


def load_extension(isa: str | None = None) -> ModuleType | None:
    """The compiled extension for `isa` (default: see `requested_isa`), building it on the first
    call; None if the build failed."""
    isa = requested_isa(isa)
    if isa in _ext or isa in _error:
        return _ext.get(isa)
    try:
        from torch.utils.cpp_extension import load

        name, source = _staged_source(isa)
        built = any(source.parent.glob(f"{name}*.so"))
        if not built:  # a silent minute on the first call looks like a hang
            print(f"hymate: building the CPU scan kernel ({isa} path; once per machine and environment, "
                  "~1-2 min)...", file=sys.stderr, flush=True)  # fmt: skip
            started = time.perf_counter()
        _ext[isa] = load(
            name=name,
            sources=[str(source)],
            extra_cflags=build_flags(isa),
            extra_ldflags=["-fopenmp"],
            build_directory=str(source.parent),
            verbose=verbose(),  # --verbose: torch's build log (the compiler's commands and output)
        )
        if not built:
            print(f"hymate: CPU scan kernel built in {time.perf_counter() - started:.0f} s ({source.parent})",
                  file=sys.stderr, flush=True)  # fmt: skip
    except Exception as exc:  # any build or load failure means: use the fallback
        last_line = (str(exc).strip().splitlines() or [""])[-1]  # build logs can be long
        _error[isa] = f"{type(exc).__name__}: {last_line}"
        warnings.warn(
            f"hymate: the C++ selective scan could not be built ({_error[isa]}); using the pure-PyTorch scan, "
            "many times slower on long sequences (benchmarks/results/scan_*.json have the figures)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _ext.get(isa)


def isa() -> str | None:
    """The vector path of the loaded default build (None if not loaded)."""
    ext = _ext.get(requested_isa())
    return ext.isa() if ext is not None else None


def clear_cache() -> None:
    """Free the extensions' cached output buffers (no-op if none is loaded)."""
    for ext in _ext.values():
        ext.clear_cache()


def cache_info() -> tuple[int, int]:
    """(bytes of free blocks held, capacity in bytes) of the default build's output-buffer
    cache; (0, 0) if it is not loaded."""
    ext = _ext.get(requested_isa())
    return tuple(ext.cache_info()) if ext is not None else (0, 0)


def build_error(isa: str | None = None) -> str | None:
    return _error.get(requested_isa(isa))


def may_be_available() -> bool:
    """True if the extension is loaded, or not yet tried and a compiler and ninja exist."""
    isa = requested_isa()
    if isa in _ext:
        return True
    if isa in _error:
        return False
    from torch.utils.cpp_extension import is_ninja_available

    return shutil.which("c++") is not None and is_ninja_available()


class _SelectiveScanCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, isa):  # noqa: N803
        ext = load_extension(isa)
        ctx.isa = isa
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
        du, ddelta, dA, dB, dC, dD, dz, dbias = load_extension(ctx.isa).backward(
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
    isa: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as ``selective_scan_reference``; half precision is computed in float32.
    The final state is returned without gradient. `isa`: the vector path (default: the CPU's
    best, or ``HYMATE_SCAN_ISA``)."""
    ct = compute_dtype(u.dtype)
    cast = [None if t is None else t.to(ct) for t in (u, delta, A, B, C, D, z, delta_bias)]
    out, last_state = _SelectiveScanCpp.apply(*cast, delta_softplus, requested_isa(isa))
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (the platform's processor string else)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(isa: str | None = None) -> dict[str, object]:
    """What a figure was measured on: ``{"cpu", "cores", "isa"}`` (the scan's vector path: the
    loaded build's own answer where it is loaded)."""
    isa = requested_isa(isa)
    ext = _ext.get(isa)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "isa": ext.isa() if ext is not None else isa}


def kernel_status(isa: str | None = None) -> dict[str, object]:
    """Where the kernel's build for `isa` lives and whether it is built, without building it."""
    from torch.utils.cpp_extension import _get_build_directory

    isa = requested_isa(isa)
    name = build_name(_SOURCE.read_bytes(), isa)
    try:
        folder = Path(_get_build_directory(name, verbose=False))  # (torch creates the folder)
    except OSError as exc:
        return {"isa": isa, "name": name, "folder": f"unavailable: {exc}", "built": False, "loaded": isa in _ext,
                "error": _error.get(isa), "compiler": may_be_available()}  # fmt: skip
    return {"isa": isa, "name": name, "folder": str(folder), "built": any(folder.glob(f"{name}*.so")),
            "loaded": isa in _ext, "error": _error.get(isa), "compiler": may_be_available()}  # fmt: skip
