"""The one data model every dataset is turned into, and its one-to-one map onto MEDS.

An `EventData` holds four Polars tables:

- ``events``  : stay_id (i64), time (f64, hours since admission), variable (str), value (f64)
                -- one row per observed measurement, sorted by (stay_id, time, variable).
- ``statics`` : stay_id plus one nullable column per static descriptor (age, gender, ...).
- ``labels``  : stay_id, prediction_time (f64 hours), label -- one row per prediction. A reader
                gives its dataset's own outcome (bool: P12 in-hospital death at 48 h, P19 sepsis
                at every stay-hour); a task's view (`hymate.tasks`) replaces it by the task's
                label table (f64: 0/1, a class index or a value; null where unknown).
- ``stays``   : stay_id, split_group (e.g. PhysioNet 2012 set 'a', PhysioNet 2019 hospital 'A'),
                n_events; a reader may add columns (PhysioNet 2019: n_hours).

MEDS (Medical Event Data Standard) stores ``subject_id, time, code, numeric_value`` and labels
as ``subject_id, prediction_time, boolean_value``. The map is column-for-column: stay_id ->
subject_id, variable -> code, value -> numeric_value; time becomes a timestamp by adding the
hours to a fixed anchor, 2000-01-01 (PhysioNet records carry no calendar dates), rounded to the
microsecond (`meds_time`; `meds_hours` is its exact inverse on whole minutes); statics become
measurements with a null time and the code ``STATIC//<column>``, as MEDS stores static
measurements. A task's labels take the value column of its label type (`MEDS_LABEL_COLUMNS`).
`hymate.data.meds_export` writes this map as a MEDS dataset on disk.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from hymate.errors import DataError
from hymate.io import write_atomic

EVENT_SCHEMA = {"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}
LABEL_SCHEMA = {"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}
STAY_SCHEMA = {"stay_id": pl.Int64, "split_group": pl.String, "n_events": pl.Int64}

# PhysioNet times are relative; MEDS needs timestamps. Every stay is anchored here.
MEDS_ANCHOR = dt.datetime(2000, 1, 1)
US_PER_HOUR, US_PER_MINUTE = 3_600_000_000, 60_000_000
# A static descriptor (age, gender, ...) is a MEDS measurement with a null time and this code
# prefix: column "Age" of the statics table is code "STATIC//Age".
STATIC_CODE_PREFIX = "STATIC//"
# The MEDS label value column (and its Polars type) of each label type.
MEDS_LABEL_COLUMNS = {"binary": ("boolean_value", pl.Boolean), "multiclass": ("integer_value", pl.Int64),
                      "regression": ("float_value", pl.Float32)}  # fmt: skip


@dataclass
class EventData:
    """A prepared dataset: events, statics, labels, stays, and what preparation reported."""

    name: str
    events: pl.DataFrame
    statics: pl.DataFrame
    labels: pl.DataFrame
    stays: pl.DataFrame
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_columns("events", self.events, EVENT_SCHEMA)
        _check_columns("labels", self.labels, {k: v for k, v in LABEL_SCHEMA.items() if k != "label"})
        if "label" not in self.labels.columns:
            raise DataError("labels table lacks the column 'label'")
        if not (self.labels.schema["label"] == pl.Boolean or self.labels.schema["label"].is_numeric()):
            raise DataError(f"labels table: label must be boolean or numeric, got {self.labels.schema['label']}")
        _check_columns("stays", self.stays, STAY_SCHEMA)
        if "stay_id" not in self.statics.columns:
            raise DataError("statics table has no 'stay_id' column")

    @property
    def variables(self) -> list[str]:
        return sorted(self.events.get_column("variable").unique().to_list())

    @property
    def stay_ids(self) -> list[int]:
        return self.stays.get_column("stay_id").to_list()

    # --- persistence ------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the tables, then report.json (whose presence `load` requires) atomically; to replace a
        folder as a whole (the cache does), save into `hymate.io.atomic_folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        for table in ("events", "statics", "labels", "stays"):
            getattr(self, table).write_parquet(folder / f"{table}.parquet", statistics=False)
        write_atomic(folder / "report.json", json.dumps({"name": self.name, **self.report}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> EventData:
        missing = [t for t in ("events", "statics", "labels", "stays") if not (folder / f"{t}.parquet").exists()]
        if missing or not (folder / "report.json").exists():
            raise DataError(f"prepared dataset at {folder} is incomplete (missing {missing or ['report.json']})")
        report = json.loads((folder / "report.json").read_text())
        name = report.pop("name")
        tables = {t: pl.read_parquet(folder / f"{t}.parquet") for t in ("events", "statics", "labels", "stays")}
        return cls(name=name, report=report, **tables)

    # --- MEDS --------------------------------------------------------------------------
    def meds_data(self) -> pl.DataFrame:
        """The events and statics as one MEDS data table (subject_id, time, code, numeric_value),
        sorted by subject, each subject's static measurements (null time) first, then by time."""
        data = self.events.select(
            pl.col("stay_id").alias("subject_id"),
            meds_time(pl.col("time")).alias("time"),
            pl.col("variable").alias("code"),
            pl.col("value").cast(pl.Float32).alias("numeric_value"),
        )
        static_cols = [c for c in self.statics.columns if c != "stay_id"]
        if static_cols:
            statics = (
                self.statics.with_columns(pl.col(static_cols).cast(pl.Float64))
                .unpivot(index="stay_id", on=static_cols, variable_name="code", value_name="numeric_value")
                .drop_nulls("numeric_value")
                .select(
                    pl.col("stay_id").alias("subject_id"),
                    pl.lit(None, dtype=pl.Datetime("us")).alias("time"),
                    (STATIC_CODE_PREFIX + pl.col("code")).alias("code"),
                    pl.col("numeric_value").cast(pl.Float32),
                )
            )
            data = pl.concat([statics, data])
        return data.sort("subject_id", "time", nulls_last=False, maintain_order=True)

    def meds_labels(self, label_type: str | None = None) -> pl.DataFrame:
        """The labels as a MEDS label table: subject_id, prediction_time and the value column of
        `label_type` (binary -> boolean_value, multiclass -> integer_value, regression -> float_value;
        default: boolean_value for a reader's boolean outcome, else float_value); rows with an
        unknown (null) label are left out, as MEDS label values are never null."""
        label_type = label_type or ("binary" if self.labels.schema["label"] == pl.Boolean else "regression")
        if label_type not in MEDS_LABEL_COLUMNS:
            raise DataError(f"no MEDS label column for label type {label_type!r}; known: {', '.join(MEDS_LABEL_COLUMNS)}")
        column, dtype = MEDS_LABEL_COLUMNS[label_type]
        value = pl.col("label") == 1 if label_type == "binary" else pl.col("label").cast(dtype)
        return self.labels.filter(pl.col("label").is_not_null()).select(
            pl.col("stay_id").alias("subject_id"),
            meds_time(pl.col("prediction_time")).alias("prediction_time"),
            value.alias(column),
        )

    def to_meds(self, label_type: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(data, labels) in MEDS layout: `meds_data()` and `meds_labels(label_type)`."""
        return self.meds_data(), self.meds_labels(label_type)


def meds_time(hours: pl.Expr) -> pl.Expr:
    """Hours since admission -> a MEDS timestamp: `MEDS_ANCHOR` plus the hours, rounded to the
    microsecond (PhysioNet's whole minutes and whole hours are exact)."""
    return (pl.lit(MEDS_ANCHOR) + pl.duration(microseconds=(hours * US_PER_HOUR).round().cast(pl.Int64))).cast(pl.Datetime("us"))


def meds_hours(time: pl.Expr) -> pl.Expr:
    """A MEDS timestamp -> hours since `MEDS_ANCHOR`, the inverse of `meds_time`. Computed as
    whole hours + minutes / 60 (the sub-minute rest added to the minutes), the form the readers
    compute their times in, so that P12's whole minutes and P19's whole hours come back as the
    very float they were, not one rounding away."""
    return hours_since(time, pl.lit(MEDS_ANCHOR))


def hours_since(time: pl.Expr, origin: pl.Expr) -> pl.Expr:
    """Hours from `origin` to `time` (timestamps), computed as `meds_hours` computes them."""
    us = (time - origin).dt.total_microseconds()
    minutes = (us % US_PER_HOUR // US_PER_MINUTE).cast(pl.Float64) + (us % US_PER_MINUTE).cast(pl.Float64) / US_PER_MINUTE
    return (us // US_PER_HOUR).cast(pl.Float64) + minutes / 60.0


def _check_columns(table: str, frame: pl.DataFrame, schema: dict) -> None:
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise DataError(f"{table} table lacks columns {missing}; expected {list(schema)}")
    wrong = {c: str(frame.schema[c]) for c, t in schema.items() if frame.schema[c] != t}
    if wrong:
        raise DataError(f"{table} table has wrong column types {wrong}; expected {schema}")
