"""Metrics against slow, obviously-correct references and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hymate.errors import HymateError
from hymate.evaluate.metrics import binary_metrics, bootstrap_ci, expected_calibration_error, summarise_runs


def slow_auroc(y, p):
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def slow_pr_points(y, p):
    """(recall, precision) at every distinct threshold, highest threshold first, plus (0, 1)."""
    points = [(0.0, 1.0)]
    for t in sorted(set(p), reverse=True):
        pred = p >= t
        tp = np.sum(pred & (y == 1))
        points.append((tp / np.sum(y == 1), tp / np.sum(pred)))
    return points


def slow_ece(y, p, bins=10):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if inside.any():
            total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_slow_references(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.15).astype(float)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1).round(2)  # rounding makes ties
    m = binary_metrics(y, p)
    assert m["auroc"] == pytest.approx(slow_auroc(y, p), abs=1e-12)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    pts = slow_pr_points(y, p)
    ap = sum((r1 - r0) * pr1 for (r0, _), (r1, pr1) in zip(pts, pts[1:], strict=False))
    trapz = sum((r1 - r0) * (p0 + p1) / 2 for (r0, p0), (r1, p1) in zip(pts, pts[1:], strict=False))
    assert m["ap"] == pytest.approx(ap, abs=1e-12)
    assert m["auprc_trapz"] == pytest.approx(trapz, abs=1e-12)
    assert m["min_re_pr"] == pytest.approx(max(min(r, pr) for r, pr in pts), abs=1e-12)
    assert m["ece"] == pytest.approx(slow_ece(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)


def test_calibrated_predictions_have_small_ece_and_miscalibrated_large():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, p**3) > 0.15


def test_bootstrap_ci_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(float)
    p = np.clip(0.4 * y + rng.random(400) * 0.6, 0, 1)
    point = binary_metrics(y, p)
    ci = bootstrap_ci(y, p, n_boot=200, seed=1)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi and lo < hi, name
    assert ci == bootstrap_ci(y, p, n_boot=200, seed=1)


def test_bad_inputs_are_named():
    with pytest.raises(HymateError, match="both classes"):
        binary_metrics([1, 1], [0.2, 0.3])
    with pytest.raises(HymateError, match="differ in length"):
        binary_metrics([0, 1], [0.2])
    with pytest.raises(HymateError, match="within \\[0, 1\\]"):
        binary_metrics([0, 1], [0.2, np.nan])


def test_summarise_runs_uses_sample_sd():
    s = summarise_runs([{"auroc": 0.8}, {"auroc": 0.9}, {"auroc": 0.85}])
    assert s["auroc"]["mean"] == pytest.approx(0.85) and s["auroc"]["sd"] == pytest.approx(0.05)
