"""Binary-outcome metrics with bootstrap confidence intervals, and summaries across runs.

Two definitions of "AUPRC" are in use in this literature; both are reported, labelled:
``ap`` is average precision (step-wise, scikit-learn's `average_precision_score`) and
``auprc_trapz`` is the trapezoidal area under the precision-recall curve (which is optimistic
for the step-shaped curve). ``min_re_pr`` is STraTS's max over thresholds of min(recall,
precision). ``ece`` is the expected calibration error over 10 equal-width probability bins.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import auc, average_precision_score, brier_score_loss, precision_recall_curve, roc_auc_score

from hymate.errors import HymateError

METRICS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "brier", "ece")


def _check(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise HymateError(f"labels and predictions differ in length: {y.shape[0]} vs {p.shape[0]}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise HymateError("labels must be 0 or 1 (no NaN)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise HymateError("predicted probabilities must be finite and within [0, 1]")
    if y.min() == y.max():
        raise HymateError("metrics need both classes among the labels")
    return y, p


def min_recall_precision(y_true, y_prob) -> float:
    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    return float(np.max(np.minimum(precision, recall)))


def expected_calibration_error(y_true, y_prob, bins: int = 10) -> float:
    y, p = np.asarray(y_true, float), np.asarray(y_prob, float)
    # Bin i holds p in [i/bins, (i+1)/bins); p == 1 goes in the last bin.
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins))
    return float(gap.sum() / len(y))  # sum over bins of n_b/N * |mean(y)_b - mean(p)_b|


def binary_metrics(y_true, y_prob) -> dict[str, float]:
    y, p = _check(y_true, y_prob)
    precision, recall, _ = precision_recall_curve(y, p)
    return {
        "auroc": float(roc_auc_score(y, p)),
        "ap": float(average_precision_score(y, p)),
        "auprc_trapz": float(auc(recall, precision)),
        "min_re_pr": float(np.max(np.minimum(precision, recall))),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
    }


def bootstrap_ci(
    y_true, y_prob, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs, resampling stays with replacement within each class.

    Resampling within class keeps the positive rate fixed, so every resample has both classes.
    """
    y, p = _check(y_true, y_prob)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = {m: np.empty(n_boot) for m in METRICS}
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for name, value in binary_metrics(y[idx], p[idx]).items():
            draws[name][b] = value
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {m: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for m, v in draws.items()}


def summarise_runs(runs: list[dict[str, float]], metrics=METRICS) -> dict[str, dict[str, float]]:
    """Mean and sample sd (ddof=1) of each metric across runs (seeds or splits)."""
    out = {}
    for m in metrics:
        values = [r[m] for r in runs if m in r and r[m] is not None and not math.isnan(r[m])]
        if values:
            out[m] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                      "n": len(values)}  # fmt: skip
    return out
