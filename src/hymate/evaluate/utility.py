"""The PhysioNet/CinC Challenge 2019 normalised utility score, and the threshold that maximises it.

Definition (Reyna et al., Crit Care Med 2020; the challenge's ``evaluate_sepsis_score.py``).
Each stay is a sequence of hourly rows t = 0, 1, ..., n-1 (row positions, not ICULOS values)
with a label and a binary prediction. A stay is septic if any label is 1; its onset is
``t_sepsis = (first row labelled 1) + 6``, since the labels turn 1 six hours before the onset.
With ``d = t - t_sepsis`` and the defaults dt_early = -12, dt_optimal = -6, dt_late = +3:

- septic stay, predicted 1 (true positive): ``max(u_fp, (d - dt_early) / (dt_optimal - dt_early))``
  up to d = dt_optimal (0 at dt_early, 1 at dt_optimal; earlier alarms cost u_fp like a false
  alarm), then falling linearly to 0 at dt_late;
- septic stay, predicted 0 (false negative): 0 up to dt_optimal, then falling linearly to
  min_u_fn = -2 at dt_late;
- septic stay, any prediction after dt_late: 0 (the stay's outcome is settled);
- non-septic stay: u_fp = -0.05 for every hour predicted 1, u_tn = 0 for every hour predicted 0.

The utility of a set of stays is the sum over all rows. It is normalised as
``(observed - inaction) / (optimal - inaction)``: inaction predicts 0 everywhere; the optimal
policy predicts 1 exactly on the rows with dt_early <= d <= dt_late of septic stays (rows
max(0, t_sepsis + dt_early) .. t_sepsis + dt_late that exist). So the optimal policy scores 1
and inaction 0. The normalised score is NaN when there is no septic stay (optimal = inaction).

Everything is vectorised over all rows of all stays at once: each row's utility depends only on
its own prediction and its stay's labels, so the utility is a sum of per-row terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hymate.errors import HymateError

DT_EARLY = -12
DT_OPTIMAL = -6
DT_LATE = 3
MAX_U_TP = 1.0
MIN_U_FN = -2.0
U_FP = -0.05
U_TN = 0.0


@dataclass(frozen=True)
class UtilityScore:
    normalized: float  # (observed - inaction) / (optimal - inaction); NaN without septic stays
    observed: float
    optimal: float
    inaction: float
    stays: int
    septic_stays: int


@dataclass(frozen=True)
class _Rows:
    """Per-row utilities of predicting 1 (`if_one`) and 0 (`if_zero`), and the optimal policy."""

    if_one: np.ndarray
    if_zero: np.ndarray
    optimal: np.ndarray  # bool: the optimal policy predicts 1 here
    stays: int
    septic_stays: int


def row_utilities(stay_ids, labels, times=None) -> _Rows:
    """Utilities of predicting 1 and 0 at every row, from the stays' labels alone.

    Rows are ordered by `times` within each stay when given; otherwise each stay's rows must be
    contiguous and already in time order.
    """
    stay, y, _ = _prepare(stay_ids, labels, None, times)
    n = len(y)
    if n == 0:
        return _Rows(np.zeros(0), np.zeros(0), np.zeros(0, bool), 0, 0)
    starts = np.flatnonzero(np.r_[True, stay[1:] != stay[:-1]])
    sizes = np.diff(np.r_[starts, n])
    t = np.arange(n) - np.repeat(starts, sizes)  # row position within its stay: 0, 1, ...
    # First labelled-1 row of each stay (n if none), then t_sepsis on every row.
    first = np.minimum.reduceat(np.where(y, t, n), starts)
    septic_stay = first < n
    septic = np.repeat(septic_stay, sizes)
    d = (t - np.repeat(first - DT_OPTIMAL, sizes)).astype(float)  # t - t_sepsis
    # u = m * d + b on each segment, as in the challenge's definition.
    m1, m2, m3 = (
        MAX_U_TP / (DT_OPTIMAL - DT_EARLY),
        -MAX_U_TP / (DT_LATE - DT_OPTIMAL),
        MIN_U_FN / (DT_LATE - DT_OPTIMAL),
    )
    b1, b2, b3 = -m1 * DT_EARLY, -m2 * DT_LATE, -m3 * DT_OPTIMAL
    rising, falling = d <= DT_OPTIMAL, (d > DT_OPTIMAL) & (d <= DT_LATE)
    tp = np.where(rising, np.maximum(m1 * d + b1, U_FP), np.where(falling, m2 * d + b2, 0.0))
    fn = np.where(falling, m3 * d + b3, 0.0)
    if_one = np.where(septic, tp, U_FP)
    if_zero = np.where(septic, fn, U_TN)
    optimal = septic & (d >= DT_EARLY) & (d <= DT_LATE)
    return _Rows(if_one, if_zero, optimal, len(starts), int(septic_stay.sum()))


def utility_score(stay_ids, labels, predictions, times=None) -> UtilityScore:
    """The challenge's normalised utility of binary hourly `predictions` (0/1 or bool).

    `stay_ids`, `labels` and `predictions` have one entry per stay-hour. Rows are ordered by
    `times` within each stay when given; otherwise each stay's rows must be contiguous and in
    time order (as in ``EventData.labels``, which is sorted by stay_id, prediction_time).
    """
    stay, y, pred = _prepare(stay_ids, labels, predictions, times)
    if not np.isin(pred, (0, 1)).all():
        raise HymateError("predictions must be 0 or 1 (threshold probabilities first, or use best_threshold)")
    rows = row_utilities(stay, y)
    return _score(rows, float(np.where(pred == 1, rows.if_one, rows.if_zero).sum()))


def stay_utility(labels, predictions) -> float:
    """Unnormalised utility of one stay's hourly predictions (rows in time order)."""
    labels = np.asarray(labels)
    return utility_score(np.zeros(len(labels), dtype=np.int64), labels, predictions).observed


