"""Task metrics for binary, multiclass and regression labels, bootstrap CIs, and summaries.

Binary (``METRICS``): two definitions of "AUPRC" are in use in this literature; both are
reported, labelled: ``ap`` is average precision (step-wise, scikit-learn's
`average_precision_score`) and ``auprc_trapz`` is the trapezoidal area under the
precision-recall curve (which is optimistic for the step-shaped curve). ``min_re_pr`` is
STraTS's max over thresholds of min(recall, precision). ``ece`` is the expected calibration
error over 10 equal-width probability bins.

Multiclass (``MULTICLASS_METRICS``, labels 0..K-1, probabilities [N, K]): ``accuracy`` and
``macro_f1`` of the argmax prediction (F1 averaged over all K classes, 0 for a class that is
neither present nor predicted); ``macro_auroc`` / ``weighted_auroc`` are one-vs-rest AUROCs
averaged equally / by class support; ``log_loss`` is the mean cross-entropy; ``ece`` is the
top-label (confidence) ECE: 10 equal-width bins of the max probability, sum over bins of
n_b/N * |accuracy_b - mean confidence_b|.

Regression (``REGRESSION_METRICS``): ``mae``, ``rmse`` and ``r2`` (scikit-learn's `r2_score`,
so a constant target gives 1.0 for a perfect prediction and 0.0 otherwise).

``task_metrics`` and ``bootstrap_task_ci`` dispatch on the label type; ``HIGHER_IS_BETTER``
says which way each metric points.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    auc,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
)

from hymate.errors import HymateError

METRICS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "brier", "ece")
MULTICLASS_METRICS = ("accuracy", "macro_auroc", "weighted_auroc", "macro_f1", "log_loss", "ece")
REGRESSION_METRICS = ("mae", "rmse", "r2")
LABEL_TYPES = ("binary", "multiclass", "regression")
METRICS_BY_TYPE = {"binary": METRICS, "multiclass": MULTICLASS_METRICS, "regression": REGRESSION_METRICS}
_LOWER_IS_BETTER = {"brier", "ece", "log_loss", "mae", "rmse"}
HIGHER_IS_BETTER = {m: m not in _LOWER_IS_BETTER for names in METRICS_BY_TYPE.values() for m in names}
_ROW_SUM_TOL = 1e-4
_BOOT_CHUNK_CELLS = 2_000_000  # resamples x rows held in memory at once by the vectorised bootstraps


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


# --- multiclass -------------------------------------------------------------------------------


def _check_multiclass(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels [N] (integers 0..K-1) and probabilities [N, K].

    Rows may sum to 1 within 1e-4 (float32 softmax outputs); rows off by more than rounding
    are divided by their sums so scikit-learn sees exact probabilities.
    """
    try:
        p = np.asarray(proba, dtype=float)
        yf = np.asarray(y_true, dtype=float)
    except (TypeError, ValueError) as e:
        raise HymateError(f"multiclass labels and probabilities must be numeric arrays: {e}") from None
    if p.ndim != 2:
        raise HymateError(f"multiclass probabilities must be a 2-D array [N, K], got shape {p.shape}")
    n, k = p.shape
    if k < 2:
        raise HymateError(f"multiclass probabilities need at least 2 columns (classes), got {k}")
    if yf.ndim == 2 and yf.shape[1] == 1:
        yf = yf[:, 0]
    if yf.ndim != 1:
        raise HymateError(f"multiclass labels must be a 1-D array [N] of class indices, got shape {yf.shape}")
    if yf.shape[0] != n:
        raise HymateError(f"labels and predictions differ in length: {yf.shape[0]} vs {n}")
    if not np.isfinite(yf).all():
        raise HymateError("multiclass labels must be integer class indices (found NaN or inf)")
    if (yf != np.round(yf)).any():
        raise HymateError("multiclass labels must be integer class indices (found non-integer values)")
    if n and (yf.min() < 0 or yf.max() > k - 1):
        raise HymateError(
            f"multiclass labels out of range: found {int(yf.min())}..{int(yf.max())}, "
            f"expected 0..{k - 1} for {k} probability columns"
        )
    if not np.isfinite(p).all():
        raise HymateError("predicted probabilities must be finite (found NaN or inf)")
    if (p < 0).any() or (p > 1).any():
        raise HymateError("predicted probabilities must be within [0, 1]")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > _ROW_SUM_TOL)
    if bad.size:
        raise HymateError(
            f"predicted probability rows must sum to 1 (within {_ROW_SUM_TOL:g}): "
            f"{bad.size} rows do not, e.g. row {bad[0]} sums to {sums[bad[0]]:.6g}"
        )
    y = yf.astype(np.int64)
    if np.unique(y).size < 2:
        raise HymateError("multiclass metrics need at least two classes among the labels")
    off = np.abs(sums - 1) > 1e-12  # leave rows normalised to rounding untouched (keeps ties exact)
    if off.any():
        p = p.copy()
        p[off] /= sums[off, None]
    return y, p


