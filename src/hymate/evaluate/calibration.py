"""Platt scaling: a monotone map of logits to probabilities fitted on validation predictions.

Training with a positive-class weight inflates predicted risks; refitting p = sigmoid(a z + b)
on the validation set restores calibration without changing the ranking (AUROC, AP).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(labels).astype(int))
    a = float(lr.coef_[0, 0])
    return (a, float(lr.intercept_[0])) if a > 0 else (1.0, 0.0)  # never invert a ranking


def apply_platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * np.asarray(logits, dtype=np.float64) + b)))
