"""Sequential selective scan in plain PyTorch: the correctness oracle and the no-compiler fallback.

Same semantics as `mamba_ssm`'s `selective_scan_ref` (Mamba-1, variable B/C). Autograd does the
backward. The loop iterates over `.unbind()` views: indexing `x[:, t]` instead makes the backward
O(L^2), because every `select` backward materialises a full-size zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are computed in float32; float32/float64 keep their precision."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def effective_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[..., None]
    return F.softplus(delta) if delta_softplus else delta


def selective_scan_reference(
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
    dtype_in = u.dtype
    ct = compute_dtype(dtype_in)
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    delta = effective_delta(delta, delta_bias, delta_softplus)

    # Time-major [l, b, d, n] so that each step reads contiguous slices: a [b, d, l, n] layout
    # makes every step gather b*d scattered rows (several times slower at L=4096).
    delta_t = delta.permute(2, 0, 1).contiguous()  # [l, b, d]
    deltaA = torch.exp(delta_t.unsqueeze(-1) * A)
    deltaB_u = (delta_t * u.permute(2, 0, 1)).unsqueeze(-1) * B.permute(2, 0, 1).unsqueeze(2)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    steps = zip(deltaA.unbind(0), deltaB_u.unbind(0), C.permute(2, 0, 1).unbind(0), strict=True)
    for dA_t, dBu_t, C_t in steps:
        state = dA_t * state + dBu_t
        ys.append(torch.einsum("bdn,bn->bd", state, C_t))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(ct)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, state) if return_last_state else y


def selective_scan_step_reference(
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
    """One time step: u, delta, z [batch, dim]; B, C [batch, state]; state [batch, dim, state]."""
    dtype_in = u.dtype
    ct = state.dtype
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    delta = effective_delta(delta[..., None], delta_bias, delta_softplus)  # [b, d, 1]
    state = torch.exp(delta * A) * state + (delta * u[..., None]) * B[:, None, :]
    y = torch.einsum("bdn,bn->bd", state, C)
    if D is not None:
        y = y + D.to(ct) * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(dtype_in), state