def _ovr_auroc(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """One-vs-rest AUROC, (macro, weighted by support).

    With every class present this is scikit-learn's ``roc_auc_score(multi_class="ovr")``. A
    class absent from the labels has no positives, so its AUROC is undefined: the macro mean
    then runs over the classes present, and the weighted mean weights those by support (an
    absent class has weight 0, so it is the same as scikit-learn's definition would give).
    """
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    if (counts > 0).all() and k > 2:
        labels = list(range(k))
        return (float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)),
                float(roc_auc_score(y, p, multi_class="ovr", average="weighted", labels=labels)))  # fmt: skip
    present = np.flatnonzero((counts > 0) & (counts < len(y)))
    per_class = np.array([roc_auc_score(y == c, p[:, c]) for c in present])
    return float(per_class.mean()), float(np.average(per_class, weights=counts[present]))


def multiclass_metrics(y_true, proba) -> dict[str, float]:
    """Metrics of ``MULTICLASS_METRICS`` for labels 0..K-1 [N] and probabilities [N, K]."""
    y, p = _check_multiclass(y_true, proba)
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    macro_auroc, weighted_auroc = _ovr_auroc(y, p)
    return {
        "accuracy": float(np.mean(pred == y)),
        "macro_auroc": macro_auroc,
        "weighted_auroc": weighted_auroc,
        "macro_f1": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=labels)),
        "ece": expected_calibration_error((pred == y).astype(float), p.max(axis=1)),
    }


