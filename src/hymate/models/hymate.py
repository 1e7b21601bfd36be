"""HyMaTE: a hybrid Mamba + Transformer model for EHR triplet sequences, in one file.

Reading order of `HyMaTE.forward`:

1. Triplet embedding: each event (time, variable, value) becomes
   E_var[variable] + CVE_value(value) + CVE_time(time)   (CVE: Linear(1, sqrt d) -> tanh -> Linear).
2. Contextual module: M Mamba blocks (pre-norm, residual, optional FFN) over the time-ordered,
   right-padded events. Mamba is causal, so right padding never reaches a real event.
3. Channel tokens: for each variable, attention-pool the contextual embeddings of its own
   observations, plus a learned per-variable embedding; a variable never observed in the stay
   gets a learned "never observed" token (missingness is informative in ICU data).
4. Channel-wise self-attention: transformer layers across the V channel tokens (cost O(V^2 d),
   independent of sequence length); their attention maps are kept.
5. Fusion: attention pooling over channels (its weights are per-variable importances), optionally
   joined by attention pooling over events, concatenated with an MLP embedding of statics, then
   a linear head (n_outputs logits: 1 for a binary outcome; more for multiclass/regression).
   With `query_time`, the head also gets CVE_query(prediction time), on the clock of the event
   times: without it a prediction only changes when an event arrives, never with the hour itself.

Online use (`forward_hourly`): the same model, with the same weights, at every prediction hour of
a stay in one pass, seeing only the events up to each hour; equal (to rounding) to `forward` on
the stay cut at that hour. Both attention poolings become causal prefix sums over hour slots
(`causal_attention_pool`); the channel transformer runs on one set of V tokens per hour.

Training-time variable dropout (`drop_variables`) removes every observation of a variable from a
sample with probability p, compacting the sequence so the model never sees holes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hymate.data.batching import EventBatch
from hymate.models.base import ModelOutput
from hymate.nn.mamba import MambaBlock, MambaConfig, RMSNorm


@dataclass
class HyMaTEConfig:
    n_variables: int  # V; variable ids are 1..V, 0 is padding
    n_statics: int
    d_model: int = 32  # the authors' width; 64 was no better on P12 validation and twice as slow on CPU
    n_mamba_layers: int = 3  # the authors' depth
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    mamba_ffn: bool = False  # a position-wise FFN after each Mamba block
    channel_attention: bool = True  # False: the Mamba-only ablation (no channel tokens, event pooling only)
    n_channel_layers: int = 1
    n_heads: int = 4
    dropout: float = 0.2  # on the event embedding, channel layers and head
    context_dropout: float = 0.0  # inside the Mamba residual branches ([B, L, d]: costly on CPU)
    recompute_context: bool = False  # recompute the Mamba blocks in backward: less memory, more time
    variable_dropout: float = 0.2  # per-sample probability of removing all of a variable's events
    sequence_fusion: bool = True  # also pool over events, beside the channel pooling
    count_embedding: bool = True  # add an embedding of log(1 + #observations) to each channel token
    channel_stats: bool = False  # add an embedding of each variable's last/first/mean/min/max/sd/time-since-last
    query_time: bool = False  # the head also embeds the prediction time (see `HyMaTE.forward`); on for the online task
    n_outputs: int = 1
    scan_backend: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


HyMaTEOutput = ModelOutput  # HyMaTE fills every field


class ContinuousValueEmbedding(nn.Module):
    """STraTS's embedding of a scalar: Linear(1, sqrt d) -> tanh -> Linear(sqrt d, d)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        hidden = max(1, int(math.sqrt(d_model)))
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(-1))


