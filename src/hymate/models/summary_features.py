"""Per-stay summary statistics of an event stream, the input of the tabular baselines.

For every (stay, variable) over the observation window [0, window_hours]: the last and first
value, mean, min, max, sd (population, ddof=0, so 0 for a single observation), the number of
observations, and the time since the last observation (window end - time of the last one). A
variable a stay never had is NaN in every statistic except its count, which is 0. Statics
follow: numeric ones as given (NaN where missing), categorical ones one-hot over the categories
seen in training (all zeros for a missing or unseen category).

The variable list comes from the training stays. Events of other variables (at validation or
test time) are dropped and counted, as are events outside the window: `SummarySpec.transform`
returns the counts, and both entry points log them. Everything is one Polars group_by over the
events and a join onto a (stay x variable) grid; nothing loops over stays in Python.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError

log = logging.getLogger(__name__)

STATS = ("last", "first", "mean", "min", "max", "std", "count", "since_last")


@dataclass
class SummarySpec:
    """What a fitted feature map needs: the variables, the window and the static columns."""

    variables: list[str]
    window_hours: float
    static_numeric: list[str] = field(default_factory=list)
    static_categorical: dict[str, list[int]] = field(default_factory=dict)  # name -> training categories

    @classmethod
    def fit(cls, data: EventData, train_ids, window_hours: float, categorical: tuple[str, ...] = ()) -> SummarySpec:
        """Variables and static categories of the training stays (events within the window)."""
        ids = _id_list(train_ids)
        events = _window(data.events.filter(pl.col("stay_id").is_in(ids)), window_hours)
        if events.height == 0:
            raise DataError("cannot fit summary features: the training stays have no events in the window")
        statics = data.statics.filter(pl.col("stay_id").is_in(ids))
        numeric, cats = [], {}
        for col in data.statics.columns:
            if col == "stay_id":
                continue
            if col in categorical:
                cats[col] = sorted(int(v) for v in statics.get_column(col).drop_nulls().unique().to_list())
            else:
                numeric.append(col)
        return cls(sorted(events.get_column("variable").unique().to_list()), float(window_hours), numeric, cats)

    @property
    def feature_names(self) -> list[str]:
        names = [f"{v}:{s}" for v in self.variables for s in STATS]
        names += list(self.static_numeric)
        names += [f"{col}={c}" for col, categories in self.static_categorical.items() for c in categories]
        return names

    def transform(self, data: EventData, stay_ids) -> tuple[np.ndarray, dict]:
        """Feature matrix [len(stay_ids), len(feature_names)] (rows in the order of stay_ids), and
        what was dropped: {"unknown_events", "unknown_variables", "outside_window_events"}."""
        ids = np.asarray(stay_ids, dtype=np.int64)
        uniq = np.unique(ids)
        events = data.events.filter(pl.col("stay_id").is_in(_id_list(uniq)))
        in_window = _window(events, self.window_hours)
        bad = in_window.filter(pl.col("value").is_nan() | pl.col("value").is_infinite())
        if bad.height:
            raise DataError(f"{bad.height} events have NaN or infinite values, e.g. {bad.head(3).rows()}")
        known = in_window.filter(pl.col("variable").is_in(pl.Series(self.variables, dtype=pl.String).implode()))
        unknown = in_window.filter(~pl.col("variable").is_in(pl.Series(self.variables, dtype=pl.String).implode()))
        dropped = {
            "unknown_events": unknown.height,
            "unknown_variables": sorted(unknown.get_column("variable").unique().to_list()),
            "outside_window_events": events.height - in_window.height,
        }
        if dropped["unknown_events"] or dropped["outside_window_events"]:
            log.warning(
                "summary features: dropped %d events of %d variables not in the training vocabulary %s and "
                "%d events outside [0, %g] h",
                dropped["unknown_events"], len(dropped["unknown_variables"]), dropped["unknown_variables"][:10],
                dropped["outside_window_events"], self.window_hours,
            )  # fmt: skip
        series = self._series_block(known, uniq)[np.searchsorted(uniq, ids)]
        return np.concatenate([series, self._static_block(data.statics, ids)], axis=1), dropped

    def _series_block(self, events: pl.DataFrame, uniq: np.ndarray) -> np.ndarray:
        n_var, n_stat = len(self.variables), len(STATS)
        if n_var == 0:
            return np.zeros((len(uniq), 0))
        # A stable sort by time keeps the table's order among simultaneous events: "last" is the
        # last row at the latest time, "first" the first row at the earliest.
        stats = (
            events.sort("stay_id", "time", maintain_order=True)
            .group_by("stay_id", "variable")
            .agg(
                pl.col("value").last().alias("last"),
                pl.col("value").first().alias("first"),
                pl.col("value").mean().alias("mean"),
                pl.col("value").min().alias("min"),
                pl.col("value").max().alias("max"),
                pl.col("value").std(ddof=0).alias("std"),
                pl.len().cast(pl.Float64).alias("count"),
                (self.window_hours - pl.col("time").max()).alias("since_last"),
            )
        )
        grid = (
            pl.DataFrame({"stay_id": uniq})
            .join(pl.DataFrame({"variable": self.variables, "_var": np.arange(n_var)}), how="cross")
            .join(stats, on=["stay_id", "variable"], how="left")
            .with_columns(pl.col("count").fill_null(0.0))
            .sort("stay_id", "_var")
        )
        values = grid.select(pl.col(list(STATS)).cast(pl.Float64).fill_null(float("nan"))).to_numpy()
        return values.reshape(len(uniq), n_var * n_stat)

    def _static_block(self, statics: pl.DataFrame, ids: np.ndarray) -> np.ndarray:
        missing = [c for c in [*self.static_numeric, *self.static_categorical] if c not in statics.columns]
        if missing:
            raise DataError(f"statics lack columns {missing} that the features were fitted with")
        exprs = [pl.col(c).cast(pl.Float64).fill_null(float("nan")).alias(c) for c in self.static_numeric]
        exprs += [
            (pl.col(col) == c).fill_null(False).cast(pl.Float64).alias(f"{col}={c}")
            for col, categories in self.static_categorical.items()
            for c in categories
        ]
        if not exprs:
            return np.zeros((len(ids), 0))
        rows = pl.DataFrame({"stay_id": ids}).join(
            statics.unique("stay_id", keep="first", maintain_order=True),
            on="stay_id",
            how="left",
            maintain_order="left",
        )
        return rows.select(exprs).to_numpy().astype(np.float64)

    def to_json(self) -> str:
        return json.dumps({"kind": "summary", **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SummarySpec:
        raw = json.loads(text)
        raw.pop("kind", None)
        return cls(**raw)


def summary_features(
    data: EventData,
    stay_ids,
    variables: list[str] | None,
    window_hours: float,
    categorical: tuple[str, ...] = (),
    categories: dict[str, list[int]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Summary features of `stay_ids` (rows in that order) and their names.

    `variables=None` takes the variables these stays have (use that on the training stays, then
    pass the list on). Events of variables outside the list are dropped and their count logged;
    `SummarySpec.transform` returns the counts. `categories` fixes the one-hot categories of the
    `categorical` statics (default: those these stays have).
    """
    if variables is None or (categories is None and categorical):
        fitted = SummarySpec.fit(data, stay_ids, window_hours, categorical)
        variables = fitted.variables if variables is None else variables
        categories = fitted.static_categorical if categories is None else categories
    categories = categories or {}
    numeric = [c for c in data.statics.columns if c != "stay_id" and c not in categorical]
    spec = SummarySpec(
        list(variables), float(window_hours), numeric, {c: list(categories.get(c, [])) for c in categorical}
    )
    X, _ = spec.transform(data, stay_ids)
    return X, spec.feature_names


def _id_list(ids) -> pl.Expr:
    return pl.Series(np.asarray(ids, dtype=np.int64)).implode()


def _window(events: pl.DataFrame, window_hours: float) -> pl.DataFrame:
    return events.filter((pl.col("time") >= 0) & (pl.col("time") <= window_hours))
