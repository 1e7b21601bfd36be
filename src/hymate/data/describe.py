"""Summaries of a prepared dataset: counts, label rate, sequence lengths, variables, missingness."""

from __future__ import annotations

import polars as pl

from hymate.data.schema import EventData

PERCENTILES = (5, 25, 50, 75, 95, 99)


def describe(data: EventData) -> dict:
    stays = data.stays.height
    labelled = data.labels.height
    positives = int(data.labels.get_column("label").sum()) if labelled else 0
    n_events = data.stays.get_column("n_events")
    per_variable = (
        data.events.group_by("variable")
        .agg(
            pl.len().alias("events"),
            pl.col("stay_id").n_unique().alias("stays_observed"),
            pl.col("value").median().alias("median"),
            pl.col("value").quantile(0.05).alias("p5"),
            pl.col("value").quantile(0.95).alias("p95"),
        )
        .with_columns((1.0 - pl.col("stays_observed") / stays).alias("missing_stays_frac"))
        .sort("events", descending=True)
    )
    groups = (
        data.stays.join(data.labels.select("stay_id", "label"), on="stay_id", how="left")
        .group_by("split_group")
        .agg(pl.len().alias("stays"), pl.col("label").sum().alias("positives"), pl.col("n_events").sum().alias("events"))
        .sort("split_group")
    )
    statics_missing = {
        c: data.statics.get_column(c).null_count() / max(data.statics.height, 1)
        for c in data.statics.columns
        if c != "stay_id"
    }
    return {
        "dataset": data.name,
        "stays": stays,
        "events": data.events.height,
        "labelled_stays": labelled,
        "positives": positives,
        "label_rate": positives / labelled if labelled else float("nan"),
        "events_per_stay": {f"p{p}": float(n_events.quantile(p / 100, "nearest")) for p in PERCENTILES}
        | {"mean": float(n_events.mean()), "max": int(n_events.max())},
        "variables": per_variable.to_dicts(),
        "groups": groups.to_dicts(),
        "statics_missing_frac": statics_missing,
        "excluded_stays": {k: v["count"] for k, v in data.report.get("excluded_stays", {}).items()},
        "skipped_lines": {k: v["count"] for k, v in data.report.get("skipped_lines", {}).items()},
    }
