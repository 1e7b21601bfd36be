"""Tasks on your own tables (dataset ``table``): a label table is the task, as a MEDS label file is.

    hymate train table --data-dir DATA --task labels.csv      # a .csv / .parquet file, or a folder of them

A label table has ``stay_id, prediction_time`` and one value column, the MEDS label columns
(`hymate.tasks.meds`): ``boolean_value`` -> binary, ``integer_value`` or ``categorical_value`` ->
multiclass (classes: the distinct values in order), ``float_value`` -> regression; or a single
``label`` column whose type is given (``--label-type`` of `hymate prepare table`, kept in the
data folder's hymate-table.json; a multiclass ``label`` of integers is ``integer_value``).

``prediction_time`` is written in the events' unit: numbers (hours, or minutes with
``--time-unit minutes``) on the events' clock, or timestamps, which go on each stay's clock
(hours since its origin, `hymate.data.tables`). Mixing numbers and timestamps, another column, a
blank or unreadable cell, a duplicated (stay_id, prediction_time) or an empty file is an error
naming the file and row. A label for a stay without events, or at a time before the stay's first
event (nothing to read), is left out and counted, as on MEDS. The clock scale (`window_hours`) is
the look-back window when one is given, else one week.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from hymate.data import tables as reader
from hymate.data.schema import EventData, hours_since
from hymate.errors import CheckpointError, DataError
from hymate.tasks.base import Task, excluded
from hymate.tasks.meds import DEFAULT_WINDOW_HOURS, VALUE_COLUMNS, encode_labels, lazy_labels

PROTOCOLS = ("splits5", "kfold5")
LABEL_COLUMN = "label"
_BY_TYPE = {"binary": "boolean_value", "multiclass": "categorical_value", "regression": "float_value"}
_TRUE, _FALSE = {"1", "true", "t", "yes", "1.0"}, {"0", "false", "f", "no", "0.0"}


def read_labels(path: Path, label_type: str | None = None) -> tuple[pl.DataFrame, str]:
    """(stay_id, prediction_time, value) and the value column's MEDS name, every row checked;
    prediction_time is Float64 (numbers as written) or Datetime (timestamps)."""
    frames, column = [], None
    for file in reader.table_files(path, "labels"):
        frame, found = _read_file(file, label_type)
        if column is not None and found != column:
            raise DataError(f"labels at {path}: {file.name} holds {found}, the other files {column}; use one value column")
        column = found
        frames.append(frame)
    kinds = {f.schema["prediction_time"] for f in frames}
    if len(kinds) > 1:
        raise DataError(f"labels at {path}: mixed time units: some files have numbers, others timestamps")
    labels = pl.concat(frames)
    dupes = labels.filter(pl.struct("stay_id", "prediction_time").is_duplicated())
    if dupes.height:
        first = dupes.row(0, named=True)
        raise DataError(f"labels at {path}: {dupes.height:,} rows repeat a (stay_id, prediction_time), e.g. "
                        f"{first['_file']} row {first['_row']} (stay {first['stay_id']} at {first['prediction_time']})")  # fmt: skip
    return labels.drop("_file", "_row"), column


def _read_file(file: Path, label_type: str | None) -> tuple[pl.DataFrame, str]:
    frame, _ = reader.read_table(file)
    columns = [c for c in frame.columns if c != "_row"]
    values = [c for c in columns if c in VALUE_COLUMNS or c == LABEL_COLUMN]
    unknown = [c for c in columns if c not in ("stay_id", "prediction_time", *values)]
    missing = [c for c in ("stay_id", "prediction_time") if c not in columns]
    if missing or unknown or len(values) != 1:
        problem = (f"missing {missing}" if missing else f"unknown column {unknown[0]!r}" if unknown
                   else f"{len(values)} value columns ({', '.join(values) or 'none'})")  # fmt: skip
        raise DataError(f"{file}: a label table has stay_id, prediction_time and one of {', '.join(VALUE_COLUMNS)} "
                        f"or {LABEL_COLUMN!r}; {problem}")  # fmt: skip
    column = values[0]
    if column == LABEL_COLUMN:
        if label_type is None:
            raise DataError(f"{file}: a {LABEL_COLUMN!r} column needs its label type: pass --label-type binary, multiclass "
                            f"or regression to `hymate prepare table`, or name the column {', '.join(VALUE_COLUMNS)}")  # fmt: skip
        column = _BY_TYPE[label_type]
        if label_type == "multiclass" and frame.get_column(LABEL_COLUMN).cast(pl.Int64, strict=False).null_count() == 0:
            column = "integer_value"
        frame = frame.rename({LABEL_COLUMN: column})
    sample = frame.get_column("prediction_time")
    unit = "timestamp" if sample.dtype in (pl.Date,) or isinstance(sample.dtype, pl.Datetime) or (
        sample.dtype == pl.String and sample.str.contains(reader._TIMESTAMP_LIKE).any()) else "hours"  # fmt: skip
    times = reader.parse_times(frame, file, "prediction_time", unit)
    value = _parse_value(frame, file, column)
    return frame.select(reader.stay_ids(frame, file), times, value.alias("value"), pl.lit(str(file)).alias("_file"), "_row"), column


def _parse_value(frame: pl.DataFrame, file: Path, column: str) -> pl.Series:
    raw = frame.get_column(column)
    if raw.null_count():
        raise DataError(f"{file}: {raw.null_count():,} rows have no {column}, e.g. row {frame.filter(raw.is_null()).item(0, '_row')}")
    text = raw.cast(pl.String).str.to_lowercase()
    if column == "boolean_value":
        parsed = pl.Series(column, [True if t in _TRUE else False if t in _FALSE else None for t in text], dtype=pl.Boolean)
        rule = "true/false or 1/0"
    elif column == "integer_value":
        parsed, rule = raw.cast(pl.Int64, strict=False), "an integer"
    elif column == "float_value":
        parsed, rule = raw.cast(pl.Float64, strict=False), "a finite number"
        parsed = parsed.set(parsed.is_nan() | parsed.is_infinite(), None)
    else:
        parsed, rule = raw.cast(pl.String), "text"
    bad = frame.filter(parsed.is_null())
    if bad.height:
        raise DataError(f"{file}: {bad.height:,} {column} values are not {rule}, e.g. row {bad.item(0, '_row')} "
                        f"({column} = {bad.item(0, column)!r})")  # fmt: skip
    return parsed


def task_name(path: Path) -> str:
    stem = re.sub(r"\.(csv|parquet)$", "", Path(path).name)
    return "table-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def declared_label_type(path: Path) -> str | None:
    """The --label-type that `hymate prepare table` recorded for this label table, if any
    (hymate-table.json in the label table's folder or the folder above)."""
    path = Path(path).resolve()
    for folder in (path.parent, path.parent.parent):
        if (folder / reader.SPEC_FILE).is_file():
            spec = reader.load_spec(folder)
            if spec.get("labels") is not None and Path(spec["labels"]).resolve() == path:
                return spec.get("label_type")
    return None


def label_task(path: Path | str, label_type: str | None = None, lookback_hours: float | None = None,
               window_hours: float | None = None) -> Task:  # fmt: skip
    """The task a label table declares (see the module docstring)."""
    path = Path(path).expanduser()
    label_type = label_type or declared_label_type(path)
    labels, column = read_labels(path, label_type)
    classes: list[str] = []
    if VALUE_COLUMNS[column] == "multiclass":
        values = sorted(labels.get_column("value").unique().to_list())
        classes = [str(v) for v in values]
        if len(classes) < 2:
            raise DataError(f"labels at {path}: a multiclass task needs two classes or more; {column} holds {classes}")
    spec = {"dataset": reader.NAME, "labels": str(path.resolve()), "column": column, "label_type": label_type,
            "classes": classes, "lookback_hours": lookback_hours,
            "window_hours": float(window_hours or lookback_hours or DEFAULT_WINDOW_HOURS)}  # fmt: skip
    return _task(spec, labels)


def task_from_spec(spec: dict, file: Path | None = None) -> Task:
    """The task of a checkpoint trained on a label table, from the spec it recorded (its labels
    are read again only when a command needs them: evaluate)."""
    try:
        if spec["column"] not in VALUE_COLUMNS:
            raise ValueError(f"unknown value column {spec['column']!r}")
        keys = ("labels", "column", "label_type", "classes", "lookback_hours", "window_hours")
        return _task({"dataset": reader.NAME, **{k: spec[k] for k in keys}}, None)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: field 'task_spec' is not a table task spec ({exc})") from None


def _task(spec: dict, labels: pl.DataFrame | None) -> Task:
    path, column, classes = Path(spec["labels"]), spec["column"], tuple(spec["classes"])
    label_type = VALUE_COLUMNS[column]
    get_labels = lazy_labels(labels, lambda: read_labels(path, spec["label_type"]), column, path)

    def build(data: EventData) -> EventData:
        rows = encode_labels(get_labels(), label_type, classes, False, path)
        unit = data.report.get("table", {}).get("time_unit", "hours")
        stamped = rows.schema["prediction_time"] != pl.Float64
        if stamped != (unit == "timestamp"):
            raise DataError(f"labels at {path}: mixed time units: prediction times are {'timestamps' if stamped else 'numbers'}, "
                            f"the events' time unit is {unit}")  # fmt: skip
        first = data.events.group_by("stay_id").agg(pl.col("time").min().alias("first"))
        joined = rows.join(data.stays.select("stay_id", "origin"), on="stay_id", how="left").join(first, on="stay_id", how="left")
        report = data.report
        unknown = joined.filter(pl.col("first").is_null())
        if unknown.height:
            report = excluded(report, "label for a stay with no events in the data (left out)", unknown.get_column("stay_id").unique().to_list())
        hours = {"timestamp": hours_since(pl.col("prediction_time"), pl.col("origin")),
                 "minutes": pl.col("prediction_time") / 60.0}.get(unit, pl.col("prediction_time"))  # fmt: skip
        joined = joined.filter(pl.col("first").is_not_null()).with_columns(hours.alias("hours"))
        early = joined.filter(pl.col("hours") < pl.col("first"))
        if early.height:
            report = excluded(report, "prediction time before the stay's first event (nothing to read; left out)",
                              early.get_column("stay_id").unique().to_list())  # fmt: skip
        table = joined.filter(pl.col("hours") >= pl.col("first")).select(
            "stay_id", pl.col("hours").alias("prediction_time"), pl.col("value").alias("label"))
        return EventData(data.name, data.events, data.statics, table, data.stays, report)

    counted = "" if labels is None else f"; {labels.height:,} predictions of {labels.get_column('stay_id').n_unique():,} stays"
    return Task(
        name=task_name(path), short=str(path), dataset=reader.NAME,
        description=f"label table {path.name} ({column}{counted})",
        label_type=label_type, build=build, classes=classes,
        window_hours=float(spec["window_hours"]), lookback_hours=spec["lookback_hours"],
        protocols=PROTOCOLS, model_defaults={"query_time": True},
        positive_label=f"{column} true" if label_type == "binary" else "positive",
        label_rule=f"label table {path} ({column}); labels of stays without events or before their first event left out",
        spec=spec,
    )  # fmt: skip