def best_threshold(stay_ids, labels, probabilities, times=None, thresholds=None) -> tuple[float, UtilityScore]:
    """The probability threshold (predict 1 where p >= threshold) with the highest utility.

    Without `thresholds`, every distinct probability is tried (exactly, in O(n log n): the
    utility is a sum of per-row terms, so it is a cumulative sum over rows sorted by
    probability), plus +inf (never predict 1). Ties go to the higher threshold (fewer alarms).
    Returns the threshold and its `UtilityScore`; pick it on validation stays, then apply it.
    """
    stay, y, p = _prepare(stay_ids, labels, probabilities, times)
    if not np.isfinite(p).all():
        raise HymateError("probabilities must be finite (no NaN)")
    rows = row_utilities(stay, y)
    order = np.argsort(-p, kind="stable")
    p_desc = p[order]
    gain = np.cumsum((rows.if_one - rows.if_zero)[order])  # utility - inaction when the top k+1 rows are 1
    if thresholds is None:
        last_of_value = np.flatnonzero(np.r_[p_desc[1:] != p_desc[:-1], True])  # p >= p_desc[k] selects 0..k
        candidates = np.r_[np.inf, p_desc[last_of_value]]
        gains = np.r_[0.0, gain[last_of_value]]
    else:
        candidates = np.sort(np.asarray(thresholds, dtype=float))[::-1]
        k = np.searchsorted(-p_desc, -candidates, side="right")  # rows with p >= threshold
        gains = np.where(k > 0, gain[np.maximum(k - 1, 0)], 0.0)
    # The highest threshold among (rounding-level) ties; its score is then summed exactly.
    best = int(np.flatnonzero(gains >= gains.max() - 1e-9 * max(1.0, abs(gains.max())))[0])
    threshold = float(candidates[best])
    return threshold, _score(rows, float(np.where(p >= threshold, rows.if_one, rows.if_zero).sum()))


def _score(rows: _Rows, observed: float) -> UtilityScore:
    inaction = float(rows.if_zero.sum())
    optimal = float(np.where(rows.optimal, rows.if_one, rows.if_zero).sum())
    normalized = (observed - inaction) / (optimal - inaction) if optimal != inaction else float("nan")
    return UtilityScore(normalized, observed, optimal, inaction, rows.stays, rows.septic_stays)


def _prepare(stay_ids, labels, values, times) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and order the inputs: rows of each stay contiguous and in time order."""
    stay = np.asarray(stay_ids).ravel()
    y = np.asarray(labels).ravel()
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise HymateError("labels must be 0 or 1 (no NaN)")
        y = y.astype(bool)
    v = None if values is None else np.asarray(values, dtype=float).ravel()
    lengths = {len(stay), len(y)} | ({len(v)} if v is not None else set())
    if times is not None:
        times = np.asarray(times, dtype=float).ravel()
        lengths.add(len(times))
    if len(lengths) != 1:
        raise HymateError(f"stay ids, labels, predictions and times differ in length: {sorted(lengths)}")
    if times is not None:
        order = np.lexsort((times, stay))
        stay, y, times = stay[order], y[order], times[order]
        v = None if v is None else v[order]
        same = (stay[1:] == stay[:-1]) & (times[1:] == times[:-1])
        if same.any():
            i = int(np.flatnonzero(same)[0])
            raise HymateError(f"stay {stay[i]} has two rows at time {times[i]}")
    elif len(stay):
        runs = int(np.count_nonzero(stay[1:] != stay[:-1])) + 1
        if runs != len(np.unique(stay)):
            raise HymateError("each stay's rows must be contiguous (or pass times to order them)")
    return stay, y, v
