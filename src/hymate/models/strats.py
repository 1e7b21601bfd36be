"""STraTS (Tipirneni & Reddy, 2022): self-supervised transformer for sparse, irregular time series.

The baseline HyMaTE is compared against, with the same interface (`STraTS(config)(batch)`):

1. Triplet embedding, exactly HyMaTE's: E_var[variable] + CVE_value(value) + CVE_time(time)
   (`hymate.nn.layers.embed_triplets`).
2. Optional (`n_mamba_layers > 0`): HyMaTE's Mamba context layers (`hymate.nn.layers.ContextLayer`),
   then RMSNorm, before the transformer. This is the ablation "HyMaTE with attention over events
   instead of over channels", with the Mamba blocks where the HyMaTE authors' code placed them.
3. A transformer encoder over *events* (post-norm, as in STraTS: x = LN(x + MHA(x)),
   x = LN(x + FFN(x)), FFN width 2d with ReLU), with a key-padding mask. There is no positional
   encoding: order enters only through the time embedding (and through Mamba when present).
   Its cost is O(L^2) in the number of events, the point of the comparison with HyMaTE.
   Attention runs through PyTorch's fused `scaled_dot_product_attention`, without dropout on the
   attention weights (dropout stays on both residual branches and inside the FFN): on CPU,
   attention-weight dropout or `nn.TransformerEncoderLayer`'s inference fast path with a padding
   mask fall back to the unfused kernel, ~5x slower per training step at 600 events (measured,
   benchmarks/NOTES.md), and the comparison should be against an efficient STraTS.
4. Fusion attention pooling over events (the `event_weights` of the output), concatenated with
   a static MLP (Linear + tanh), then dropout and a linear head.

STraTS's self-supervised forecasting pre-training is not part of this module; the model is
trained end to end on the outcome like HyMaTE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hymate.data.batching import EventBatch
from hymate.models.base import ModelOutput
from hymate.nn.layers import AttentionPool, ContinuousValueEmbedding, context_stack, embed_triplets, run_context
from hymate.nn.mamba import RMSNorm


@dataclass
class STraTSConfig:
    n_variables: int  # V; variable ids are 1..V, 0 is padding
    n_statics: int
    d_model: int = 64
    n_layers: int = 2  # transformer layers over events
    n_heads: int = 4
    ffn_mult: int = 2  # FFN width = ffn_mult * d_model
    dropout: float = 0.2  # inside the transformer layers and before the head
    n_mamba_layers: int = 0  # > 0: HyMaTE's Mamba context layers before the transformer (ablation)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    mamba_ffn: bool = False
    context_dropout: float = 0.0
    recompute_context: bool = False  # see `hymate.nn.layers.run_context`
    present_values: bool = False  # a learned embedding for events without a value (MEDS codes without numbers)
    n_outputs: int = 1
    scan_backend: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


def observed_variables(variables: Tensor, mask: Tensor, n_variables: int) -> Tensor:
    """[B, V] bool: variable v + 1 has at least one real event in the row."""
    counts = torch.zeros(variables.shape[0], n_variables + 1, device=variables.device)
    counts = counts.scatter_add(1, variables * mask, mask.float())
    return counts[:, 1:] > 0


class EventAttentionLayer(nn.Module):
    """Post-norm transformer encoder layer (the layout of `nn.TransformerEncoderLayer` with
    `norm_first=False`, ReLU) on the fused attention kernel; `keys` [B, L] marks readable keys."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ffn, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
        x = self.norm1(x + self.drop1(self.out(a.transpose(1, 2).reshape(B, L, d))))
        return self.norm2(x + self.drop2(self.ffn(x)))


class STraTS(nn.Module):
    def __init__(self, config: STraTSConfig) -> None:
        super().__init__()
        self.config = config
        d, V = config.d_model, config.n_variables
        # The triplet embedding (`hymate.nn.layers.embed_triplets`); held here so parameter names stay.
        self.variable_embedding = nn.Embedding(V + 1, d, padding_idx=0)
        self.value_embedding = ContinuousValueEmbedding(d)
        self.time_embedding = ContinuousValueEmbedding(d)
        # "present": the value of an event without one (see `embed_triplets`); only when the data have such events
        self.present_embedding = nn.Parameter(torch.randn(d) * 0.02) if config.present_values else None

        self.context = context_stack(config)
        self.context_norm = RMSNorm(d) if config.n_mamba_layers > 0 else None

        self.layers = nn.ModuleList(
            EventAttentionLayer(d, config.n_heads, config.ffn_mult * d, config.dropout) for _ in range(config.n_layers)
        )
        self.fusion = AttentionPool(d)
        self.static_mlp = nn.Sequential(nn.Linear(config.n_statics, d), nn.Tanh()) if config.n_statics else None
        n_parts = 1 + (config.n_statics > 0)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(n_parts * d, config.n_outputs))

    def forward(self, batch: EventBatch) -> ModelOutput:
        mask = batch.mask
        keep = mask.unsqueeze(-1)
        h = embed_triplets(self, batch.variables * mask, batch.values, batch.times, batch.present) * keep
        h = run_context(self.context, h, mask, self.config.recompute_context and self.training)
        if self.context_norm is not None:
            h = self.context_norm(h) * keep
        for layer in self.layers:  # every row has >= 1 event (batching rejects empty stays)
            h = layer(h, mask)
        h = h * keep  # padded rows are never read, but keep them finite and zero

        parts = []
        pooled, event_weights = self.fusion(h, mask)
        parts.append(pooled)
        if self.static_mlp is not None:
            parts.append(self.static_mlp(batch.statics))
        logits = self.head(torch.cat(parts, dim=-1))
        observed = observed_variables(batch.variables, mask, self.config.n_variables)
        return ModelOutput(logits, None, [], event_weights, observed)
