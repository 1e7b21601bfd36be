"""Figures of an explanation, as PNG bytes (for files and for HTML reports alike)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def importance_bars(rankings: dict[str, list[tuple[str, float]]], title: str) -> bytes:
    """One horizontal bar panel per method: its top variables, most important at the top."""
    n = max(len(r) for r in rankings.values())
    fig, axes = plt.subplots(1, len(rankings), figsize=(4.2 * len(rankings), 0.32 * n + 1.4), squeeze=False)
    for ax, (method, ranking) in zip(axes[0], rankings.items(), strict=True):
        names, scores = [r[0] for r in ranking][::-1], [r[1] for r in ranking][::-1]
        ax.barh(names, scores, color="#3a6ea5")
        ax.set_title(method, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def stay_timeline(events: pl.DataFrame, order: list[str], title: str) -> bytes:
    """Each observation of the stay's variables (rows, in `order`, most important first) over
    time; marker area and colour show the event's weight: its share of the channel pooling (the
    variable's importance times the event's weight within the variable) where the model has one,
    else its attention weight over events."""
    rows = {name: i for i, name in enumerate(order)}
    shown = events.filter(pl.col("variable").is_in(order))
    y = np.array([rows[v] for v in shown.get_column("variable").to_list()])
    hours = shown.get_column("hour").to_numpy()
    column = "channel_weight" if "channel_weight" in shown.columns and shown["channel_weight"].null_count() < shown.height else "weight"
    weights = shown.get_column(column).fill_null(0.0).to_numpy()
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(order) + 1.6))
    if weights.max(initial=0.0) > 0:
        size = 12 + 260 * weights / weights.max()
        points = ax.scatter(hours, y, s=size, c=weights, cmap="viridis", edgecolors="k", linewidths=0.3)
        fig.colorbar(points, ax=ax, label="event weight", pad=0.01)
    else:  # a model without attention over events: plain markers
        ax.scatter(hours, y, s=14, color="#3a6ea5")
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("hours since admission")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    return _png(fig)


def attention_heatmap(matrix: np.ndarray, names: list[str], title: str) -> bytes:
    """Channel-to-channel attention ([V, V], rows attend to columns), variables in `names` order."""
    fig, ax = plt.subplots(figsize=(0.22 * len(names) + 2.5, 0.22 * len(names) + 1.8))
    image = ax.imshow(matrix, cmap="magma")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("attended variable")
    ax.set_ylabel("attending variable")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title, fontsize=11)
    return _png(fig)


def deletion_plot(rows: list[dict], title: str) -> bytes:
    """AUROC drop against k for each method; the random baseline with +-1 sd over draws."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["k"])
        ks, drops = [r["k"] for r in mine], np.array([r["auroc_drop"] for r in mine])
        if method == "random":
            sd = np.array([r.get("sd", 0.0) for r in mine])
            ax.plot(ks, drops, "--", color="grey", label="random (mean of draws, ±1 sd)")
            ax.fill_between(ks, drops - sd, drops + sd, color="grey", alpha=0.2)
        else:
            ax.plot(ks, drops, "o-", label=method)
    ax.set_xlabel("variables removed per stay (k)")
    ax.set_ylabel("AUROC drop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    return _png(fig)
