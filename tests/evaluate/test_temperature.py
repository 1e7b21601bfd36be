"""Temperature scaling (Guo et al. 2017) and the softmax helper."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax
from sklearn.metrics import log_loss

from hymate.errors import HymateError
from hymate.evaluate.calibration import apply_platt, apply_temperature, fit_platt, fit_temperature, softmax
from hymate.evaluate.metrics import multiclass_metrics


def simulate(seed, n=5000, k=4, scale=1.5):
    """True logits and labels drawn from their softmax (so T = 1 is calibrated for them)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, k)) * scale
    cdf = softmax(true_logits).cumsum(axis=1)
    labels = (rng.random(n)[:, None] > cdf).sum(axis=1)
    return true_logits, np.minimum(labels, k - 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overconfident_logits_get_temperature_near_three(seed):
    true_logits, y = simulate(seed)
    logits = true_logits * 3  # overconfident: dividing by T = 3 recovers the true probabilities
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(logits, t)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), logits.argmax(axis=1))
    before, after = multiclass_metrics(y, softmax(logits)), multiclass_metrics(y, calibrated)
    assert after["log_loss"] < before["log_loss"] and after["ece"] < before["ece"]
    assert after["accuracy"] == before["accuracy"] and after["macro_f1"] == before["macro_f1"]


@pytest.mark.parametrize("seed", [3, 4])
def test_underconfident_logits_get_temperature_below_one_and_it_is_the_minimum(seed):
    true_logits, y = simulate(seed)
    logits = true_logits / 2
    t = fit_temperature(logits, y)
    assert t == pytest.approx(0.5, rel=0.15)

    def nll(temp):
        return log_loss(y, apply_temperature(logits, temp), labels=range(4))

    assert nll(t) < nll(1.0)
    assert nll(t) <= nll(t * 1.05) and nll(t) <= nll(t / 1.05)


def test_temperature_never_changes_the_argmax():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(500, 6)) * 4
    for t in (0.05, 0.3, 1.0, 2.5, 20.0):
        np.testing.assert_array_equal(apply_temperature(logits, t).argmax(axis=1), logits.argmax(axis=1))


def test_fitted_temperature_stays_within_bounds():
    true_logits, y = simulate(6, n=2000)
    t_hot = fit_temperature(true_logits * 100, y)  # wants T ~ 100: stops at the upper bound
    t_cold = fit_temperature(true_logits / 100, y)  # wants T ~ 0.01: stops at the lower bound
    assert 15 < t_hot <= 20.0 and 0.05 <= t_cold < 0.07


def test_degenerate_problems_return_one():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(100, 3))
    assert fit_temperature(logits, np.zeros(100, dtype=int)) == 1.0  # one class
    assert fit_temperature(np.zeros((100, 3)), rng.integers(0, 3, 100)) == 1.0  # T has no effect
    assert fit_temperature(np.ones((100, 1)), np.zeros(100, dtype=int)) == 1.0  # one column


def test_softmax_is_stable_and_float64():
    z = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    p = softmax(z)
    assert p.dtype == np.float64 and np.isfinite(p).all()
    np.testing.assert_allclose(p, scipy_softmax(z.astype(np.float64), axis=1), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p[1], [1 / 3] * 3)
    np.testing.assert_allclose(apply_temperature(z, 1.0), p)
    np.testing.assert_allclose(apply_temperature(z, 2.0), scipy_softmax(z.astype(np.float64) / 2, axis=1))


@pytest.mark.parametrize(
    "logits,labels,match",
    [
        (np.zeros(5), np.zeros(5), "2-D array"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "finite"),
        (np.zeros((3, 2)), np.array([0, 1]), "differ in length: 3 vs 2"),
        (np.zeros((2, 2)), np.array([0, 2]), "out of range"),
        (np.zeros((2, 2)), np.array([0, 0.5]), "integer class indices"),
    ],
)
def test_bad_temperature_inputs_are_named(logits, labels, match):
    with pytest.raises(HymateError, match=match):
        fit_temperature(logits, labels)


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf])
def test_apply_temperature_needs_a_positive_temperature(t):
    with pytest.raises(HymateError, match="positive"):
        apply_temperature(np.zeros((2, 3)), t)


def test_platt_still_calibrates_and_keeps_ranking():
    rng = np.random.default_rng(8)
    z = rng.normal(size=4000) * 2
    y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * z - 1)))).astype(int)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)
    p = apply_platt(z, a, b)
    assert (np.argsort(p, kind="stable") == np.argsort(z, kind="stable")).all()
