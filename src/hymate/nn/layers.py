"""Layers shared by the sequence models (HyMaTE, STraTS and their ablations).

- `ContinuousValueEmbedding`, `TripletEmbedding`, `embed_triplets`: the STraTS embedding of an
  event (time, variable, value) as E_var[variable] + CVE_value(value) + CVE_time(time).
- `ContextLayer`, `run_context`: the Mamba context stack (pre-norm, residual, optional FFN,
  optional activation checkpointing).
- `AttentionPool`, `causal_attention_pool`: softmax attention pooling, over a set of items, and
  within groups of events for every prefix of time slots (the online, causal form).
- `ChannelAttentionLayer`: a pre-norm transformer layer across channel tokens.
- `channel_stats` (`N_CHANNEL_STATS`), `last_event_time`: per-variable summary statistics and
  prediction-time defaults computed from a padded batch of events.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hymate.nn.mamba import MambaBlock, MambaConfig, RMSNorm

# --- event embedding ----------------------------------------------------------------------


class ContinuousValueEmbedding(nn.Module):
    """STraTS's embedding of a scalar: Linear(1, sqrt d) -> tanh -> Linear(sqrt d, d)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        hidden = max(1, int(math.sqrt(d_model)))
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(-1))


def embed_triplets(owner: nn.Module, variables: Tensor, values: Tensor, times: Tensor, present: Tensor | None = None) -> Tensor:
    """E_var[variable] + CVE_value(value) + CVE_time(time), [B, L, d], for [B, L] events.

    The embeddings are the owner's (`variable_embedding`, a padding-0 `nn.Embedding`;
    `value_embedding`, `time_embedding`): HyMaTE and STraTS hold them as their own attributes, so
    their checkpoints keep their parameter names. An event without a value (`present`, [B, L]
    bool: a MEDS code with no numeric value, a diagnosis) takes the owner's learned
    `present_embedding` in place of CVE_value, so "present" is apart from every number.
    """
    value = owner.value_embedding(values)
    vector = getattr(owner, "present_embedding", None)
    if present is not None and vector is not None:
        value = torch.where(present.unsqueeze(-1), vector, value)
    return owner.variable_embedding(variables) + value + owner.time_embedding(times)


class TripletEmbedding(nn.Module):
    """The triplet embedding as a module of its own, for a new model: variable embedding (ids
    1..V; 0 is padding and embeds to 0) + CVE(value) + CVE(time), their [B, L, d] sum."""

    def __init__(self, n_variables: int, d_model: int) -> None:
        super().__init__()
        self.variable_embedding = nn.Embedding(n_variables + 1, d_model, padding_idx=0)
        self.value_embedding = ContinuousValueEmbedding(d_model)
        self.time_embedding = ContinuousValueEmbedding(d_model)

    def forward(self, variables: Tensor, values: Tensor, times: Tensor) -> Tensor:
        return embed_triplets(self, variables, values, times)


# --- the Mamba context stack --------------------------------------------------------------


class ContextLayer(nn.Module):
    """x + Mamba(x) (the block normalises its input), then an optional pre-norm FFN (width 2d,
    GELU); `dropout` is applied inside both residual branches. Output is 0 at padding."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_backend: str = "auto",
        ffn: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mamba = MambaConfig(
            d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend, residual=False
        )
        self.mamba = MambaBlock(mamba)
        self.drop = nn.Dropout(dropout)
        self.ffn = None
        if ffn:
            self.ffn = nn.Sequential(
                RMSNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(),
                nn.Dropout(dropout), nn.Linear(2 * d_model, d_model),
            )  # fmt: skip

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.drop(self.mamba(x, mask=mask))
        if self.ffn is not None:
            x = x + self.drop(self.ffn(x))
        return x * mask.unsqueeze(-1)


def context_stack(config) -> nn.ModuleList:
    """`config.n_mamba_layers` ContextLayers of width `config.d_model`, from a model config's
    d_state / d_conv / expand / scan_backend / mamba_ffn / context_dropout fields."""
    return nn.ModuleList(
        ContextLayer(config.d_model, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
                     scan_backend=config.scan_backend, ffn=config.mamba_ffn, dropout=config.context_dropout)
        for _ in range(config.n_mamba_layers)
    )  # fmt: skip


def run_context(layers: nn.ModuleList, h: Tensor, mask: Tensor, recompute: bool) -> Tensor:
    """The Mamba context layers in turn. With `recompute`, each layer keeps only its input for the
    backward pass and recomputes its activations there (activation checkpointing): a step holds
    one layer's activations at a time instead of all of them, for one more forward pass of time."""
    for layer in layers:
        h = checkpoint(layer, h, mask, use_reentrant=False) if recompute and torch.is_grad_enabled() else layer(h, mask)
    return h


