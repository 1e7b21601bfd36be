"""From a model's raw outputs to a task's predictions, scores and decisions, by label type.

Raw outputs are [N, K] per prediction row: a logit (binary), K class logits (multiclass) or a
standardised value (regression, with the training targets' mean and sd in ``target``).

- Calibration is fitted on validation and shipped with the model: Platt scaling (binary),
  temperature scaling (multiclass), none (regression: the value is de-standardised).
- The selection score is what validation maximises (the epoch, the tabular grid point):
  ``auroc+ap``, ``utility`` (P19: the challenge utility at its best threshold), ``macro_auroc``
  or ``neg_mae``.
- A decision metric (``utility``) has its threshold chosen on validation, then applied to test.
- Confidence intervals resample stays: with one prediction per stay that is the usual bootstrap;
  with many, all of a stay's rows move together (its hours are not independent).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hymate.errors import HymateError
from hymate.evaluate.calibration import apply_platt, apply_temperature, fit_platt, fit_temperature, softmax
from hymate.evaluate.metrics import METRICS_BY_TYPE, binary_metrics, bootstrap_task_ci, task_metrics
from hymate.evaluate.utility import best_threshold, utility_score

# What validation maximises, by label type (a task may name another, e.g. "utility").
DEFAULT_SELECTION = {"binary": "auroc+ap", "multiclass": "macro_auroc", "regression": "neg_mae"}


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -50, 50)))


def uncalibrated(label_type: str, raw: np.ndarray, target: dict | None = None) -> np.ndarray:
    """Predictions before calibration: probabilities [N] / [N, K], or values [N]."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if label_type == "binary":
        return sigmoid(raw[:, 0])
    if label_type == "multiclass":
        return softmax(raw)
    target = target or {"mean": 0.0, "sd": 1.0}
    return raw[:, 0] * target["sd"] + target["mean"]


def fit_calibration(label_type: str, raw: np.ndarray, labels: np.ndarray) -> dict:
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if label_type == "binary":
        a, b = fit_platt(raw[:, 0], labels)
        return {"kind": "platt", "a": a, "b": b}
    if label_type == "multiclass":
        return {"kind": "temperature", "temperature": fit_temperature(raw, labels.astype(np.int64))}
    return {"kind": "none"}


def predictions(label_type: str, raw: np.ndarray, calibration: dict | None, target: dict | None = None) -> np.ndarray:
    """Calibrated predictions: probability [N] (binary), [N, K] (multiclass), value [N] (regression)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    kind = (calibration or {}).get("kind", "none")
    if label_type == "binary" and kind == "platt":
        return apply_platt(raw[:, 0], calibration["a"], calibration["b"])
    if label_type == "multiclass" and kind == "temperature":
        return apply_temperature(raw, calibration["temperature"])
    return uncalibrated(label_type, raw, target)


def selection_score(metric: str, label_type: str, y: np.ndarray, pred: np.ndarray, stay_ids: np.ndarray) -> dict:
    """The validation score `metric` and the metrics shown beside it ({"score": ..., name: value})."""
    if label_type == "binary" and len(np.unique(y)) < 2:
        return {}
    if metric == "utility":
        _, utility = best_threshold(stay_ids, y, pred)
        m = binary_metrics(y, pred)
        return {"auroc": m["auroc"], "ap": m["ap"], "utility": utility.normalized, "score": utility.normalized}
    if metric == "auroc+ap":
        m = binary_metrics(y, pred)
        return {"auroc": m["auroc"], "ap": m["ap"], "score": m["auroc"] + m["ap"]}
    if metric == "macro_auroc":
        m = task_metrics("multiclass", y, pred)
        return {"accuracy": m["accuracy"], "macro_auroc": m["macro_auroc"], "score": m["macro_auroc"]}
    if metric == "neg_mae":
        m = task_metrics("regression", y, pred)
        return {"mae": m["mae"], "r2": m["r2"], "score": -m["mae"]}
    raise HymateError(f"unknown selection metric {metric!r}")


def choose_threshold(metric: str, stay_ids: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict:
    if metric != "utility":
        raise HymateError(f"unknown decision metric {metric!r}")
    threshold, score = best_threshold(stay_ids, y, p)
    return {"metric": metric, "threshold": threshold, "val_utility": score.normalized}


def decision_metrics(decision: dict, stay_ids: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict:
    score = utility_score(stay_ids, y, (p >= decision["threshold"]).astype(np.int64))
    return {"utility": score.normalized, "stays": score.stays, "septic_stays": score.septic_stays}


def evaluate_rows(label_type: str, y: np.ndarray, pred: np.ndarray, stay_ids: np.ndarray, n_boot: int = 1000,
                  seed: int = 0) -> tuple[dict, dict]:  # fmt: skip
    """Metrics of the label type and their 95 % bootstrap CIs (stays resampled; see the module docstring)."""
    metrics = task_metrics(label_type, y, pred)
    if n_boot <= 0:
        return metrics, {}
    if len(np.unique(stay_ids)) == len(stay_ids):
        return metrics, bootstrap_task_ci(label_type, y, pred, n_boot=n_boot, seed=seed)
    return metrics, cluster_bootstrap_ci(label_type, y, pred, stay_ids, n_boot, seed)


def cluster_bootstrap_ci(label_type: str, y, pred, stay_ids, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile CIs resampling whole stays with replacement (stratified by a stay's having a positive row, for binary)."""
    y, pred, stay_ids = np.asarray(y), np.asarray(pred), np.asarray(stay_ids)
    order = np.argsort(stay_ids, kind="stable")
    sorted_ids = stay_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    strata = [np.arange(len(starts))]
    if label_type == "binary":
        positive = np.maximum.reduceat(y[order], starts) > 0.5
        strata = [np.flatnonzero(positive), np.flatnonzero(~positive)]
    rng = np.random.default_rng(seed)
    names = METRICS_BY_TYPE[label_type]
    draws = {m: [] for m in names}
    for _ in range(n_boot):
        stays = np.concatenate([rng.choice(s, len(s)) for s in strata if len(s)])
        lens = (ends - starts)[stays]
        first = np.repeat(starts[stays] - np.r_[0, np.cumsum(lens)[:-1]], lens)
        rows = order[first + np.arange(lens.sum())]
        try:
            m = task_metrics(label_type, y[rows], pred[rows])
        except HymateError:  # a resample without one of the classes
            continue
        for k in names:
            draws[k].append(m[k])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in draws.items() if v}


def prediction_frame(task, rows: pl.DataFrame, raw: np.ndarray, pred: np.ndarray, decision: dict | None) -> pl.DataFrame:
    """stay_id, prediction_time, label and the predictions of the label type: `probability`
    (calibrated) and `logit` (binary; `alarm` with a decision threshold), `p_<class>` and
    `predicted_class` (multiclass), `prediction` (regression)."""
    frame = rows.select("stay_id", "prediction_time", "label")
    if task.label_type == "binary":
        frame = frame.with_columns(probability=pl.Series(pred), logit=pl.Series(np.asarray(raw)[:, 0].astype(np.float64)))
        if decision:
            frame = frame.with_columns(alarm=pl.col("probability") >= decision["threshold"])
    elif task.label_type == "multiclass":
        frame = frame.with_columns(*(pl.Series(f"p_{k}", pred[:, k]) for k in range(pred.shape[1])),
                                   predicted_class=pl.Series(pred.argmax(axis=1).astype(np.int64)))  # fmt: skip
    else:
        frame = frame.with_columns(prediction=pl.Series(pred))
    return frame
