"""Selective scan (Mamba-1): one public function, several backends.

Backends:
- ``"reference"``: sequential loop in plain PyTorch (any device; the correctness oracle).
- ``"cpp"``: fused C++/OpenMP CPU kernel with a hand-written backward, compiled on first use, at
  the CPU's best vector path; ``"cpp:avx2"`` / ``"cpp:generic"`` (``"cpp:avx512"``) run one path.
- ``"cuda"``: ``mamba_ssm``'s CUDA kernel, when it is importable and the tensors are on a GPU.

``backend="auto"`` (or the ``HYMATE_SCAN_BACKEND`` environment variable, which replaces "auto")
picks ``cuda`` for GPU tensors when ``mamba_ssm`` imports, ``cpp`` for CPU tensors when the
extension builds, and ``reference`` otherwise. An explicitly requested backend that cannot run
raises instead of silently falling back.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from hymate.nn import scan_cpu
from hymate.nn.scan_reference import selective_scan_reference, selective_scan_step_reference

BACKENDS = ("reference", "cpp", "cuda")
ENV_VAR = "HYMATE_SCAN_BACKEND"
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _mamba_ssm_importable() -> bool:
    return importlib.util.find_spec("mamba_ssm") is not None


def available_backends() -> list[str]:
    """Backends that can run here (``cpp``: a compiler is present or the build already worked)."""
    names = ["reference"]
    if scan_cpu.may_be_available():
        names.append("cpp")
    if torch.cuda.is_available() and _mamba_ssm_importable():
        names.append("cuda")
    return names


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run for tensors on ``device`` (explicit names are checked)."""
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if backend.startswith("cpp:"):  # one vector path of the kernel
        isa = backend.partition(":")[2]
        if device.type != "cpu":
            raise ValueError(f"scan backend {backend!r} needs CPU tensors, got device {device}")
        if isa not in scan_cpu.ISAS or isa not in scan_cpu.cpu_isas():
            raise ValueError(f"scan backend {backend!r}: this CPU runs the paths {', '.join(scan_cpu.cpu_isas())}")
        if scan_cpu.load_extension(isa) is None:
            raise RuntimeError(f"scan backend {backend!r} is unavailable: {scan_cpu.build_error(isa)}")
        return backend
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown scan backend {backend!r}; expected 'auto', one of {BACKENDS} or 'cpp:<isa>'")
    if backend == "auto":
        if device.type == "cuda":
            return "cuda" if _mamba_ssm_importable() else "reference"
        if device.type == "cpu" and scan_cpu.load_extension() is not None:
            return "cpp"
        return "reference"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"scan backend 'cpp' needs CPU tensors, got device {device}")
        if scan_cpu.load_extension() is None:
            raise RuntimeError(f"scan backend 'cpp' is unavailable: {scan_cpu.build_error()}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"scan backend 'cuda' needs CUDA tensors, got device {device}")
        if not _mamba_ssm_importable():
            raise RuntimeError("scan backend 'cuda' needs the mamba_ssm package")
    return backend


def _check_shape(name: str, t: Tensor | None, expected: tuple[int, ...], desc: str) -> None:
    if t is not None and tuple(t.shape) != expected:
        raise ValueError(f"{name} must have shape {desc} = {list(expected)}, got {list(t.shape)}")


def _check_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must have shape [batch, dim, length], got {list(u.shape)}")
    if A.dim() != 2:
        raise ValueError(f"A must have shape [dim, state], got {list(A.shape)}")
    batch, dim, length = u.shape
    state = A.shape[1]
    _check_shape("delta", delta, (batch, dim, length), "[batch, dim, length]")
    _check_shape("A", A, (dim, state), "[dim, state]")
    _check_shape("B", B, (batch, state, length), "[batch, state, length]")
    _check_shape("C", C, (batch, state, length), "[batch, state, length]")
    _check_shape("D", D, (dim,), "[dim]")
    _check_shape("z", z, (batch, dim, length), "[batch, dim, length]")
    _check_shape("delta_bias", delta_bias, (dim,), "[dim]")
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} must be a floating tensor {_FLOAT_DTYPES}, got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}")
    if A.is_complex():
        raise ValueError("A must be real (complex A is not supported)")


def selective_scan(
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
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan, semantics of ``mamba_ssm``'s ``selective_scan_ref``.

    u, delta, z: [batch, dim, length]; A: [dim, state]; B, C: [batch, state, length];
    D, delta_bias: [dim]. With ``delta = softplus(delta + delta_bias)`` (softplus optional),
    ``x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t`` and
    ``y_t = <x_t, C_t> + D * u_t``; the output is ``y * silu(z)`` when z is given, in u's dtype.
    With ``return_last_state`` also returns the final state [batch, dim, state] (float32/64).
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cpp" or name.startswith("cpp:"):
        return scan_cpu.selective_scan_cpp(*args, isa=name.partition(":")[2] or None)
    if name == "cuda":
        return _selective_scan_cuda(*args)
    return selective_scan_reference(*args)


def _selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    # The kernel wants float32 A/D/delta_bias and contiguous last dims.
    return selective_scan_fn(
        u.contiguous(),
        delta.contiguous(),
        A.float(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.float(),
        None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )


def selective_scan_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> tuple[Tensor, Tensor]:
    """One recurrent step for streaming inference; returns ``(y_t, new_state)``.

    state: [batch, dim, state] (start from zeros, float32 or float64); u, delta, z: [batch, dim];
    B, C: [batch, state]. Stepping through a sequence equals ``selective_scan`` on it.
    """
    if state.dim() != 3 or u.dim() != 2:
        raise ValueError(
            f"state must be [batch, dim, state] and u [batch, dim], got {list(state.shape)} and {list(u.shape)}"
        )
    batch, dim, n = state.shape
    _check_shape("u", u, (batch, dim), "[batch, dim]")
    _check_shape("delta", delta, (batch, dim), "[batch, dim]")
    _check_shape("A", A, (dim, n), "[dim, state]")
    _check_shape("B", B, (batch, n), "[batch, state]")
    _check_shape("C", C, (batch, n), "[batch, state]")
    _check_shape("D", D, (dim,), "[dim]")
    _check_shape("z", z, (batch, dim), "[batch, dim]")
    _check_shape("delta_bias", delta_bias, (dim,), "[dim]")
    return selective_scan_step_reference(state, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
