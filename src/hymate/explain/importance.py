"""Which variables drive a prediction, read from HyMaTE's own weights.

- Channel importance: the fusion attention over the V channel tokens ([B, V], sums to 1 per
  stay). Per stay it is a local explanation; its mean over the stays of a cohort is the global one.
  Unobserved variables have a token too (a learned "never observed" one), so a missing variable
  can carry weight: missingness is informative in ICU data.
- Channel attention: the transformer layers' attention across channel tokens, averaged over
  heads and layers to one [V, V] map per stay (row: the variable attending; column: attended to).
- Attention rollout: the channel weights traced back through the channel-attention layers to
  the tokens that went in (Abnar & Zuidema 2020): importance = w^T M_L ... M_1 with
  M_l = (I + A_l) / 2 (A_l: layer l's attention, mean over heads; I: the residual path). The
  pooling weights alone can miss a variable whose information another channel's token has
  absorbed through attention; on the planted-signal test without variable dropout they do, and
  the rollout does not (tests/explain/test_planted_signal.py).
- Event weights: the attention pooling over events ([L] per stay), when the model has it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.data.normalize import Normalizer
from hymate.errors import HymateError


class ExplainError(HymateError):
    """The model or the request cannot be explained (wrong model kind, unknown stay, ...)."""


class OneOutput(torch.nn.Module):
    """A model seen through one of its outputs (a multiclass model's class logit), so explanations
    of a scalar (attention weights, Integrated Gradients of `logits[:, 0]`) apply to every task."""

    def __init__(self, model: torch.nn.Module, index: int = 0) -> None:
        super().__init__()
        self.inner, self.index = model, index
        self.config = model.config
        self.channel_fusion = getattr(model, "channel_fusion", None)

    def forward(self, batch):
        out = self.inner(batch)
        out.logits = out.logits[:, self.index : self.index + 1]
        return out


def require_channel_importance(model: torch.nn.Module, meta: dict | None = None) -> None:
    """Fail clearly unless `model` returns per-variable weights (HyMaTE with channel attention)."""
    config = getattr(model, "config", None)
    if getattr(config, "channel_attention", False) and getattr(model, "channel_fusion", None) is not None:
        return
    name = (meta or {}).get("variant") or (meta or {}).get("model") or type(model).__name__
    raise ExplainError(
        f"the checkpoint holds a {name!r} model, which has no per-variable attention weights; "
        "explanations need a HyMaTE checkpoint with channel attention (model 'hymate', not the 'mamba' ablation)"
    )


def stay_index(dataset: EventSequenceDataset, stay_id: int) -> int:
    where = np.flatnonzero(dataset.stay_ids == stay_id)
    if not len(where):
        raise ExplainError(f"stay {stay_id} is not among the {len(dataset):,} stays being explained")
    return int(where[0])


@dataclass
class ChannelExplanations:
    """HyMaTE's own weights for N stays over V variables."""

    variables: list[str]
    stay_ids: np.ndarray  # [N]
    labels: np.ndarray  # [N], NaN where unknown
    logits: np.ndarray  # [N]
    importance: np.ndarray  # [N, V] channel pooling weights (each row sums to 1)
    rollout: np.ndarray  # [N, V] pooling weights traced back through the channel attention (sums to 1)
    observed: np.ndarray  # [N, V] bool
    attention: np.ndarray  # [N, V, V] channel-to-channel attention, mean over heads and layers

    def cohort_importance(self) -> np.ndarray:
        """Global importance: the mean over stays of the per-stay weights ([V], sums to 1)."""
        return self.importance.mean(axis=0)

    def cohort_attention(self) -> np.ndarray:
        return self.attention.mean(axis=0)


@torch.no_grad()
def explain_channels(
    model: torch.nn.Module, dataset: EventSequenceDataset, variables: list[str], batch_size: int = 64
) -> ChannelExplanations:
    """Run the model once over `dataset` and keep its per-variable weights (`variables`: the
    normaliser's vocabulary, variable i + 1 in the batches)."""
    require_channel_importance(model)
    model.eval()
    N, V = len(dataset), model.config.n_variables
    logits = np.empty(N, dtype=np.float32)
    importance = np.empty((N, V), dtype=np.float32)
    observed = np.empty((N, V), dtype=bool)
    attention = np.empty((N, V, V), dtype=np.float32)
    rollout = np.empty((N, V), dtype=np.float32)
    for indices in LengthBucketSampler(dataset.lengths, batch_size, shuffle=False):
        out = model(collate([dataset[i] for i in indices]))
        logits[indices] = out.logits[:, 0].float().numpy()
        importance[indices] = out.channel_importance.float().numpy()
        observed[indices] = out.observed.numpy()
        attention[indices] = torch.stack(out.channel_attention).mean(dim=(0, 2)).float().numpy()
        rollout[indices] = attention_rollout(out.channel_importance, out.channel_attention).float().numpy()
    if len(variables) != V:
        raise ExplainError(f"{len(variables)} variable names for a model of {V} variables")
    return ChannelExplanations(
        list(variables),
        dataset.stay_ids.copy(),
        dataset.labels.copy(),
        logits,
        importance,
        rollout,
        observed,
        attention,
    )


def attention_rollout(weights: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
    """Trace pooling weights [B, V] back through attention layers (each [B, heads, V, V], first
    layer first) to the input channel tokens: w^T M_L ... M_1, M_l = (I + mean_heads A_l) / 2."""
    eye = torch.eye(weights.shape[1], dtype=weights.dtype)
    out = weights.unsqueeze(1)  # [B, 1, V]
    for attn in reversed(layers):
        out = out @ (0.5 * (eye + attn.mean(dim=1)))
    return out.squeeze(1)


@torch.no_grad()
def stay_events(
    model: torch.nn.Module, dataset: EventSequenceDataset, index: int, normalizer: Normalizer
) -> pl.DataFrame:
    """The events the model read for one stay (after the event cap), in its reading order, with
    hours since admission, the value (clipped to the training range, as the model saw it) and
    the model's attention weight over events (null when the model does not pool over events),
    and the event's share of the channel pooling: its variable's importance times its weight
    within that variable (null without channel attention)."""
    item = dataset[index]
    out = model(collate([item]))
    var = item["variables"] - 1
    mean, std = np.asarray(normalizer.value_mean)[var], np.asarray(normalizer.value_std)[var]
    weights = out.event_weights[0].float().numpy() if out.event_weights is not None else np.full(len(var), np.nan)
    through_channels = out.channel_event_weights
    channel_weights = through_channels[0].float().numpy() if through_channels is not None else np.full(len(var), np.nan)
    return pl.DataFrame({
        "hour": (item["times"].astype(np.float64) + 1.0) / 2.0 * normalizer.window_hours,
        "variable": [normalizer.variables[v] for v in var],
        "value": item["values"] * std + mean,
        "z": item["values"],
        "weight": weights,
        "channel_weight": channel_weights,
    }).with_columns(pl.col("weight").fill_nan(None), pl.col("channel_weight").fill_nan(None))  # fmt: skip


def top_variables(
    names: list[str], scores: np.ndarray, k: int = 10, among: np.ndarray | None = None
) -> list[tuple[str, float]]:
    """The k highest-scoring variables (optionally only those where `among` is True)."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.ones(len(scores), bool) if among is None else np.asarray(among, bool)
    order = [int(v) for v in np.argsort(-scores, kind="stable") if keep[v]]
    return [(names[v], float(scores[v])) for v in order[:k]]