def _resample_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each of n rows in each resample: idx [B, m] -> counts [B, n] (float)."""
    b = idx.shape[0]
    flat = (idx + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def _weighted_auroc_draws(w: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC of each resample given row multiplicities w [B, N] (Mann-Whitney, ties count half)."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], positive[order]
    ws = w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # first sorted position of each tie group
    ends = np.r_[starts[1:], len(s)]  # one past the last
    group = np.repeat(np.arange(len(starts)), ends - starts)
    cum_neg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(ws * ~pos, axis=1)], axis=1)
    below = cum_neg[:, starts]  # negative weight strictly below each group
    tied = cum_neg[:, ends] - below  # negative weight within the group
    credit = below + 0.5 * tied
    wins = (ws[:, pos] * credit[:, group[pos]]).sum(axis=1)
    n_pos = ws[:, pos].sum(axis=1)
    return wins / (n_pos * (ws.sum(axis=1) - n_pos))


def _multiclass_draws(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """``multiclass_metrics`` of each resample idx[b] of the (validated) rows, vectorised.

    Every resample must contain at least two classes; classes absent from a resample are
    handled as in ``multiclass_metrics``.
    """
    n, k = p.shape
    w = _resample_weights(idx, n)
    m = idx.shape[1]
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    correct = (pred == y).astype(float)
    onehot_true = np.eye(k)[y]
    onehot_pred = np.eye(k)[pred]
    support = w @ onehot_true  # [B, K]
    predicted = w @ onehot_pred
    tp = w @ (onehot_true * onehot_pred)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    eps = np.finfo(float).eps
    nll = -np.log(np.clip(p[np.arange(n), y], eps, 1 - eps))
    bins = np.minimum((conf * 10).astype(int), 9)
    gaps = w @ (np.eye(10)[bins] * (correct - conf)[:, None])  # [B, 10]: sum of (correct - conf) per bin
    auroc = np.full((w.shape[0], k), np.nan)
    for c in range(k):
        defined = (support[:, c] > 0) & (support[:, c] < m)
        if defined.any():
            auroc[defined, c] = _weighted_auroc_draws(w[defined], y == c, p[:, c])
    valid = ~np.isnan(auroc)
    auroc0 = np.where(valid, auroc, 0.0)
    return {
        "accuracy": w @ correct / m,
        "macro_auroc": auroc0.sum(axis=1) / valid.sum(axis=1),
        "weighted_auroc": (auroc0 * support).sum(axis=1) / (support * valid).sum(axis=1),
        "macro_f1": f1.mean(axis=1),
        "log_loss": w @ nll / m,
        "ece": np.abs(gaps).sum(axis=1) / m,
    }


# --- regression -------------------------------------------------------------------------------


def _as_vector(x, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise HymateError(f"regression {what} must be numeric: {e}") from None
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise HymateError(f"regression {what} must be a 1-D array [N], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise HymateError(f"regression {what} must be finite (found NaN or inf)")
    return a


def _check_regression(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y, f = _as_vector(y_true, "labels"), _as_vector(y_pred, "predictions")
    if y.shape != f.shape:
        raise HymateError(f"labels and predictions differ in length: {y.shape[0]} vs {f.shape[0]}")
    if len(y) < 2:
        raise HymateError(f"regression metrics need at least 2 values, got {len(y)}")
    return y, f


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """Metrics of ``REGRESSION_METRICS`` for targets and predictions [N]."""
    y, f = _check_regression(y_true, y_pred)
    return {
        "mae": float(mean_absolute_error(y, f)),
        "rmse": float(np.sqrt(mean_squared_error(y, f))),
        "r2": float(r2_score(y, f)),
    }


def _regression_draws(y: np.ndarray, f: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """``regression_metrics`` of each resample idx[b], vectorised (r2 as scikit-learn's)."""
    yt = y[idx] - y.mean()  # r2, mae and rmse are shift-invariant; centring avoids cancellation
    err = f[idx] - y.mean() - yt
    ss_res = (err**2).sum(axis=1)
    ss_tot = ((yt - yt.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    constant = yt.min(axis=1) == yt.max(axis=1)
    safe = np.where(constant, 1.0, ss_tot)
    r2 = np.where(constant, np.where(ss_res == 0, 1.0, 0.0), 1 - ss_res / safe)
    return {"mae": np.abs(err).mean(axis=1), "rmse": np.sqrt((err**2).mean(axis=1)), "r2": r2}


# --- dispatch ---------------------------------------------------------------------------------


def _check_label_type(label_type: str) -> None:
    if label_type not in LABEL_TYPES:
        raise HymateError(f"unknown label type {label_type!r}; expected one of {', '.join(LABEL_TYPES)}")


def task_metrics(label_type: str, y_true, pred) -> dict[str, float]:
    """Metrics of the label type: binary pred = P(y=1) [N]; multiclass [N, K]; regression [N]."""
    _check_label_type(label_type)
    if label_type == "binary":
        return binary_metrics(y_true, pred)
    if label_type == "multiclass":
        return multiclass_metrics(y_true, pred)
    return regression_metrics(y_true, pred)


def bootstrap_task_ci(
    label_type: str, y_true, pred, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of every metric of the label type.

    binary: exactly ``bootstrap_ci`` (resampling within class). multiclass: resampling with
    replacement within each class present, so every resample has the original class counts.
    regression: plain resampling of rows with replacement.
    """
    _check_label_type(label_type)
    if int(n_boot) != n_boot or n_boot < 1:
        raise HymateError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0 < level < 1:
        raise HymateError(f"level must be between 0 and 1, got {level}")
    if label_type == "binary":
        return bootstrap_ci(y_true, pred, n_boot=n_boot, level=level, seed=seed)
    rng = np.random.default_rng(seed)
    if label_type == "multiclass":
        y, p = _check_multiclass(y_true, pred)
        members = [np.flatnonzero(y == c) for c in np.unique(y)]
        draw = _multiclass_draws
    else:
        y, p = _check_regression(y_true, pred)
        members = [np.arange(len(y))]
        draw = _regression_draws
    n = len(y)
    chunk = max(1, min(int(n_boot), _BOOT_CHUNK_CELLS // n))
    parts = []
    for start in range(0, int(n_boot), chunk):
        b = min(chunk, int(n_boot) - start)
        idx = np.concatenate([rows[rng.integers(0, len(rows), size=(b, len(rows)))] for rows in members], axis=1)
        parts.append(draw(y, p, idx))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for name in METRICS_BY_TYPE[label_type]:
        values = np.concatenate([part[name] for part in parts])
        out[name] = (float(np.percentile(values, lo)), float(np.percentile(values, hi)))
    return out
