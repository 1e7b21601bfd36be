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

The layers (triplet embedding, Mamba context stack, attention pooling, channel attention, channel
statistics) live in `hymate.nn.layers`, shared with the baselines. Training-time variable dropout
(`hymate.data.augment.drop_variables`) removes every observation of a variable from a sample with
probability p, compacting the sequence so the model never sees holes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from hymate.data.batching import EventBatch
from hymate.models.base import ModelOutput
from hymate.nn.layers import (
    N_CHANNEL_STATS,
    AttentionPool,
    ChannelAttentionLayer,
    ContinuousValueEmbedding,
    causal_attention_pool,
    channel_stats,
    context_stack,
    embed_triplets,
    last_event_time,
    run_context,
)
from hymate.nn.mamba import RMSNorm


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
    sequence_fusion: bool = True  # also pool over events, beside the channel pooling
    count_embedding: bool = True  # add an embedding of log(1 + #observations) to each channel token
    channel_stats: bool = False  # add an embedding of each variable's last/first/mean/min/max/sd/time-since-last
    present_values: bool = False  # a learned embedding for events without a value (MEDS codes without numbers)
    query_time: bool = False  # the head also embeds the prediction time (see `HyMaTE.forward`); on for the online task
    n_outputs: int = 1
    scan_backend: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


HyMaTEOutput = ModelOutput  # HyMaTE fills every field


class HyMaTE(nn.Module):
    def __init__(self, config: HyMaTEConfig) -> None:
        super().__init__()
        self.config = config
        d, V = config.d_model, config.n_variables
        # The triplet embedding (`hymate.nn.layers.embed_triplets`); held here so parameter names stay.
        self.variable_embedding = nn.Embedding(V + 1, d, padding_idx=0)
        self.value_embedding = ContinuousValueEmbedding(d)
        self.time_embedding = ContinuousValueEmbedding(d)
        # "present": the value of an event without one (see `embed_triplets`); only when the data have such events
        self.present_embedding = nn.Parameter(torch.randn(d) * 0.02) if config.present_values else None
        self.embed_drop = nn.Dropout(config.dropout)
        self.context = context_stack(config)
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
        h = self.embed_drop(embed_triplets(self, batch.variables, batch.values, batch.times, batch.present)) * mask.unsqueeze(-1)
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
