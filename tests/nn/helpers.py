"""Random inputs for the scan tests and the error measure they use."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error ||actual - expected|| / ||expected||, computed in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def random_scan_inputs(
    batch: int,
    dim: int,
    length: int,
    nstate: int,
    *,
    dtype: torch.dtype = torch.float32,
    with_d: bool = True,
    with_z: bool = True,
    with_bias: bool = True,
    positive_delta: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Inputs in the range a Mamba layer produces: A < 0, delta around softplus's knee, or
    positive (``positive_delta``, for scans without softplus, which grow without bound else)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    delta = 0.5 * randn(batch, dim, length)
    return {
        "u": randn(batch, dim, length),
        "delta": delta.abs() if positive_delta else delta,
        "A": -(torch.rand(dim, nstate, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype),
        "B": randn(batch, nstate, length),
        "C": randn(batch, nstate, length),
        "D": randn(dim) if with_d else None,
        "z": randn(batch, dim, length) if with_z else None,
        "delta_bias": 0.3 * randn(dim) if with_bias else None,
    }
