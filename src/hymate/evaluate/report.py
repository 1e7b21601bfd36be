"""A run's report folder: metrics JSON, predictions Parquet, Markdown summary, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

METRIC_LABELS = {
    "auroc": "AUROC",
    "ap": "AUPRC (average precision)",
    "auprc_trapz": "AUPRC (trapezoidal)",
    "min_re_pr": "min(Re, Pr)",
    "brier": "Brier score",
    "ece": "ECE (10 bins)",
}


def write_report(
    folder: Path,
    title: str,
    stay_ids: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    metrics: dict,
    ci: dict,
    info: dict,
    history: pl.DataFrame | None = None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"stay_id": stay_ids, "label": labels.astype(bool), "probability": probs}).write_parquet(
        folder / "predictions.parquet"
    )
    (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "ci95": ci, **info}, indent=1))
    _plot_curves(folder, labels, probs, metrics)
    if history is not None and history.height:
        _plot_history(folder / "training.png", history)
    lines = [f"# {title}", "", "| metric | value | 95 % CI (bootstrap) |", "|---|---|---|"]
    for key, label in METRIC_LABELS.items():
        lo, hi = ci.get(key, (float("nan"), float("nan")))
        lines.append(f"| {label} | {metrics[key]:.4f} | {lo:.4f} to {hi:.4f} |")
    lines += ["", f"Test stays: {len(labels):,}, positives: {int(labels.sum()):,}.", ""]
    lines += [f"- {k}: {v}" for k, v in info.items() if not isinstance(v, dict | list)]
    lines += ["", "![ROC](roc.png) ![PR](pr.png) ![calibration](calibration.png)"]
    if history is not None and history.height:
        lines.append("![training](training.png)")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def _plot_curves(folder: Path, y: np.ndarray, p: np.ndarray, m: dict) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC {m['auroc']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "roc.png", dpi=110)
    plt.close(fig)

    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", label=f"AP {m['ap']:.3f}")
    ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(folder / "pr.png", dpi=110)
    plt.close(fig)

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(mean_pred, frac_pos, "o-", label=f"ECE {m['ece']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="mean predicted risk", ylabel="observed rate", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=110)
    plt.close(fig)


def _plot_history(path: Path, history: pl.DataFrame) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for col, label in (("train/loss", "train loss"), ("val/loss", "validation loss")):
        if col in history.columns:
            rows = history.filter(pl.col(col).is_not_null())
            ax1.plot(rows["epoch"], rows[col], "o-", label=label)
    ax1.set(xlabel="epoch", ylabel="BCE", title="Loss")
    ax1.legend()
    for col, label in (("val/auroc", "val AUROC"), ("val/ap", "val AP")):
        if col in history.columns:
            rows = history.filter(pl.col(col).is_not_null())
            ax2.plot(rows["epoch"], rows[col], "o-", label=label)
    ax2.set(xlabel="epoch", title="Validation")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
