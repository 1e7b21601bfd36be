"""The Mamba block (Gu & Dao, 2023): pre-norm selective state-space sequence mixer.

    x -> RMSNorm -> in_proj -> (xs, z)
    xs -> causal depthwise conv -> SiLU -> x_proj -> (dt, B, C); dt -> dt_proj
    y = selective_scan(xs, dt, A, B, C, D, z=z, delta_bias, softplus)   (y * silu(z) inside)
    out = out_proj(y), plus x when ``residual`` (default) -> x + Mamba(RMSNorm(x))

Inputs and outputs are [batch, length, d_model]. Padded positions (``mask`` / ``lengths``) are
zeroed in the output and cannot influence valid positions: their inputs are zeroed before the
causal conv, and their time steps get delta = 0, so the state passes through them unchanged
(this holds for left or interior padding too, not only right padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hymate.nn.scan import selective_scan, selective_scan_step


@dataclass
class MambaConfig:
    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"  # "auto" -> ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    bias: bool = False  # in_proj / out_proj
    conv_bias: bool = True
    scan_backend: str = "auto"  # see hymate.nn.scan
    residual: bool = True  # return x + mixer(norm(x)); False returns mixer(norm(x)) only

    def __post_init__(self) -> None:
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        # Normalises each position over features only, never over time: padding cannot leak.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


@dataclass
class MambaState:
    """Streaming state of one block: the last d_conv - 1 conv inputs and the SSM state."""

    conv: Tensor  # [batch, d_inner, d_conv - 1]
    ssm: Tensor  # [batch, d_inner, d_state], float32 (float64 for a float64 block)


def valid_mask(x: Tensor, mask: Tensor | None, lengths: Tensor | None) -> Tensor | None:
    """[batch, length] bool (True = real event) from ``mask`` or right-padding ``lengths``."""
    batch, length = x.shape[:2]
    if mask is not None and lengths is not None:
        raise ValueError("pass either mask or lengths, not both")
    if lengths is not None:
        if tuple(lengths.shape) != (batch,):
            raise ValueError(f"lengths must have shape [batch] = [{batch}], got {list(lengths.shape)}")
        return torch.arange(length, device=x.device) < lengths.to(x.device)[:, None]
    if mask is not None and tuple(mask.shape) != (batch, length):
        raise ValueError(f"mask must have shape [batch, length] = [{batch}, {length}], got {list(mask.shape)}")
    return None if mask is None else mask.to(device=x.device, dtype=torch.bool)


class MambaBlock(nn.Module):
    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = c = config
        d_inner, rank, n = c.d_inner, c.dt_rank, c.d_state
        self.norm = RMSNorm(c.d_model)
        self.in_proj = nn.Linear(c.d_model, 2 * d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, c.d_conv, groups=d_inner, padding=c.d_conv - 1, bias=c.conv_bias)
        self.x_proj = nn.Linear(d_inner, rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, c.d_model, bias=c.bias)

        # S4D-real init: A[:, n] = -(n + 1) for every channel, stored as log for positivity.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True  # as in the reference: decaying these hurts
        self.D._no_weight_decay = True

        # dt starts log-uniform in [dt_min, dt_max]; the bias is its inverse softplus so that
        # softplus(dt_proj(.) + bias) starts there. The weight keeps the projection's scale O(1).
        nn.init.uniform_(self.dt_proj.weight, -(rank**-0.5), rank**-0.5)
        log_dt = torch.rand(d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)
        dt = torch.exp(log_dt).clamp(min=c.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _ssm_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """A, D and the dt bias in the scan's compute precision (float32, or float64)."""

        def upcast(t: Tensor) -> Tensor:
            return t if t.dtype == torch.float64 else t.float()

        return -torch.exp(upcast(self.A_log)), upcast(self.D), upcast(self.dt_proj.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        """x: [batch, length, d_model]; mask: [batch, length] bool (True = valid) or
        lengths: [batch] for right padding. Returns [batch, length, d_model]."""
        c = self.config
        batch, length, _ = x.shape
        valid = valid_mask(x, mask, lengths)
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # [b, l, d_inner] each
        if valid is not None:
            xs = xs * valid[..., None]
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., :length])  # [b, d_inner, l], causal
        dt, B, C = self.x_proj(xs.transpose(1, 2)).split([c.dt_rank, c.d_state, c.d_state], -1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias is added inside the scan (delta_bias)
        if valid is not None:
            # softplus(-inf) = 0: a padded step leaves the state untouched.
            dt = dt.masked_fill(~valid[..., None], float("-inf"))
        A, D, dt_bias = self._ssm_params()
        # Transposed views, no copies: the CPU kernel reads any strides.
        y = selective_scan(
            xs, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
            z=z.transpose(1, 2), delta_bias=dt_bias, delta_softplus=True, backend=c.scan_backend,
        )  # fmt: skip
        out = self.out_proj(y.transpose(1, 2))
        if valid is not None:
            out = out * valid[..., None]
        return x + out if c.residual else out

    def allocate_inference_cache(self, batch_size: int, device: torch.device | None = None) -> MambaState:
        """A zero state for :meth:`step`, i.e. the state before the first event."""
        weight = self.in_proj.weight
        device = device or weight.device
        ssm_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        c = self.config
        return MambaState(
            conv=torch.zeros(batch_size, c.d_inner, c.d_conv - 1, device=device, dtype=weight.dtype),
            ssm=torch.zeros(batch_size, c.d_inner, c.d_state, device=device, dtype=ssm_dtype),
        )

    def step(self, x: Tensor, state: MambaState) -> Tensor:
        """One new event per sequence: x [batch, d_model] -> [batch, d_model]; updates ``state``
        in place. Stepping through a sequence equals :meth:`forward` on it."""
        c = self.config
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # [b, d_inner]
        window = torch.cat([state.conv, xs[..., None]], dim=-1)  # [b, d_inner, d_conv]
        state.conv.copy_(window[..., 1:])
        xs = (window * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            xs = xs + self.conv1d.bias
        xs = F.silu(xs)
        dt, B, C = self.x_proj(xs).split([c.dt_rank, c.d_state, c.d_state], -1)
        dt = F.linear(dt, self.dt_proj.weight)
        A, D, dt_bias = self._ssm_params()
        y, ssm = selective_scan_step(state.ssm, xs, dt, A, B, C, D, z=z, delta_bias=dt_bias)
        state.ssm.copy_(ssm)
        out = self.out_proj(y)
        return x + out if c.residual else out