class AttentionPool(nn.Module):
    """Fusion attention: alpha_i = softmax_i(u^T tanh(W h_i + b)) over the unmasked items."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.score = nn.Linear(d_model, 1, bias=False)

    def scores(self, h: Tensor) -> Tensor:
        return self.score(torch.tanh(self.proj(h))).squeeze(-1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
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
        q = self.norm1(x)
        out, attn = self.attn(q, q, q, need_weights=True, average_attn_weights=False)
        x = x + self.drop(out)
        x = x + self.drop(self.ffn(self.norm2(x)))
        return x, attn


def run_context(layers: nn.ModuleList, h: Tensor, mask: Tensor, recompute: bool) -> Tensor:
    """The Mamba context layers in turn. With `recompute`, each layer keeps only its input for the
    backward pass and recomputes its activations there (activation checkpointing): a step holds
    one layer's activations at a time instead of all of them, for one more forward pass of time."""
    for layer in layers:
        h = checkpoint(layer, h, mask, use_reentrant=False) if recompute and torch.is_grad_enabled() else layer(h, mask)
    return h


class ContextLayer(nn.Module):
    """x + Mamba(x) (the block normalises its input), then an optional pre-norm FFN."""

    def __init__(self, config: HyMaTEConfig) -> None:
        super().__init__()
        mamba = MambaConfig(
            d_model=config.d_model, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand,
            scan_backend=config.scan_backend, residual=False,
        )  # fmt: skip
        self.mamba = MambaBlock(mamba)
        self.drop = nn.Dropout(config.context_dropout)
        self.ffn = None
        if config.mamba_ffn:
            self.ffn = nn.Sequential(
                RMSNorm(config.d_model), nn.Linear(config.d_model, 2 * config.d_model), nn.GELU(),
                nn.Dropout(config.context_dropout), nn.Linear(2 * config.d_model, config.d_model),
            )  # fmt: skip

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.drop(self.mamba(x, mask=mask))
        if self.ffn is not None:
            x = x + self.drop(self.ffn(x))
        return x * mask.unsqueeze(-1)


