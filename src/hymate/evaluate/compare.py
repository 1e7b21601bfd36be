"""The comparison table: every model's runs on one protocol, summarised side by side.

A benchmark folder holds one subfolder per model, each with run folders as `hymate train`
writes them (``<root>/<model>/<protocol>-split<k>-seed<s>/report/metrics.json``). This module
reads those reports back (so a table can be rebuilt at any time, and an interrupted grid only
needs its missing runs) and writes ``table.md``, ``table.csv``, ``runs.csv`` and ``table.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from hymate.errors import HymateError  # noqa: E402
from hymate.io import atomic_path, write_atomic  # noqa: E402

TABLE_METRICS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "ece")  # binary
METRICS_BY_TYPE = {"binary": TABLE_METRICS, "multiclass": ("accuracy", "macro_auroc", "macro_f1", "ece"),
                   "regression": ("mae", "rmse", "r2")}  # fmt: skip
HEADERS = {"auroc": "AUROC", "ap": "AP", "auprc_trapz": "AUPRC (trapz)", "min_re_pr": "min(Re,Pr)", "ece": "ECE",
           "utility": "utility", "accuracy": "accuracy", "macro_auroc": "AUROC (macro)", "macro_f1": "F1 (macro)",
           "mae": "MAE", "rmse": "RMSE", "r2": "R^2"}  # fmt: skip


def table_metrics(rows: list[dict]) -> tuple[str, ...]:
    """The columns of a comparison of these rows: their label type's metrics (+ utility where rows have it)."""
    kinds = {r.get("label_type", "binary") for r in rows}
    if len(kinds) != 1:
        raise HymateError(f"cannot tabulate runs of different label types together: {sorted(kinds)}")
    metrics = METRICS_BY_TYPE[kinds.pop()]
    return (*metrics, "utility") if all(r.get("utility") is not None for r in rows) else metrics


def run_folder(root: Path, model: str, protocol: str, split: int, seed: int) -> Path:
    return Path(root) / model / f"{protocol}-split{split}-seed{seed}"


def read_row(folder: Path) -> dict | None:
    """The result row of a finished run, or None if the run has not finished."""
    path = folder / "report" / "metrics.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["row"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise HymateError(f"{path} is not a finished run's report ({exc}); delete it to rerun that run") from None


def summarise(rows: list[dict], models: list[str], metrics: tuple[str, ...] | None = None) -> list[dict]:
    """One line per model, in the given order: mean and sd of each metric, cost columns."""
    metrics = metrics or table_metrics(rows)
    lines = []
    for model in models:
        runs = [r for r in rows if r["model"] == model]
        if not runs:
            continue
        line = {"model": model, "runs": len(runs)}
        for key in metrics:
            values = np.array([r[key] for r in runs], dtype=float)
            line[key] = float(values.mean())
            line[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        line["params"] = runs[0].get("params")
        epoch_s = [r["epoch_s"] for r in runs if r.get("epoch_s") is not None]
        line["epoch_s"] = float(np.mean(epoch_s)) if epoch_s else None
        # A run resumed before its time was carried across processes has no time (None): skip it.
        wall_s = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        line["wall_s"] = float(np.mean(wall_s)) if wall_s else None
        line["peak_mb"] = float(max(r["peak_mb"] for r in runs))
        # Runs made before rows recorded their thread count show "?" for it.
        line["threads"] = "/".join(sorted({str(r.get("threads") or "?") for r in runs}))
        lines.append(line)
    return lines


def paired_difference(rows: list[dict], model: str, reference: str, metric: str = "auroc") -> dict | None:
    """`model` minus `reference` on the runs both have (same protocol, split and seed).

    Means over different run sets mislead when one model is missing runs: on splits5 the test
    fold moves AUROC by more than the models differ. Pairing by run keeps the comparison fair.
    Returns {"n", "mean", "sd", "wins"} (wins: runs where `model` is higher), or None if no run is shared.
    """
    def by_run(name: str) -> dict:
        return {(r["protocol"], r["split"], r["seed"]): r[metric] for r in rows if r["model"] == name}

    ours, theirs = by_run(model), by_run(reference)
    shared = sorted(set(ours) & set(theirs))
    if not shared:
        return None
    diffs = np.array([ours[k] - theirs[k] for k in shared], dtype=float)
    sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
    return {"n": len(diffs), "mean": float(diffs.mean()), "sd": sd, "wins": int((diffs > 0).sum())}


def markdown(lines: list[dict], title: str, metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    head = ["model", "runs", *(f"{HEADERS[k]}" for k in metrics), "params", "s / epoch", "s / run", "threads", "peak MB"]
    out = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        cells = [line["model"], str(line["runs"])]
        # One run has no spread: print its value alone rather than a "± 0" that reads as a measured sd.
        cells += [f"{line[k]:.4f} ± {line[f'{k}_sd']:.4f}" if line["runs"] > 1 else f"{line[k]:.4f}" for k in metrics]
        cells += [
            f"{line['params']:,}" if line["params"] is not None else "-",
            f"{line['epoch_s']:.0f}" if line["epoch_s"] is not None else "-",
            f"{line['wall_s']:.0f}" if line["wall_s"] is not None else "-",
            line["threads"],
            f"{line['peak_mb']:.0f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Mean ± sample sd over runs (seeds or splits); metrics on the test stays, after calibration on validation."]
    if "ap" in metrics:
        out += ["AP is average precision; AUPRC (trapz) the trapezoidal area under the PR curve."]
    out += ["Peak MB is the max RSS of a run."]
    return "\n".join(out) + "\n"


def bar_chart(lines: list[dict], path: Path, title: str, metrics: tuple[str, ...] = TABLE_METRICS) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    names = [line["model"] for line in lines]
    x = np.arange(len(names))
    for ax, key in zip(axes, metrics[:2], strict=True):
        means = [line[key] for line in lines]
        ax.bar(x, means, yerr=[line[f"{key}_sd"] for line in lines], capsize=4, color="#4c72b0")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(HEADERS[key])
        low = min(m - line[f"{key}_sd"] for m, line in zip(means, lines, strict=True))
        if key not in ("mae", "rmse"):
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(means) + 0.05))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_comparison(rows: list[dict], models: list[str], folder: Path, title: str) -> list[dict]:
    """Write table.md / table.csv / runs.csv / table.png into `folder`; return the summary lines."""
    if not rows:
        raise HymateError(f"no finished runs to compare in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    metrics = table_metrics(rows)
    lines = summarise(rows, models, metrics)
    write_atomic(folder / "table.md", markdown(lines, title, metrics))
    write_atomic(folder / "table.csv", pl.DataFrame(lines).write_csv())
    keep = ("task", "model", "protocol", "seed", "split", *metrics, "params", "epochs", "epoch_s", "wall_s", "threads", "peak_mb")
    write_atomic(folder / "runs.csv", pl.DataFrame([{k: r.get(k) for k in keep} for r in rows], infer_schema_length=None).write_csv())
    bar_chart(lines, folder / "table.png", title, metrics)
    return lines
