"""A run's report folder, by label type: metrics JSON, predictions Parquet, Markdown summary, PNG plots.
A binary run's predictions are also written in the meds-evaluation schema (predictions_meds.parquet).

binary: ROC, precision-recall and calibration curves; multiclass: a confusion matrix and a
reliability diagram of the top class; regression: predicted against observed values. Every run
with training curves also gets training.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402

from hymate.data.schema import meds_time  # noqa: E402
from hymate.evaluate.metrics import METRICS_BY_TYPE  # noqa: E402
from hymate.io import atomic_path, write_atomic  # noqa: E402

METRIC_LABELS = {
    "auroc": "AUROC", "ap": "AUPRC (average precision)", "auprc_trapz": "AUPRC (trapezoidal)",
    "min_re_pr": "min(Re, Pr)", "brier": "Brier score", "ece": "ECE (10 bins)", "utility": "utility (normalised)",
    "accuracy": "accuracy", "macro_auroc": "AUROC (macro, one-vs-rest)", "weighted_auroc": "AUROC (weighted, one-vs-rest)",
    "macro_f1": "F1 (macro)", "log_loss": "log-loss", "mae": "MAE", "rmse": "RMSE", "r2": "R^2",
    "wall_s": "wall time (s)",
}  # fmt: skip
# One line on what each number means (reports say it beside the numbers).
METRIC_MEANINGS = {
    "auroc": "probability that a random positive stay is ranked above a random negative one (0.5 = chance)",
    "ap": "average precision: the area under the precision-recall curve as a step function (chance = prevalence)",
    "auprc_trapz": "the same area with straight lines between the curve's points (slightly optimistic; kept to "
                   "compare with papers that report it)",
    "min_re_pr": "the best min(recall, precision) over all thresholds (where the two are equal)",
    "brier": "mean squared error of the calibrated probabilities (lower is better)",
    "ece": "expected calibration error: |predicted - observed rate| averaged over 10 equal-width bins, weighted "
           "by stays (lower is better)",
    "utility": "the PhysioNet 2019 utility, normalised: 1 = the optimal alarms, 0 = never alarming",
    "accuracy": "share of stays whose most probable class is the true one",
    "macro_auroc": "one-vs-rest AUROC of each class, averaged with equal weight",
    "weighted_auroc": "one-vs-rest AUROC of each class, averaged weighted by class size",
    "macro_f1": "F1 of each class, averaged with equal weight",
    "log_loss": "mean negative log-probability of the true class (lower is better)",
    "mae": "mean absolute error, in the label's unit (lower is better)",
    "rmse": "root mean squared error, in the label's unit (lower is better)",
    "r2": "share of the label's variance explained (0 = predicting the test mean; negative is worse)",
    "wall_s": "wall-clock seconds of the run (training, calibration and scoring)",
}  # fmt: skip


def meaning_lines(keys) -> list[str]:
    """The "what these numbers mean" section for `keys`."""
    return ["", "What these numbers mean:", *(f"- {METRIC_LABELS.get(k, k)}: {METRIC_MEANINGS[k]}" for k in keys
                                               if k in METRIC_MEANINGS)]  # fmt: skip


def write_report(folder: Path, title: str, task, frame: pl.DataFrame, metrics: dict, ci: dict, info: dict,
                 history: pl.DataFrame | None = None) -> None:  # fmt: skip
    """`frame`: the test predictions (`train.run.prediction_frame`); `metrics` / `ci` on its labelled rows.
    Each file is written atomically, metrics.json last: its presence marks a complete report."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "predictions.parquet") as tmp:
        frame.write_parquet(tmp)
    if task.label_type == "binary":
        with atomic_path(folder / "predictions_meds.parquet") as tmp:
            meds_predictions(frame).write_parquet(tmp)
    labelled = frame.filter(pl.col("label").is_not_null())
    y = labelled.get_column("label").to_numpy()
    kind = task.label_type
    if kind == "binary":
        _plot_binary(folder, y, labelled.get_column("probability").to_numpy(), metrics)
        figures = ["roc", "pr", "calibration"]
    elif kind == "multiclass":
        proba = labelled.select(pl.col(f"p_{k}") for k in range(len(task.classes))).to_numpy()
        _plot_multiclass(folder, y.astype(int), proba, task.classes)
        figures = ["confusion", "reliability"]
    else:
        _plot_regression(folder, y, labelled.get_column("prediction").to_numpy(), metrics)
        figures = ["predicted"]
    if history is not None and history.height:
        _plot_history(folder / "training.png", history, kind)
        figures.append("training")
    keys = [*METRICS_BY_TYPE[kind], *([task.threshold_metric] if task.threshold_metric in metrics else [])]
    lines = [f"# {title}", "", "| metric | value | 95 % CI (bootstrap) |", "|---|---|---|"]
    for key in keys:
        lo, hi = ci.get(key, (float("nan"), float("nan")))
        lines.append(f"| {METRIC_LABELS.get(key, key)} | {metrics[key]:.4f} | {lo:.4f} to {hi:.4f} |")
    stays = labelled.get_column("stay_id").n_unique()
    lines += ["", f"Test stays: {stays:,}; predictions: {labelled.height:,}" + (
        f"; positives: {int(y.sum()):,}." if kind == "binary" else ".")]  # fmt: skip
    if kind == "multiclass":
        lines += ["", "Classes: " + ", ".join(f"{k} = {c}" for k, c in enumerate(task.classes))]
    lines += meaning_lines(keys)
    lines += ["", "Run:", *(f"- {k}: {v}" for k, v in info.items() if not isinstance(v, dict | list))]
    lines += ["", " ".join(f"![{f}]({f}.png)" for f in figures)]
    write_atomic(folder / "summary.md", "\n".join(lines) + "\n")
    write_atomic(folder / "metrics.json", json.dumps({"metrics": metrics, "ci95": ci, **info}, indent=1, default=str))