class HyMaTE(nn.Module):
    def __init__(self, config: HyMaTEConfig) -> None:
        super().__init__()
        self.config = config
        d, V = config.d_model, config.n_variables
        self.variable_embedding = nn.Embedding(V + 1, d, padding_idx=0)
        self.value_embedding = ContinuousValueEmbedding(d)
        self.time_embedding = ContinuousValueEmbedding(d)
        self.embed_drop = nn.Dropout(config.dropout)
        self.context = nn.ModuleList(ContextLayer(config) for _ in range(config.n_mamba_layers))
        self.context_norm = RMSNorm(d)

        if config.channel_attention:
            self.channel_pool_score = AttentionPool(d)  # scores events within each variable
            self.channel_embedding = nn.Parameter(torch.randn(V, d) * 0.02)
            self.never_observed = nn.Parameter(torch.zeros(d))
            # How often a variable was measured is itself a signal in ICU data (sicker patients are
            # sampled more); a weighted mean of events cannot carry it, so it is embedded explicitly.
            self.count_embedding = ContinuousValueEmbedding(d) if config.count_embedding else None
            # What a clinician (and a tree model) reads off a series: its last, first, mean, min, max,
            # spread and how long ago it was measured. Attention pooling averages embeddings, so the
            # extremes and the most recent value are only implicit in it; here they are explicit.
            self.stats_embedding = (
                nn.Sequential(nn.Linear(N_CHANNEL_STATS, d), nn.GELU(), nn.Linear(d, d)) if config.channel_stats else None
            )
            self.channel_layers = nn.ModuleList(
                ChannelAttentionLayer(d, config.n_heads, config.dropout) for _ in range(config.n_channel_layers)
            )
            self.channel_norm = nn.LayerNorm(d)
            self.channel_fusion = AttentionPool(d)
        elif not config.sequence_fusion:
            raise ValueError("HyMaTE needs channel attention or sequence fusion (or both)")
        self.sequence_fusion = AttentionPool(d) if config.sequence_fusion else None

        self.static_mlp = nn.Sequential(nn.Linear(config.n_statics, d), nn.Tanh()) if config.n_statics else None
        n_parts = config.channel_attention + config.sequence_fusion + (config.n_statics > 0)
        n_parts += config.query_time
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(n_parts * d, config.n_outputs))
        # Created last, so that with query_time off every other weight is initialised as before.
        self.query_embedding = ContinuousValueEmbedding(d) if config.query_time else None

    # --- the forward pass, in the order of the module docstring -------------------------
    def forward(self, batch: EventBatch, query_times: Tensor | None = None) -> HyMaTEOutput:
        """`query_times` [B] (used with `query_time` only): the prediction time of each stay, on the
        event clock (`Normalizer.scale_time`). Default: `batch.query_times` if the batch has them,
        else the time of the stay's last real event (-1, the window's start, for a stay with none)."""
        mask = batch.mask
        h = self.encode(batch)

        parts, attention, importance, observed, channel_event_weights = [], [], None, None, None
        if self.config.channel_attention:
            tokens, observed, within = self._channel_tokens(h, batch.variables, mask, batch.values, batch.times)
            for layer in self.channel_layers:
                tokens, attn = layer(tokens)
                attention.append(attn)
            tokens = self.channel_norm(tokens)
            pooled, importance = self.channel_fusion(tokens, torch.ones_like(observed))
            parts.append(pooled)
            # The share of the channel pooling that reaches each event: its variable's importance
            # times its weight within that variable (sums to the importance of observed variables).
            channel_event_weights = within * importance.gather(1, (batch.variables - 1).clamp(min=0))
        event_weights = None
        if self.sequence_fusion is not None:
            seq, event_weights = self.sequence_fusion(h, mask)
            parts.append(seq)
        if self.static_mlp is not None:
            parts.append(self.static_mlp(batch.statics))
        if self.query_embedding is not None:
            if query_times is None:
                query_times = batch.query_times
            if query_times is None:
                query_times = last_event_time(batch.times, batch.lengths.unsqueeze(1))[:, 0]
            parts.append(self.query_embedding(query_times.to(h.dtype)))
        logits = self.head(torch.cat(parts, dim=-1))
        return HyMaTEOutput(logits, importance, attention, event_weights, observed, channel_event_weights)

    def encode(self, batch: EventBatch) -> Tensor:
        """Steps 1-2: the contextual embedding of every event, [B, L, d] (0 at padding). Causal."""
        mask = batch.mask
        h = self.variable_embedding(batch.variables) + self.value_embedding(batch.values)
        h = self.embed_drop(h + self.time_embedding(batch.times)) * mask.unsqueeze(-1)
        h = run_context(self.context, h, mask, self.config.recompute_context and self.training)
        return self.context_norm(h) * mask.unsqueeze(-1)

    # --- the hourly (online) forward: one logit per prediction hour, causal --------------
    def forward_hourly(
        self, batch: EventBatch, prefix: Tensor, hour_mask: Tensor | None = None, query_times: Tensor | None = None
    ) -> Tensor:
        """Logits [B, H, n_outputs]: at slot k of stay b, the stay-level `forward` of the same
        model on the stay's first `prefix[b, k]` events (its events up to that prediction hour),
        with `query_times=query_times[b, k]`, for every k in one pass over the stay.

        `prefix` [B, H] (int) must be non-decreasing along each row (pad with the stay's length);
        `hour_mask` [B, H] marks real slots (padded slots get logit 0). Equivalence with the
        stay-level forward holds for prefix >= 1; with no event yet, channels are all "never
        observed" and the event pooling contributes zeros. `query_times` [B, H] (with `query_time`
        only): each slot's prediction hour on the event clock (`HourlyBatch.query_times`); default,
        as in `forward`, the time of the last event the slot sees. Slots need not be every hour:
        any non-decreasing subset of a stay's hours gives the same logits at those hours (training
        scores a sample of hours this way, so the channel transformer runs on fewer tokens).

        How: Mamba is causal, so the contextual embeddings `encode` gives are those of every
        prefix. Each event is put in the first slot that sees it; both attention poolings (per
        variable, and over all events) become softmax-weighted prefix sums over slots, kept in
        the log domain (`causal_attention_pool`), so no maximum over later events is ever used.
        The channel transformer then runs on [B * H, V, d] tokens: its cost is independent of
        the sequence length, as in the stay-level forward.
        """
        B, L, d = batch.variables.shape[0], batch.variables.shape[1], self.config.d_model
        if prefix.dim() != 2 or prefix.shape[0] != B:
            raise ValueError(f"prefix must be [batch, hours] = [{B}, H], got {tuple(prefix.shape)}")
        H = prefix.shape[1]
        hour_mask = torch.ones_like(prefix, dtype=torch.bool) if hour_mask is None else hour_mask
        if H and (prefix.diff(dim=1) < 0).any():
            raise ValueError("prefix lengths must be non-decreasing within each stay")
        mask = batch.mask
        prefix = torch.minimum(prefix.long(), batch.lengths.unsqueeze(1))
        h = self.encode(batch)
        positions = torch.arange(L, device=h.device).expand(B, L).contiguous()
        slot = torch.searchsorted(prefix.contiguous(), positions, right=True)  # first slot k with prefix_k > i
        visible = mask & (slot < H)
        slot = slot.clamp(max=max(H - 1, 0))

        parts = []
        if self.config.channel_stats:
            raise ValueError("the hourly forward does not support channel_stats yet")
        if self.config.channel_attention:
            V = self.config.n_variables
            channel = (batch.variables - 1).clamp(min=0)
            scores = self.channel_pool_score.scores(h)
            pooled, counts = causal_attention_pool(scores, h, channel, slot, visible, H, V)  # [B, H, V, d], [B, H, V]
            observed = counts > 0
            if self.count_embedding is not None:
                pooled = pooled + self.count_embedding(torch.log1p(counts) / 4.0)
            tokens = torch.where(observed.unsqueeze(-1), pooled, self.never_observed.expand(B, H, V, d))
            tokens = (tokens + self.channel_embedding)[hour_mask]  # [N, V, d], N real slots
            for layer in self.channel_layers:
                tokens, _ = layer(tokens)
            tokens = self.channel_norm(tokens)
            pooled_channels, _ = self.channel_fusion(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=h.device))
            parts.append(pooled_channels)
        if self.sequence_fusion is not None:
            scores = self.sequence_fusion.scores(h)
            seq, _ = causal_attention_pool(scores, h, torch.zeros_like(slot), slot, visible, H, 1)
            parts.append(seq[:, :, 0][hour_mask])
        if self.static_mlp is not None:
            parts.append(self.static_mlp(batch.statics).unsqueeze(1).expand(B, H, d)[hour_mask])
        if self.query_embedding is not None:
            if query_times is None:
                query_times = last_event_time(batch.times, prefix)
            parts.append(self.query_embedding(query_times.to(h.dtype)[hour_mask]))
        logits = self.head(torch.cat(parts, dim=-1))  # [N, n_outputs]
        out = torch.zeros(B, H, logits.shape[-1], dtype=logits.dtype, device=logits.device)
        out[hour_mask] = logits
        return out

    def _channel_tokens(
        self, h: Tensor, variables: Tensor, mask: Tensor, values: Tensor | None = None, times: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attention-pool each variable's events into one token per variable: [B, V, d]. Also
        returns which variables were observed [B, V] and each event's weight within its own
        variable's pooling [B, L] (summing to 1 over a variable's events; 0 at padding)."""
        B, L, d = h.shape
        V = self.config.n_variables
        channel = (variables - 1).clamp(min=0)  # [B, L] in 0..V-1 (padding masked below)
        scores = self.channel_pool_score.scores(h).masked_fill(~mask, float("-inf"))
        # Softmax within each (sample, variable) group: subtract the group max for stability.
        group_max = torch.full((B, V), float("-inf"), dtype=h.dtype, device=h.device)
        group_max = group_max.scatter_reduce(1, channel, scores, reduce="amax", include_self=True)
        shifted = scores - group_max.gather(1, channel).nan_to_num(neginf=0.0)
        weights = torch.where(mask, shifted.exp(), torch.zeros_like(scores))
        counts = torch.zeros(B, V, dtype=h.dtype, device=h.device).scatter_add(1, channel, mask.to(h.dtype))
        totals = torch.zeros(B, V, dtype=h.dtype, device=h.device).scatter_add(1, channel, weights)
        pooled = torch.zeros(B, V, d, dtype=h.dtype, device=h.device)
        pooled = pooled.scatter_add(1, channel.unsqueeze(-1).expand(-1, -1, d), weights.unsqueeze(-1) * h)
        observed = totals > 0
        pooled = pooled / totals.clamp(min=1e-12).unsqueeze(-1)
        if self.count_embedding is not None:
            pooled = pooled + self.count_embedding(torch.log1p(counts) / 4.0)  # ~[0, 1.7] for up to 880 events
        if self.stats_embedding is not None:
            pooled = pooled + self.stats_embedding(channel_stats(values, times, channel, mask, V))
        tokens = torch.where(observed.unsqueeze(-1), pooled, self.never_observed.expand(B, V, d))
        within = weights / totals.gather(1, channel).clamp(min=1e-12)
        return tokens + self.channel_embedding, observed, within


N_CHANNEL_STATS = 7


def last_event_time(times: Tensor, counts: Tensor) -> Tensor:
    """The time of event counts[b, k] - 1 of each row ([B, K]); -1 (the window's start) where counts is 0."""
    last = times.gather(1, (counts.long() - 1).clamp(min=0))
    return torch.where(counts > 0, last, torch.full_like(last, -1.0))


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


def drop_variables(
    batch: EventBatch, p: float, generator: torch.Generator | None = None, prefix: Tensor | None = None
) -> EventBatch | tuple[EventBatch, Tensor]:
    """Remove all events of each (sample, variable) with probability p, keeping >= 1 event.

    Kept events are moved to the front of each row (stable, so time order holds), so the result
    is an ordinary right-padded batch with no holes for the sequence model to see. With `prefix`
    ([B, H] event counts per prediction hour, see `HyMaTE.forward_hourly`), also returns the
    prefix counts of the kept events.
    """
    if p <= 0:
        return batch if prefix is None else (batch, prefix)
    B, L = batch.variables.shape
    n_vars = int(batch.variables.max()) + 1
    dropped = torch.rand(B, n_vars, generator=generator, device=batch.variables.device) < p
    keep = batch.mask & ~dropped.gather(1, batch.variables)
    empty = keep.sum(dim=1) == 0
    keep[empty] = batch.mask[empty]  # never empty a stay
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    new_len = int(keep.sum(dim=1).max())
    order = order[:, :new_len]
    new_mask = torch.gather(keep, 1, order)

    def take(x: Tensor) -> Tensor:
        return torch.gather(x, 1, order) * new_mask.to(x.dtype)

    dropped_batch = EventBatch(
        times=take(batch.times), variables=take(batch.variables), values=take(batch.values), mask=new_mask,
        statics=batch.statics, labels=batch.labels, stay_ids=batch.stay_ids, query_times=batch.query_times,
    )  # fmt: skip
    if prefix is None:
        return dropped_batch
    kept_before = torch.cat([torch.zeros_like(keep[:, :1], dtype=torch.long), keep.long().cumsum(dim=1)], dim=1)
    return dropped_batch, torch.gather(kept_before, 1, prefix.long().clamp(max=L))
