"""Score stays with a saved checkpoint of any task and model: one row per prediction time, with
the task's predictions and, for a model with per-variable weights, the variables that drove it."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.data.samples import at_last_prediction
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.evaluate.scores import prediction_frame, predictions

TOP_K = 3


def score(estimator, task, meta: dict, view: EventData, stay_ids=None, progress: bool = False) -> tuple[pl.DataFrame, int]:
    """(predictions, events dropped for variables the model never saw) for `stay_ids` (default: all) of a task's view.

    Columns: stay_id, prediction_time, label (null if unknown), then by label type: probability
    (calibrated on validation) and logit (binary; alarm where the task has a decision threshold),
    p_<class> and predicted_class (multiclass), prediction (regression); top_variables (the
    model's channel-attention weights, summing to 1 over variables, at the stay's last prediction
    time; empty on its earlier rows) where the model has them.
    """
    ids = view.stay_ids if stay_ids is None else list(stay_ids)
    if not ids:
        raise DataError("no stays to score")
    rows, raw, dropped = estimator.raw(view, ids, progress=progress)
    pred = predictions(task.label_type, raw, meta.get("calibration"), getattr(estimator, "target", None))
    frame = prediction_frame(task, rows, raw, pred, meta.get("decision"))
    if estimator.kind == "neural":
        last = at_last_prediction(view, task.lookback_hours)
        top = top_variables(estimator, last, ids)
        if top is not None:  # the weights at a stay's last prediction time: on that row only (earlier rows read less)
            top = top.join(last.labels.select("stay_id", "prediction_time"), on="stay_id")
            frame = frame.join(top, on=["stay_id", "prediction_time"], how="left", maintain_order="left")
    return frame, dropped


def column_descriptions(task, columns: list[str], meta: dict) -> dict:
    """What each column of a predictions file means (written beside it as <file>.columns.json)."""
    kind = (meta.get("calibration") or {}).get("kind", "none")
    calibration = {"platt": "Platt scaling", "temperature": "temperature scaling"}.get(kind, "none")
    known = {
        "stay_id": "the stay's id (PhysioNet RecordID / patient file number)",
        "prediction_time": "hours since the stay's first recorded hour at which the prediction is made; it reads "
                           "the events up to and including this time",
        "label": f"the true label where the data hold it ({task.positive_label or task.label_rule or task.name}); "
                 "empty for new stays",
        "probability": f"probability of {task.positive_label or 'the positive class'}, " + (
            f"calibrated on the validation stays ({calibration}); use this one" if calibration != "none"
            else "uncalibrated (the checkpoint has no calibration)"),
        "logit": "the model's raw output before calibration (log-odds); for ranking only",
        "alarm": "probability >= the decision threshold chosen on validation " + (
            f"({meta['decision'].get('metric', '')} {meta['decision']['threshold']:.4f})" if meta.get("decision") else ""),
        "predicted_class": "the index of the most probable class (" + ", ".join(
            f"{k} = {c}" for k, c in enumerate(task.classes or ())) + ")",
        "prediction": f"the predicted value ({task.label_rule or task.name})",
        "top_variables": "the model's three most attended variables for this stay, as 'name (weight)': channel-"
                         "attention weights over all variables sum to 1, so a weight is that variable's share; "
                         "given on the stay's last prediction time only (earlier rows read less of the stay)",
    }  # fmt: skip
    for k, c in enumerate(task.classes or ()):
        known[f"p_{k}"] = f"probability of class {k} ({c}), " + (
            f"calibrated on validation ({calibration})" if calibration != "none" else "uncalibrated") + "; rows sum to 1"
    return {"task": task.name, "label_type": task.label_type,
            "columns": {c: known.get(c, "") for c in columns}}  # fmt: skip


@torch.no_grad()
def top_variables(estimator, view: EventData, ids, batch_size: int = 64) -> pl.DataFrame | None:
    """stay_id, top_variables ("name (weight), ..." at the stay's last prediction time), or None
    for a model without per-variable weights."""
    dataset = EventSequenceDataset(view, ids, estimator.normalizer, max_events=estimator.train.max_events,
                                   unknown_variables="drop")  # fmt: skip
    names = estimator.normalizer.variables
    top: list[str] = [""] * len(dataset)
    estimator.model.eval()
    for indices in LengthBucketSampler(dataset.lengths, batch_size, shuffle=False):
        out = estimator.model(collate([dataset[i] for i in indices]))
        if out.channel_importance is None:
            return None
        best = out.channel_importance.topk(min(TOP_K, len(names)), dim=1)
        for row, i in enumerate(indices):
            top[i] = ", ".join(f"{names[v]} ({w:.2f})" for v, w in zip(best.indices[row].tolist(), best.values[row].tolist(), strict=True))
    return pl.DataFrame({"stay_id": np.asarray(dataset.stay_ids, dtype=np.int64), "top_variables": top})
