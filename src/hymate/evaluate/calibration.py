"""Post-hoc calibration of logits, fitted on validation predictions.

Platt scaling (binary): training with a positive-class weight inflates predicted risks;
refitting p = sigmoid(a z + b) on the validation set restores calibration without changing the
ranking (AUROC, AP).

Temperature scaling (multiclass; Guo et al. 2017, "On Calibration of Modern Neural
Networks"): p = softmax(z / T) with the single T > 0 that minimises the validation
cross-entropy. Dividing every logit of a row by the same T never changes the argmax.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

from hymate.errors import HymateError

TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(labels).astype(int))
    a = float(lr.coef_[0, 0])
    return (a, float(lr.intercept_[0])) if a > 0 else (1.0, 0.0)  # never invert a ranking


def apply_platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * np.asarray(logits, dtype=np.float64) + b)))


def softmax(logits) -> np.ndarray:
    """Softmax over the last axis in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_logits(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise HymateError(f"multiclass logits must be a 2-D array [N, K], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise HymateError("logits must be finite (found NaN or inf)")
    return z


def fit_temperature(logits, labels) -> float:
    """The temperature T in [0.05, 20] minimising the mean cross-entropy of softmax(logits / T).

    logits [N, K], labels [N] integer classes 0..K-1. Returns 1.0 (no change) when the problem
    is degenerate: fewer than two classes among the labels, fewer than two columns, or logits
    constant within every row (T has no effect).
    """
    z = _check_logits(logits)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.shape[0] != z.shape[0]:
        raise HymateError(f"logits and labels differ in length: {z.shape[0]} vs {y.shape[0]}")
    if not np.isfinite(y).all() or (y != np.round(y)).any():
        raise HymateError("labels must be integer class indices (no NaN)")
    if y.size and (y.min() < 0 or y.max() > z.shape[1] - 1):
        raise HymateError(f"labels out of range: found {int(y.min())}..{int(y.max())}, expected 0..{z.shape[1] - 1}")
    y = y.astype(np.int64)
    if z.shape[1] < 2 or np.unique(y).size < 2 or np.ptp(z, axis=1).max() == 0:
        return 1.0
    true_logit = z[np.arange(len(y)), y]

    def nll(log_t: float) -> float:
        inv_t = math.exp(-log_t)
        return float(np.mean(logsumexp(z * inv_t, axis=1) - true_logit * inv_t))

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x)) if np.isfinite(res.x) else 1.0


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Probabilities softmax(logits / T) [N, K] in float64."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise HymateError(f"temperature must be a positive finite number, got {temperature}")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)
