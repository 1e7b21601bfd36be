"""The online gradient-boosting baseline: causal per-hour summary features and LightGBM.

At every labelled (stay, hour), for every variable, from the events with time <= hour only: the
last value, hours since it, running mean, min and max, and the number of observations so far
(NaN / 0 before the first one); plus the statics and the hour itself (ICULOS, a strong signal in
this data). Built with Polars: events become one wide row per (stay, time), cumulative
expressions run over each stay in time order, and the label hours are kept. Nothing looks ahead:
every expression is a running one (forward fill, cumulative sum / min / max).

LightGBM is fitted with the P12 baseline's machinery (`tabular.fit_lightgbm`: early stopping on
validation AUROC over a small grid), then the utility threshold is chosen on the validation hours
and applied to the test hours. Run folder ``<out>/<setting>-split<k>-seed<s>/`` with
``lightgbm.txt``, ``predictions.parquet`` and ``metrics.json`` (the row; marks the run done).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.evaluate.utility import best_threshold
from hymate.models.tabular import NUM_THREADS, fit_lightgbm, peak_rss_mb
from hymate.tasks.splits import Split

HOURLY_STATS = ("last", "since_last", "mean", "min", "max", "count")
ONLINE_GRID = {"num_leaves": [31, 63], "learning_rate": [0.05], "min_child_samples": [100], "feature_fraction": [0.7]}


def feature_names(variables: list[str], statics: list[str]) -> list[str]:
    return [f"{v}:{s}" for v in variables for s in HOURLY_STATS] + statics + ["hour"]


def hourly_features(data: EventData, stay_ids, variables: list[str]) -> tuple[np.ndarray, pl.DataFrame, list[str]]:
    """Features [label rows of `stay_ids`, n] (float32), the rows' (stay_id, hour, label), and names."""
    ids = pl.Series(np.asarray(stay_ids, dtype=np.int64)).implode()
    labels = data.labels.filter(pl.col("stay_id").is_in(ids)).select("stay_id", pl.col("prediction_time").alias("time"), "label")
    if labels.height == 0:
        raise DataError("none of the given stays has label rows")
    events = data.events.filter(pl.col("stay_id").is_in(ids) & pl.col("variable").is_in(pl.Series(variables).implode()))
    # One value per (stay, time, variable): the last (events are sorted by stay, time, variable).
    per_time = events.group_by("stay_id", "time", "variable", maintain_order=True).agg(
        pl.col("value").last(), pl.len().cast(pl.Float64).alias("n")
    )
    wide = per_time.pivot(on="variable", index=["stay_id", "time"], values=["value", "n"], separator="|")
    grid = pl.concat([labels.select("stay_id", "time"), wide.select("stay_id", "time")]).unique().sort("stay_id", "time")
    frame = grid.join(wide, on=["stay_id", "time"], how="left")
    exprs = []
    for v in variables:
        value = pl.col(f"value|{v}") if f"value|{v}" in frame.columns else pl.lit(None, dtype=pl.Float64)
        n = pl.col(f"n|{v}").fill_null(0.0) if f"n|{v}" in frame.columns else pl.lit(0.0)
        count = n.cum_sum().over("stay_id")
        seen_at = pl.when(value.is_not_null()).then(pl.col("time")).forward_fill().over("stay_id")
        total = value.fill_null(0.0).cum_sum().over("stay_id")
        n_values = value.is_not_null().cast(pl.Float64).cum_sum().over("stay_id")
        exprs += [
            value.forward_fill().over("stay_id").alias(f"{v}:last"),
            (pl.col("time") - seen_at).alias(f"{v}:since_last"),
            pl.when(n_values > 0).then(total / n_values).alias(f"{v}:mean"),
            value.fill_null(float("inf")).cum_min().over("stay_id").replace(float("inf"), None).alias(f"{v}:min"),
            value.fill_null(float("-inf")).cum_max().over("stay_id").replace(float("-inf"), None).alias(f"{v}:max"),
            count.alias(f"{v}:count"),
        ]
    running = frame.select("stay_id", "time", *exprs)
    rows = labels.join(running, on=["stay_id", "time"], how="left").sort("stay_id", "time")
    static_cols = [c for c in data.statics.columns if c != "stay_id"]
    rows = rows.join(data.statics.unique("stay_id", keep="first"), on="stay_id", how="left").sort("stay_id", "time")
    names = feature_names(variables, static_cols)
    X = rows.select(
        *[pl.col(c).cast(pl.Float32) for c in names[: -1]], pl.col("time").cast(pl.Float32).alias("hour")
    ).fill_null(float("nan")).to_numpy()
    return X, rows.select("stay_id", pl.col("time").alias("hour"), "label"), names


def run_lightgbm_online(
    data: EventData, split: Split, seed: int, out: Path, resume: bool = True, grid: dict | None = None,
    num_threads: int = NUM_THREADS,
) -> dict:  # fmt: skip
    """Fit on the hours of split.train, stop and choose the threshold on split.val, score split.test."""
    from hymate.train.online import online_metrics, sigmoid

    start = time.perf_counter()
    folder = Path(out) / f"{split.protocol}-split{split.index}-seed{seed}"
    done = folder / "metrics.json"
    if resume and done.exists():
        return json.loads(done.read_text())["row"]
    variables = sorted(data.events.filter(pl.col("stay_id").is_in(pl.Series(split.train).implode()))
                       .get_column("variable").unique().to_list())  # fmt: skip
    X, rows = {}, {}
    for part in ("train", "val"):
        X[part], rows[part], names = hourly_features(data, getattr(split, part), variables)
    y = {p: rows[p].get_column("label").to_numpy().astype(np.int64) for p in ("train", "val")}
    fit_start = time.perf_counter()
    booster, chosen, trials = fit_lightgbm(X["train"], y["train"], X["val"], y["val"], seed, grid or ONLINE_GRID, num_threads)
    train_s = time.perf_counter() - fit_start
    val = rows["val"].with_columns(probability=pl.Series(sigmoid(booster.predict(X["val"], num_iteration=booster.best_iteration, raw_score=True))))
    threshold, val_utility = best_threshold(val["stay_id"].to_numpy(), val["label"].to_numpy(), val["probability"].to_numpy())
    score_start = time.perf_counter()  # scoring = building the causal features of every test hour + predicting
    X_test, test, _ = hourly_features(data, split.test, variables)
    logits = booster.predict(X_test, num_iteration=booster.best_iteration, raw_score=True)
    score_s = time.perf_counter() - score_start
    test = test.with_columns(label=pl.col("label").cast(pl.Float32), probability=pl.Series(sigmoid(logits)))
    metrics = online_metrics(test, threshold)
    row = {
        "task": "sepsis-online", "model": "lightgbm", "setting": split.protocol, "split": split.index, "seed": seed,
        **metrics, "threshold": threshold, "val_utility": val_utility.normalized,
        "train_stays": len(split.train), "val_stays": len(split.val), "test_stays": len(split.test),
        "epochs": None, "train_s": round(train_s, 1), "score_s": round(score_s, 2),
        "wall_s": round(time.perf_counter() - start, 1), "peak_mb": round(peak_rss_mb(), 1), "features": len(names),
        "trees": booster.best_iteration,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(folder / "lightgbm.txt", num_iteration=booster.best_iteration)
    test.write_parquet(folder / "predictions.parquet")
    meta = {"split": split.name, "split_sha256": split.sha256, "hyperparameters": chosen, "grid_trials": trials,
            "feature_names": names, "num_threads": num_threads}  # fmt: skip
    done.write_text(json.dumps({"row": row, **meta}, indent=1))
    return row