# --- attention pooling and channel attention ----------------------------------------------


class AttentionPool(nn.Module):
    """Fusion attention: alpha_i = softmax_i(u^T tanh(W h_i + b)) over the unmasked items."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.score = nn.Linear(d_model, 1, bias=False)

    def scores(self, h: Tensor) -> Tensor:
        """The unnormalised scores u^T tanh(W h_i + b), [..., N]."""
        return self.score(torch.tanh(self.proj(h))).squeeze(-1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pool h [B, N, d] over the items where mask [B, N]: ([B, d], the weights [B, N])."""
        weights = self.scores(h).masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return torch.einsum("bn,bnd->bd", weights, h), weights


class ChannelAttentionLayer(nn.Module):
    """Pre-norm transformer layer across channel tokens that keeps its attention map."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, V, d] -> (x', the per-head attention map [N, heads, V, V])."""
        q = self.norm1(x)
        out, attn = self.attn(q, q, q, need_weights=True, average_attn_weights=False)
        x = x + self.drop(out)
        x = x + self.drop(self.ffn(self.norm2(x)))
        return x, attn


_EMPTY_LOG = -1e4  # log of an empty sum: exp(-1e4 - x) is exactly 0 next to any real score


def causal_attention_pool(
    scores: Tensor, values: Tensor, groups: Tensor, slots: Tensor, visible: Tensor, n_slots: int, n_groups: int
) -> tuple[Tensor, Tensor]:
    """Softmax attention pooling of events within each group, for every prefix of slots.

    Event i (score s_i, value x_i [d], group g_i, slot k_i; only `visible` events count) enters
    every slot k >= k_i. Returns pooled [B, K, G, d] = sum_i softmax(s)_i x_i over the events of
    group g in slots <= k (0 where there is none) and counts [B, K, G] of those events.

    Numerics: per (slot, group) cell the events are summed relative to that cell's own maximum
    score m (every event of a cell enters at the same slot, so m uses nothing from later slots);
    the cell totals are carried as logs, log sum exp(s) = m + log(sum exp(s - m)), and summed
    across slots by `torch.logcumsumexp`, which adds in the log domain. Values are split as
    x = (relu(x) + 1) - (relu(-x) + 1), both parts >= 1, so numerators are positive and have logs;
    pooled = exp(log N+ - log Z) - exp(log N- - log Z), each ratio in [1, 1 + max|x|]. No exp of
    an unshifted score, so nothing overflows, and no shift by a later maximum, so nothing
    underflows: a slot's output uses only events of slots <= k, and is exact to rounding.
    """
    B, L, d = values.shape
    C = n_slots * n_groups
    if C == 0:
        return values.new_zeros(B, n_slots, n_groups, d), values.new_zeros(B, n_slots, n_groups)
    cell = torch.where(visible, slots * n_groups + groups, torch.zeros_like(slots))
    s = scores.masked_fill(~visible, float("-inf"))
    cell_max = torch.full((B, C), float("-inf"), dtype=values.dtype, device=values.device)
    cell_max = cell_max.scatter_reduce(1, cell, s, reduce="amax", include_self=True).detach()
    nonempty = torch.isfinite(cell_max)
    base = torch.where(nonempty, cell_max, torch.zeros_like(cell_max))
    weights = torch.where(visible, (s - base.gather(1, cell)).exp(), torch.zeros_like(s))  # in [0, 1]
    visible_f = visible.to(values.dtype)
    counts = values.new_zeros(B, C).scatter_add(1, cell, visible_f)
    z = values.new_zeros(B, C).scatter_add(1, cell, weights)  # >= 1 in a non-empty cell
    index = cell.unsqueeze(-1).expand(-1, -1, d)
    pos = values.new_zeros(B, C, d).scatter_add(1, index, weights.unsqueeze(-1) * torch.relu(values))
    neg = values.new_zeros(B, C, d).scatter_add(1, index, weights.unsqueeze(-1) * torch.relu(-values))

    def log_total(part: Tensor, full: Tensor) -> Tensor:  # log of the cell's sum, then of the prefix's
        safe = torch.where(full, part, torch.ones_like(part))  # no log(0), so no NaN gradient
        logged = torch.where(full, base.unsqueeze(-1) + torch.log(safe), torch.full_like(part, _EMPTY_LOG))
        return torch.logcumsumexp(logged.view(B, n_slots, n_groups, -1), dim=1)

    log_z = log_total(z.unsqueeze(-1), nonempty.unsqueeze(-1))  # [B, K, G, 1]
    log_pos = log_total(z.unsqueeze(-1) + pos, nonempty.unsqueeze(-1))
    log_neg = log_total(z.unsqueeze(-1) + neg, nonempty.unsqueeze(-1))
    counts = counts.view(B, n_slots, n_groups).cumsum(dim=1)
    seen = (counts > 0).unsqueeze(-1)
    log_z = torch.where(seen, log_z, torch.zeros_like(log_z))
    pooled = (torch.where(seen, log_pos, log_z) - log_z).exp() - (torch.where(seen, log_neg, log_z) - log_z).exp()
    return pooled, counts


