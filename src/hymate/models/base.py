"""What every sequence model returns, so training, evaluation, serving and explanations can
treat HyMaTE and its baselines alike (fields a model cannot provide are None)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    logits: Tensor  # [B, n_outputs]
    channel_importance: Tensor | None = None  # [B, V] weights over variables (sum to 1)
    channel_attention: list[Tensor] = field(default_factory=list)  # per layer [B, heads, V, V]
    event_weights: Tensor | None = None  # [B, L] weights over events (0 at padding)
    observed: Tensor | None = None  # [B, V] bool, variable observed at least once
    channel_event_weights: Tensor | None = None  # [B, L] variable importance x event's weight within its variable
