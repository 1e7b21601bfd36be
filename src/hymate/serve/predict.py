"""Score stays with a saved checkpoint: calibrated risk plus the variables that drove it."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.evaluate.calibration import apply_platt

TOP_K = 3


@torch.no_grad()
def score_stays(
    model: torch.nn.Module, normalizer: Normalizer, meta: dict, data: EventData, stay_ids=None, batch_size: int = 64
) -> tuple[pl.DataFrame, int]:
    """Return (predictions, events dropped for unknown variables).

    Predictions: stay_id, logit, probability (Platt-calibrated as at training), label (if known)
    and the top variables by the model's channel importance.
    """
    ids = data.stay_ids if stay_ids is None else list(stay_ids)
    if not ids:
        raise DataError("no stays to score")
    known = set(normalizer.variables)
    keep = pl.Series(ids).implode()
    unknown = data.events.filter(pl.col("stay_id").is_in(keep) & ~pl.col("variable").is_in(list(known))).height
    max_events = meta.get("train", {}).get("max_events")
    dataset = EventSequenceDataset(data, ids, normalizer, max_events=max_events, unknown_variables="drop")
    model.eval()
    logits = np.empty(len(dataset), dtype=np.float32)
    top: list[str] = [""] * len(dataset)
    for indices in LengthBucketSampler(dataset.lengths, batch_size, shuffle=False):
        out = model(collate([dataset[i] for i in indices]))
        logits[indices] = out.logits[:, 0].float().numpy()
        if out.channel_importance is None:  # a model without per-variable weights
            continue
        best = out.channel_importance.topk(min(TOP_K, normalizer.n_variables), dim=1)
        for row, i in enumerate(indices):
            top[i] = ", ".join(
                f"{normalizer.variables[v]} ({w:.2f})" for v, w in zip(best.indices[row].tolist(), best.values[row].tolist(), strict=True)
            )
    calibration = meta.get("calibration", {"a": 1.0, "b": 0.0})
    frame = pl.DataFrame({
        "stay_id": dataset.stay_ids, "logit": logits,
        "probability": apply_platt(logits, calibration["a"], calibration["b"]),
        "label": dataset.labels, "top_variables": top,
    }).with_columns(pl.when(pl.col("label").is_nan()).then(None).otherwise(pl.col("label")).alias("label"))  # fmt: skip
    return frame, unknown
