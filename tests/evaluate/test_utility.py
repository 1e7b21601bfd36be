"""The PhysioNet 2019 utility score: hand-computed cases, and a slow reference of the definition.

Notation in the comments: t is the row position within a stay, first = the first row labelled 1,
t_sepsis = first + 6, d = t - t_sepsis. Utility of each row (defaults of the challenge):
  septic, predicted 1: max(-0.05, (d + 12) / 6) for d <= -6, then (3 - d) / 9 up to d = 3, then 0;
  septic, predicted 0: 0 for d <= -6, then -2 (d + 6) / 9 up to d = 3, then 0;
  non-septic: -0.05 for each 1, 0 for each 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from hymate.errors import HymateError
from hymate.evaluate.utility import best_threshold, stay_utility, utility_score


def septic_labels(n: int, first: int) -> np.ndarray:
    return (np.arange(n) >= first).astype(int)


def ones_at(n: int, rows) -> np.ndarray:
    pred = np.zeros(n, dtype=int)
    pred[list(rows)] = 1
    return pred


# --- one stay, by hand -------------------------------------------------------------------
def test_non_septic_stay_pays_for_each_false_alarm():
    # 3 hours predicted 1 on a stay that never has sepsis: 3 * -0.05; the 0s cost nothing.
    assert stay_utility([0, 0, 0, 0, 0], [0, 1, 1, 0, 1]) == pytest.approx(-0.15)
    assert stay_utility([0, 0, 0], [0, 0, 0]) == 0.0


def test_the_challenge_documentation_example():
    # first = 4, t_sepsis = 10; rows 2..5 predicted 1 at d = -8, -7, -6, -5:
    # 4/6 + 5/6 + 1 + 8/9 = 3.3888...
    assert stay_utility([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(4 / 6 + 5 / 6 + 1 + 8 / 9)


# A septic stay of 20 hours labelled 1 from row 10: t_sepsis = 16, d = t - 16 runs from -16 to 3.
N, FIRST = 20, 10
LABELS = septic_labels(N, FIRST)
# Inaction: no reward before d = -6; rows 11..19 (d = -5..3) each lose 2 (d + 6) / 9:
# -(2 + 4 + ... + 18) / 9 = -90 / 9 = -10.
INACTION = -10.0
# Optimal: 1 on rows 4..19 (d = -12..3): rising (d + 12) / 6 = 0, 1/6, ..., 1 (sum 21/6 = 3.5),
# falling (3 - d) / 9 for d = -5..3 = 8/9 + ... + 0 (sum 36/9 = 4): 7.5.
OPTIMAL = 7.5


def test_alarm_from_the_optimal_time_onwards():
    # 1 from row 10 (d = -6) on: 1 + (8 + 7 + ... + 0) / 9 = 1 + 4 = 5.
    assert stay_utility(LABELS, ones_at(N, range(10, N))) == pytest.approx(5.0)
    # A single alarm exactly at d = -6 earns 1, and the later 0s still miss: 1 - 10 = -9.
    assert stay_utility(LABELS, ones_at(N, [10])) == pytest.approx(-9.0)


def test_early_late_and_missed_predictions():
    # Early, rows 0..5 (d = -16..-11): four alarms before dt_early at -0.05 each, 0 at d = -12,
    # 1/6 at d = -11; then the 0s from d = -5 on lose 10.
    assert stay_utility(LABELS, ones_at(N, range(0, 6))) == pytest.approx(-0.2 + 1 / 6 - 10)
    # Always 1 (d = -16..3): -0.2 + 3.5 + 4 = 7.3.
    assert stay_utility(LABELS, np.ones(N, int)) == pytest.approx(7.3)
    # Late, rows 16..19 (d = 0..3): (3 + 2 + 1 + 0) / 9 = 6/9; missed rows 11..15 (d = -5..-1):
    # -(2 + 4 + 6 + 8 + 10) / 9 = -30/9; total -24/9.
    assert stay_utility(LABELS, ones_at(N, range(16, N))) == pytest.approx(-24 / 9)
    # Missed entirely: the inaction utility.
    assert stay_utility(LABELS, np.zeros(N, int)) == pytest.approx(INACTION)


def test_nothing_counts_after_dt_late():
    # 30 hours, labelled from row 10: rows 20..29 have d = 4..13, past dt_late = 3.
    labels = septic_labels(30, FIRST)
    assert stay_utility(labels, ones_at(30, range(20, 30))) == pytest.approx(INACTION)
    assert stay_utility(labels, ones_at(30, range(4, 30))) == pytest.approx(OPTIMAL)


def test_stays_shorter_than_the_window():
    # Labelled 1 from the first row, 3 hours: t_sepsis = 6, d = -6, -5, -4.
    # Optimal (all three rows are in d = -12..3): 1 + 8/9 + 7/9; inaction: 0 - 2/9 - 4/9.
    labels = [1, 1, 1]
    assert stay_utility(labels, [1, 1, 1]) == pytest.approx(1 + 15 / 9)
    assert stay_utility(labels, [0, 0, 0]) == pytest.approx(-6 / 9)
    score = utility_score([7, 7, 7], labels, [1, 1, 1])
    assert score.optimal == pytest.approx(1 + 15 / 9) and score.normalized == pytest.approx(1.0)
    # Labelled from row 1 of 2 rows: t_sepsis = 7, d = -7, -6: optimal 5/6 + 1.
    assert utility_score([1, 1], [0, 1], [1, 1]).optimal == pytest.approx(5 / 6 + 1)


# --- several stays, normalised ----------------------------------------------------------
def cohort():
    """The 20-hour septic stay (id 1), a 5-hour non-septic stay (id 2), the 3-hour one (id 3)."""
    ids = np.r_[np.full(N, 1), np.full(5, 2), np.full(3, 3)]
    labels = np.r_[LABELS, np.zeros(5, int), np.ones(3, int)]
    return ids, labels


def test_normalisation_is_one_for_the_optimal_policy_and_zero_for_inaction():
    ids, labels = cohort()
    optimal = np.r_[ones_at(N, range(4, N)), np.zeros(5, int), np.ones(3, int)]
    score = utility_score(ids, labels, optimal)
    assert score.optimal == pytest.approx(OPTIMAL + 0 + 1 + 15 / 9)
    assert score.inaction == pytest.approx(INACTION + 0 - 6 / 9)
    assert score.normalized == pytest.approx(1.0)
    assert utility_score(ids, labels, np.zeros(len(ids), int)).normalized == pytest.approx(0.0)
    assert (score.stays, score.septic_stays) == (3, 2)
    # Alarm from d = -6 on the long stay (5), two false alarms (-0.1), nothing on stay 3 (-6/9):
    observed = np.r_[ones_at(N, range(10, N)), [1, 1, 0, 0, 0], [0, 0, 0]]
    expected = (5 - 0.1 - 6 / 9 - (INACTION - 6 / 9)) / (OPTIMAL + 1 + 15 / 9 - (INACTION - 6 / 9))
    assert utility_score(ids, labels, observed).normalized == pytest.approx(expected)


def test_times_order_the_rows_and_shuffled_input_gives_the_same_score():
    ids, labels = cohort()
    pred = np.r_[ones_at(N, range(10, N)), [1, 1, 0, 0, 0], [0, 1, 0]]
    times = np.r_[np.arange(N) + 3.0, np.arange(5) + 1.0, np.arange(3) + 40.0]  # ICULOS need not start at 0
    perm = np.random.default_rng(0).permutation(len(ids))
    a = utility_score(ids, labels, pred)
    b = utility_score(ids[perm], labels[perm], pred[perm], times=times[perm])
    assert a == b


def test_no_septic_stay_gives_nan_and_bad_input_is_rejected():
    assert np.isnan(utility_score([1, 1, 2], [0, 0, 0], [1, 0, 0]).normalized)
    with pytest.raises(HymateError, match="0 or 1"):
        utility_score([1, 1], [0, 1], [0.3, 1])
    with pytest.raises(HymateError, match="labels must be 0 or 1"):
        utility_score([1, 1], [0, 2], [0, 1])
    with pytest.raises(HymateError, match="contiguous"):
        utility_score([1, 2, 1], [0, 0, 0], [0, 0, 0])
    with pytest.raises(HymateError, match="differ in length"):
        utility_score([1, 1], [0, 0, 0], [0, 0, 0])
    with pytest.raises(HymateError, match="two rows at time"):
        utility_score([1, 1], [0, 0], [0, 0], times=[2, 2])


# --- against a slow, literal reading of the definition ------------------------------------
def slow_stay_utility(labels, predictions) -> float:
    labels = list(labels)
    if 1 in labels:
        t_sepsis = labels.index(1) + 6
    total = 0.0
    for t, p in enumerate(predictions):
        if 1 not in labels:
            total += -0.05 if p else 0.0
            continue
        d = t - t_sepsis
        if d > 3:
            continue
        if p:
            total += max(-0.05, (d + 12) / 6) if d <= -6 else (3 - d) / 9
        elif d > -6:
            total += -2 * (d + 6) / 9
    return total


def random_cohort(rng, n_stays=60):
    ids, labels = [], []
    for s in range(n_stays):
        n = int(rng.integers(1, 50))
        first = int(rng.integers(0, n)) if rng.random() < 0.4 else n
        ids += [s] * n
        labels += list(septic_labels(n, first))
    return np.array(ids), np.array(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_utility_matches_the_slow_reference(seed):
    rng = np.random.default_rng(seed)
    ids, labels = random_cohort(rng)
    pred = (rng.random(len(ids)) < 0.3).astype(int)
    total = sum(slow_stay_utility(labels[ids == s], pred[ids == s]) for s in np.unique(ids))
    assert utility_score(ids, labels, pred).observed == pytest.approx(total)


@pytest.mark.parametrize("seed", [0, 1])
def test_best_threshold_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    ids, labels = random_cohort(rng)
    prob = np.round(np.clip(0.3 * labels + rng.random(len(ids)) * 0.7, 0, 1), 2)  # ties on purpose
    threshold, score = best_threshold(ids, labels, prob)
    brute = {c: utility_score(ids, labels, (prob >= c).astype(int)).normalized for c in [*np.unique(prob), np.inf]}
    top = max(brute.values())
    assert score.normalized == pytest.approx(top)
    assert threshold == max(c for c, u in brute.items() if u >= top - 1e-9)  # ties: the highest threshold
    assert score == utility_score(ids, labels, (prob >= threshold).astype(int))
    grid = np.linspace(0, 1, 11)
    t_grid, s_grid = best_threshold(ids, labels, prob, thresholds=grid)
    best_on_grid = max(utility_score(ids, labels, (prob >= c).astype(int)).normalized for c in grid)
    assert t_grid in grid and s_grid.normalized == pytest.approx(best_on_grid)


def test_best_threshold_by_hand():
    # The 20-hour septic stay scored 0.9 on rows 4..19 (its optimal window) and 0.5 before;
    # a non-septic stay scored 0.6 on 3 rows. Threshold 0.9 gives the optimal policy exactly.
    ids = np.r_[np.full(N, 1), np.full(3, 2)]
    labels = np.r_[LABELS, [0, 0, 0]]
    prob = np.r_[np.full(4, 0.5), np.full(16, 0.9), [0.6, 0.6, 0.6]]
    threshold, score = best_threshold(ids, labels, prob)
    assert threshold == 0.9 and score.normalized == pytest.approx(1.0)
    # A non-septic cohort: any alarm only costs, so the best is never to predict 1.
    threshold, score = best_threshold([1, 1, 2], [0, 0, 0], [0.2, 0.8, 0.5])
    assert threshold == np.inf and score.observed == 0.0
