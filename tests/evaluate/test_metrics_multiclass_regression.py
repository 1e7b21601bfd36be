"""Multiclass and regression metrics, the label-type dispatcher and bootstraps, against
scikit-learn and slow hand computations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, r2_score, roc_auc_score

import hymate.evaluate.metrics as M
from hymate.errors import HymateError
from hymate.evaluate.metrics import (
    HIGHER_IS_BETTER,
    LABEL_TYPES,
    METRICS,
    METRICS_BY_TYPE,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    binary_metrics,
    bootstrap_ci,
    bootstrap_task_ci,
    multiclass_metrics,
    regression_metrics,
    task_metrics,
)

EPS = np.finfo(float).eps  # scikit-learn's log_loss clips probabilities to [eps, 1 - eps]


def softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_multiclass(seed, n=400, k=4, signal=1.5, round_to=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = softmax_rows(rng.normal(size=(n, k)) + signal * np.eye(k)[y])
    if round_to is not None:  # rounding makes ties in scores and in confidences
        p = p.round(round_to)
        p /= p.sum(axis=1, keepdims=True)
    return y, p


def slow_top_label_ece(y, p, bins=10):
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if inside.any():
            total += inside.sum() / len(y) * abs(correct[inside].mean() - conf[inside].mean())
    return total


def slow_auroc(pos_mask, score):
    pos, neg = score[pos_mask], score[~pos_mask]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


# --- multiclass point metrics -----------------------------------------------------------------


@pytest.mark.parametrize("seed,k,round_to", [(0, 3, None), (1, 4, 2), (2, 5, None), (3, 6, 1)])
def test_multiclass_metrics_equal_sklearn(seed, k, round_to):
    y, p = make_multiclass(seed, k=k, round_to=round_to)
    m = multiclass_metrics(y, p)
    assert set(m) == set(MULTICLASS_METRICS)
    pred = p.argmax(axis=1)
    labels = list(range(k))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["weighted_auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="weighted"), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=labels, zero_division=0), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=labels), abs=1e-12)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1 - EPS))), abs=1e-9)
    assert m["ece"] == pytest.approx(slow_top_label_ece(y, p), abs=1e-12)
    # Per-class OvR AUROC by the slow pairwise definition, averaged equally and by support.
    per_class = np.array([slow_auroc(y == c, p[:, c]) for c in range(k)])
    support = np.bincount(y, minlength=k)
    assert m["macro_auroc"] == pytest.approx(per_class.mean(), abs=1e-12)
    assert m["weighted_auroc"] == pytest.approx((per_class * support).sum() / support.sum(), abs=1e-12)


def test_multiclass_ece_by_hand():
    p = np.array(
        [
            [0.90, 0.05, 0.05],  # y=0: conf .9, right  -> bin 9
            [0.00, 1.00, 0.00],  # y=1: conf 1.0, right -> bin 9 (1.0 goes in the last bin)
            [0.85, 0.10, 0.05],  # y=1: conf .85, wrong -> bin 8
            [0.40, 0.35, 0.25],  # y=0: conf .4, right  -> bin 4
            [0.20, 0.45, 0.35],  # y=2: conf .45, wrong -> bin 4
            [0.30, 0.30, 0.40],  # y=2: conf .4, right  -> bin 4
        ]
    )
    y = np.array([0, 1, 1, 0, 2, 2])
    # bin 9: 2/6 * |1 - .95| ; bin 8: 1/6 * |0 - .85| ; bin 4: 3/6 * |2/3 - 1.25/3|
    expected = 2 / 6 * 0.05 + 1 / 6 * 0.85 + 3 / 6 * 0.25
    assert expected == pytest.approx(1.7 / 6)
    assert multiclass_metrics(y, p)["ece"] == pytest.approx(expected, abs=1e-12)
    assert multiclass_metrics(y, p)["accuracy"] == pytest.approx(4 / 6)


def test_two_column_multiclass_matches_binary_auroc():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.3).astype(int)
    p1 = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    m = multiclass_metrics(y, np.column_stack([1 - p1, p1]))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert m["weighted_auroc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean((p1 > 0.5) == y))  # a tie at 0.5 predicts class 0


def test_absent_class_uses_the_classes_present():
    y, p = make_multiclass(5, n=300, k=4, round_to=2)
    y[y == 2] = 0  # class 2 is never the label, though it keeps a probability column
    m = multiclass_metrics(y, p)
    present = [0, 1, 3]
    per_class = np.array([slow_auroc(y == c, p[:, c]) for c in present])
    support = np.bincount(y, minlength=4)[present]
    assert m["macro_auroc"] == pytest.approx(per_class.mean(), abs=1e-12)
    assert m["weighted_auroc"] == pytest.approx((per_class * support).sum() / support.sum(), abs=1e-12)
    pred = p.argmax(axis=1)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, pred, average="macro", labels=[0, 1, 2, 3], zero_division=0), abs=1e-12
    )
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert all(np.isfinite(v) for v in m.values())


def test_rows_summing_to_one_within_tolerance_are_accepted():
    y, p = make_multiclass(6, k=5)
    p32 = p.astype(np.float32) * np.float32(1 + 5e-5)  # off by ~5e-5: allowed
    m = multiclass_metrics(y, p32)
    ref = multiclass_metrics(y, p)
    for name in MULTICLASS_METRICS:
        assert m[name] == pytest.approx(ref[name], abs=1e-3), name


def test_metrics_do_not_modify_the_callers_array():
    y, p = make_multiclass(7)
    p_off = p * (1 + 5e-5)
    before = p_off.copy()
    multiclass_metrics(y, p_off)
    bootstrap_task_ci("multiclass", y, p_off, n_boot=5)
    np.testing.assert_array_equal(p_off, before)


GOOD_P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
GOOD_Y = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
    "y,p,match",
    [
        (GOOD_Y, GOOD_P[:, 0], "2-D array"),
        (GOOD_Y, GOOD_P[None], "2-D array"),
        (GOOD_Y, GOOD_P[:, :1] / GOOD_P[:, :1], "at least 2 columns"),
        (GOOD_Y[:3], GOOD_P, "differ in length: 3 vs 4"),
        (GOOD_Y[:, None].repeat(2, axis=1), GOOD_P, "1-D array"),
        (GOOD_Y, GOOD_P * 0.9, "sum to 1"),
        (GOOD_Y, np.vstack([GOOD_P[:3], [0.5, 0.5, 0.1]]), "row 3 sums to 1.1"),
        (np.array([0, 1, 3, 1]), GOOD_P, "out of range: found 0..3, expected 0..2"),
        (np.array([0, -1, 2, 1]), GOOD_P, "out of range"),
        (np.array([0, 1.5, 2, 1]), GOOD_P, "integer class indices"),
        (np.array([0, np.nan, 2, 1]), GOOD_P, "NaN"),
        (GOOD_Y, np.vstack([GOOD_P[:3], [np.nan, 0.5, 0.5]]), "NaN"),
        (GOOD_Y, np.vstack([GOOD_P[:3], [1.2, -0.1, -0.1]]), "within \\[0, 1\\]"),
        (np.array([1, 1, 1, 1]), GOOD_P, "at least two classes"),
        (np.array(["a", "b", "c", "d"]), GOOD_P, "numeric"),
    ],
)
def test_multiclass_bad_inputs_are_named(y, p, match):
    with pytest.raises(HymateError, match=match):
        multiclass_metrics(y, p)
    with pytest.raises(HymateError, match=match):
        bootstrap_task_ci("multiclass", y, p, n_boot=3)


def test_float_labels_with_integer_values_are_accepted():
    assert multiclass_metrics(GOOD_Y.astype(float), GOOD_P) == multiclass_metrics(GOOD_Y, GOOD_P)


# --- regression -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_equal_hand_computation_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = 50 + 10 * rng.normal(size=300)
    f = y + rng.normal(scale=4, size=300)
    m = regression_metrics(y, f)
    assert set(m) == set(REGRESSION_METRICS)
    e = f - y
    assert m["mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-12)
    r2 = 1 - np.sum(e**2) / np.sum((y - y.mean()) ** 2)
    assert m["r2"] == pytest.approx(r2, abs=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, f), abs=1e-12)
    assert regression_metrics(y, np.full_like(y, y.mean()))["r2"] == pytest.approx(0.0, abs=1e-12)
    assert regression_metrics(y, y) == {"mae": 0.0, "rmse": 0.0, "r2": 1.0}


def test_regression_accepts_column_vectors_and_lists():
    m = regression_metrics([[1.0], [2.0], [4.0]], [1.5, 2.0, 3.0])
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(np.sqrt(1.25 / 3))


@pytest.mark.parametrize(
    "y,f,match",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "differ in length: 3 vs 2"),
        ([1.0], [1.0], "at least 2 values"),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "labels must be finite"),
        ([1.0, 2.0, 3.0], [1.0, np.inf, 3.0], "predictions must be finite"),
        (np.ones((3, 2)), np.ones((3, 2)), "1-D array"),
        (["a", "b"], [1.0, 2.0], "numeric"),
    ],
)
def test_regression_bad_inputs_are_named(y, f, match):
    with pytest.raises(HymateError, match=match):
        regression_metrics(y, f)
    with pytest.raises(HymateError, match=match):
        bootstrap_task_ci("regression", y, f, n_boot=3)


# --- dispatch and registry --------------------------------------------------------------------


def test_registry_of_metrics_and_directions():
    assert LABEL_TYPES == ("binary", "multiclass", "regression")
    assert METRICS_BY_TYPE == {"binary": METRICS, "multiclass": MULTICLASS_METRICS, "regression": REGRESSION_METRICS}
    assert MULTICLASS_METRICS == ("accuracy", "macro_auroc", "weighted_auroc", "macro_f1", "log_loss", "ece")
    assert REGRESSION_METRICS == ("mae", "rmse", "r2")
    assert set(HIGHER_IS_BETTER) == set(METRICS) | set(MULTICLASS_METRICS) | set(REGRESSION_METRICS)
    lower = {m for m, higher in HIGHER_IS_BETTER.items() if not higher}
    assert lower == {"brier", "ece", "log_loss", "mae", "rmse"}
    assert all(isinstance(v, bool) for v in HIGHER_IS_BETTER.values())


def test_dead_min_recall_precision_is_gone():
    assert not hasattr(M, "min_recall_precision")


def test_task_metrics_dispatches():
    rng = np.random.default_rng(8)
    yb = (rng.random(200) < 0.3).astype(float)
    pb = np.clip(0.3 * yb + 0.7 * rng.random(200), 0, 1)
    assert task_metrics("binary", yb, pb) == binary_metrics(yb, pb)
    y, p = make_multiclass(8)
    assert task_metrics("multiclass", y, p) == multiclass_metrics(y, p)
    yr, fr = rng.normal(size=50), rng.normal(size=50)
    assert task_metrics("regression", yr, fr) == regression_metrics(yr, fr)
    with pytest.raises(HymateError, match="unknown label type 'ordinal'"):
        task_metrics("ordinal", yr, fr)
    with pytest.raises(HymateError, match="unknown label type"):
        bootstrap_task_ci("survival", yr, fr)


# --- bootstraps -------------------------------------------------------------------------------


def test_binary_bootstrap_is_exactly_bootstrap_ci():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(float)
    p = np.clip(0.4 * y + rng.random(400) * 0.6, 0, 1)
    for seed, level in [(1, 0.95), (7, 0.9)]:
        assert bootstrap_task_ci("binary", y, p, n_boot=40, level=level, seed=seed) == bootstrap_ci(
            y, p, n_boot=40, level=level, seed=seed
        )


@pytest.mark.parametrize("label_type", ["multiclass", "regression"])
def test_bootstrap_contains_the_estimate_and_is_reproducible(label_type):
    rng = np.random.default_rng(9)
    if label_type == "multiclass":
        y, pred = make_multiclass(9, n=500, k=4)
    else:
        y = rng.normal(size=500)
        pred = y + rng.normal(scale=0.8, size=500)
    point = task_metrics(label_type, y, pred)
    ci = bootstrap_task_ci(label_type, y, pred, n_boot=300, seed=1)
    assert tuple(ci) == METRICS_BY_TYPE[label_type]
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi and lo < hi, name
    assert ci == bootstrap_task_ci(label_type, y, pred, n_boot=300, seed=1)
    assert ci != bootstrap_task_ci(label_type, y, pred, n_boot=300, seed=2)
    narrow = bootstrap_task_ci(label_type, y, pred, n_boot=300, level=0.5, seed=1)
    for name in ci:
        assert ci[name][0] <= narrow[name][0] <= narrow[name][1] <= ci[name][1], name


def _record_draws(monkeypatch, name):
    """Wrap M.<name> so every index matrix it receives is kept."""
    seen = []
    original = getattr(M, name)

    def recorder(y, pred, idx):
        seen.append(idx.copy())
        return original(y, pred, idx)

    monkeypatch.setattr(M, name, recorder)
    return seen


@pytest.mark.parametrize("absent", [None, 1])
def test_multiclass_bootstrap_keeps_class_counts_and_matches_slow_loop(monkeypatch, absent):
    y, p = make_multiclass(10, n=240, k=4, round_to=2)
    if absent is not None:
        y[y == absent] = 3
    seen = _record_draws(monkeypatch, "_multiclass_draws")
    ci = bootstrap_task_ci("multiclass", y, p, n_boot=60, level=0.9, seed=3)
    idx = np.concatenate(seen)
    assert idx.shape == (60, len(y))
    counts = np.bincount(y, minlength=4)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=4), counts)
    assert len({row.tobytes() for row in idx}) == 60  # resamples differ
    # The vectorised draws equal multiclass_metrics run on each resample.
    slow = [multiclass_metrics(y[row], p[row]) for row in idx]
    for name in MULTICLASS_METRICS:
        values = np.array([s[name] for s in slow])
        lo, hi = np.percentile(values, 5), np.percentile(values, 95)
        assert ci[name] == pytest.approx((lo, hi), abs=1e-10), name


def test_regression_bootstrap_matches_slow_loop(monkeypatch):
    rng = np.random.default_rng(11)
    y = np.round(rng.normal(size=150), 1)
    f = y + rng.normal(scale=0.5, size=150)
    seen = _record_draws(monkeypatch, "_regression_draws")
    ci = bootstrap_task_ci("regression", y, f, n_boot=80, seed=4)
    idx = np.concatenate(seen)
    assert idx.shape == (80, 150)
    assert any(np.unique(row).size < 150 for row in idx)  # with replacement
    slow = [regression_metrics(y[row], f[row]) for row in idx]
    for name in REGRESSION_METRICS:
        values = np.array([s[name] for s in slow])
        assert ci[name] == pytest.approx((np.percentile(values, 2.5), np.percentile(values, 97.5)), abs=1e-10)


def test_regression_draws_handle_a_constant_resample():
    y = np.array([1.0, 1.0, 2.0, 3.0])
    f = np.array([1.0, 1.5, 2.0, 3.0])
    idx = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [0, 2, 3, 1]])
    d = M._regression_draws(y, f, idx)
    for b, row in enumerate(idx):
        ref = regression_metrics(y[row], f[row])
        for name in REGRESSION_METRICS:
            assert d[name][b] == pytest.approx(ref[name], abs=1e-12), (b, name)


def test_bootstrap_rejects_bad_settings():
    y, p = make_multiclass(12)
    with pytest.raises(HymateError, match="n_boot"):
        bootstrap_task_ci("multiclass", y, p, n_boot=0)
    with pytest.raises(HymateError, match="level"):
        bootstrap_task_ci("multiclass", y, p, level=95)


def test_multiclass_bootstrap_is_fast():
    y, p = make_multiclass(13, n=4000, k=5, signal=1.0)
    start = time.perf_counter()
    ci = bootstrap_task_ci("multiclass", y, p, n_boot=1000)
    assert time.perf_counter() - start < 10
    assert all(lo < hi for lo, hi in ci.values())