def meds_predictions(frame: pl.DataFrame) -> pl.DataFrame:
    """A binary run's predictions in the meds-evaluation schema (github.com/kamilest/meds-evaluation,
    `schema.BINARY_CLASSIFICATION_SCHEMA_DICT`): subject_id, prediction_time (the MEDS timestamp of
    `hymate.data.schema.meds_time`), boolean_value (the label), predicted_boolean_value (the alarm
    where the task chose a decision threshold on validation, else probability >= 0.5) and
    predicted_boolean_probability (calibrated). Rows with an unknown label are left out."""
    predicted = pl.col("alarm") if "alarm" in frame.columns else pl.col("probability") >= 0.5
    return frame.filter(pl.col("label").is_not_null()).select(
        pl.col("stay_id").cast(pl.Int64).alias("subject_id"),
        meds_time(pl.col("prediction_time")).alias("prediction_time"),
        (pl.col("label") == 1).alias("boolean_value"),
        predicted.alias("predicted_boolean_value"),
        pl.col("probability").cast(pl.Float64).alias("predicted_boolean_probability"),
    )


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plot_binary(folder: Path, y: np.ndarray, p: np.ndarray, m: dict) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC {m['auroc']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    _save(fig, folder / "roc.png")

    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", label=f"AP {m['ap']:.3f}")
    ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    _save(fig, folder / "pr.png")

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(mean_pred, frac_pos, "o-", label=f"ECE {m['ece']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="mean predicted risk", ylabel="observed rate", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    _save(fig, folder / "calibration.png")


def _plot_multiclass(folder: Path, y: np.ndarray, proba: np.ndarray, classes) -> None:
    K = len(classes)
    cm = confusion_matrix(y, proba.argmax(axis=1), labels=range(K))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(K):
        for j in range(K):
            ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", fontsize=8)
    ax.set(xticks=range(K), yticks=range(K), xticklabels=classes, yticklabels=classes, xlabel="predicted",
           ylabel="observed", title="Confusion matrix")  # fmt: skip
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, folder / "confusion.png")

    conf, correct = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)
    bins = np.minimum((conf * 10).astype(int), 9)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    used = [b for b in range(10) if (bins == b).any()]
    ax.plot([conf[bins == b].mean() for b in used], [correct[bins == b].mean() for b in used], "o-")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    _save(fig, folder / "reliability.png")


def _plot_regression(folder: Path, y: np.ndarray, pred: np.ndarray, m: dict) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y, pred, s=4, alpha=0.3)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xlabel="observed", ylabel="predicted", title=f"MAE {m['mae']:.3f}, R^2 {m['r2']:.3f}")
    _save(fig, folder / "predicted.png")


def _plot_history(path: Path, history: pl.DataFrame, kind: str) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for col, label in (("train/loss", "train loss"), ("val/loss", "validation loss")):
        if col in history.columns:
            rows = history.filter(pl.col(col).is_not_null())
            ax1.plot(rows["epoch"], rows[col], "o-", label=label)
    ax1.set(xlabel="epoch", ylabel={"binary": "BCE", "multiclass": "cross-entropy", "regression": "Huber"}[kind], title="Loss")
    ax1.legend()
    for col in history.columns:
        if col.startswith("val/") and col not in ("val/loss", "val/score"):
            rows = history.filter(pl.col(col).is_not_null())
            ax2.plot(rows["epoch"], rows[col], "o-", label=col.removeprefix("val/"))
    ax2.set(xlabel="epoch", title="Validation")
    ax2.legend()
    _save(fig, path)