# --- features of a padded batch of events -------------------------------------------------


def last_event_time(times: Tensor, counts: Tensor) -> Tensor:
    """The time of event counts[b, k] - 1 of each row ([B, K]); -1 (the window's start) where counts is 0."""
    last = times.gather(1, (counts.long() - 1).clamp(min=0))
    return torch.where(counts > 0, last, torch.full_like(last, -1.0))


N_CHANNEL_STATS = 7  # the features of `channel_stats`


def channel_stats(values: Tensor, times: Tensor, channel: Tensor, mask: Tensor, n_channels: int) -> Tensor:
    """Per (stay, variable): last, first, mean, min, max, sd of the (normalised) values and the time
    from the variable's last observation to the stay's last event, [B, V, 7]; 0 where unobserved.
    Events are time-ordered, so the last/first observation is the one at the highest/lowest position."""
    B, L = values.shape
    zeros = values.new_zeros(B, n_channels)
    m = mask.to(values.dtype)
    counts = zeros.scatter_add(1, channel, m)
    seen = counts > 0
    position = torch.arange(L, device=values.device).expand(B, L)
    last_pos = torch.full((B, n_channels), -1, dtype=torch.long, device=values.device)
    last_pos = last_pos.scatter_reduce(1, channel, torch.where(mask, position, -1), reduce="amax")
    first_pos = torch.full((B, n_channels), L, dtype=torch.long, device=values.device)
    first_pos = first_pos.scatter_reduce(1, channel, torch.where(mask, position, L), reduce="amin")
    last = values.gather(1, last_pos.clamp(0, L - 1))
    first = values.gather(1, first_pos.clamp(0, L - 1))
    mean = zeros.scatter_add(1, channel, values * m) / counts.clamp(min=1)
    square = zeros.scatter_add(1, channel, values.square() * m) / counts.clamp(min=1)
    sd = (square - mean.square()).clamp(min=0).add(1e-6).sqrt()
    low = torch.full_like(zeros, float("inf")).scatter_reduce(1, channel, values.masked_fill(~mask, float("inf")), "amin")
    high = torch.full_like(zeros, float("-inf")).scatter_reduce(1, channel, values.masked_fill(~mask, float("-inf")), "amax")
    end = times.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    since = end - times.gather(1, last_pos.clamp(0, L - 1))
    stats = torch.stack([last, first, mean, low, high, sd, since], dim=-1)
    return torch.where(seen.unsqueeze(-1), stats, torch.zeros_like(stats)).clamp(-10, 10)
