"""Causal per-prediction-time features: what a tabular model reads when a stay has many predictions.

At every label row (stay, prediction time t), for every variable, from the events with time <= t
only: the last value, hours since it, running mean, min and max, and the number of observations
so far (NaN / 0 before the first one); plus the statics and t itself (ICULOS on P19, a strong
signal there). Built with Polars: events become one wide row per (stay, time), cumulative
expressions run over each stay in time order, and the label times are kept. Nothing looks ahead:
every expression is a running one (forward fill, cumulative sum / min / max).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError

RUNNING_STATS = ("last", "since_last", "mean", "min", "max", "count")


@dataclass
class RunningSpec:
    variables: list[str]  # from the training stays
    statics: list[str]

    @classmethod
    def fit(cls, data: EventData, train_ids) -> RunningSpec:
        ids = pl.Series(np.asarray(train_ids, dtype=np.int64)).implode()
        variables = sorted(data.events.filter(pl.col("stay_id").is_in(ids)).get_column("variable").unique().to_list())
        return cls(variables, [c for c in data.statics.columns if c != "stay_id"])

    @property
    def feature_names(self) -> list[str]:
        return [f"{v}:{s}" for v in self.variables for s in RUNNING_STATS] + self.statics + ["prediction_time"]

    def transform(self, data: EventData, stay_ids) -> tuple[np.ndarray, pl.DataFrame, dict]:
        """Features [label rows of `stay_ids`, n] (float32), the rows (stay_id, prediction_time, label),
        and what was dropped ({"unknown_events": n})."""
        ids = pl.Series(np.asarray(stay_ids, dtype=np.int64)).implode()
        labels = data.labels.filter(pl.col("stay_id").is_in(ids)).select("stay_id", pl.col("prediction_time").alias("time"), "label")
        if labels.height == 0:
            raise DataError("none of the given stays has label rows")
        variables = pl.Series(self.variables, dtype=pl.String).implode()
        events = data.events.filter(pl.col("stay_id").is_in(ids))
        dropped = {"unknown_events": events.filter(~pl.col("variable").is_in(variables)).height}
        events = events.filter(pl.col("variable").is_in(variables))
        # One value per (stay, time, variable): the last (events are sorted by stay, time, variable).
        per_time = events.group_by("stay_id", "time", "variable", maintain_order=True).agg(
            pl.col("value").last(), pl.len().cast(pl.Float64).alias("n")
        )
        wide = per_time.pivot(on="variable", index=["stay_id", "time"], values=["value", "n"], separator="|")
        grid = pl.concat([labels.select("stay_id", "time"), wide.select("stay_id", "time")]).unique().sort("stay_id", "time")
        frame = grid.join(wide, on=["stay_id", "time"], how="left")
        exprs = []
        for v in self.variables:
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
        missing = [c for c in self.statics if c not in data.statics.columns]
        if missing:
            raise DataError(f"statics lack columns {missing} that the features were fitted with")
        rows = rows.join(data.statics.unique("stay_id", keep="first"), on="stay_id", how="left").sort("stay_id", "time")
        names = self.feature_names
        X = rows.select(
            *[pl.col(c).cast(pl.Float32) for c in names[:-1]], pl.col("time").cast(pl.Float32).alias("prediction_time")
        ).fill_null(float("nan")).to_numpy()
        return X, rows.select("stay_id", pl.col("time").alias("prediction_time"), "label"), dropped

    def to_json(self) -> str:
        return json.dumps({"kind": "running", **asdict(self)}, indent=1)
