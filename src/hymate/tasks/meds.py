"""Tasks on a MEDS dataset: a MEDS label file (ACES's output, or any other tool's) is the task.

    hymate train meds --data-dir MEDS_ROOT --task labels/mortality.parquet   # a file, or a folder of shards

A label file has ``subject_id, prediction_time`` and one value column (the `meds` package's
``LabelSchema``); the one that holds values sets the label type:

- ``boolean_value`` -> binary;
- ``integer_value`` -> multiclass, the classes are the distinct integers in order (write a count
  you want regressed as ``float_value``);
- ``categorical_value`` -> multiclass, the classes are the distinct strings in order;
- ``float_value`` -> regression.

A subject may have many prediction times. Prediction times go on the reader's clock: hours since
the subject's origin (`hymate.data.meds`). A label for a subject with no events in the data, or at
a time before the subject's first event (nothing to read), is left out and counted. The clock
scale of the models (`window_hours`) is the look-back window when one is given, else one week:
times are embedded as 2 t / window - 1, so long histories want a look-back.

Vocabulary: a code seen fewer than MIN_CODE_COUNT (10) times in the training subjects, and a code
never seen there, is read as its prefix's "other" token (`LAB//x` -> `LAB//OTHER`, a code without
a prefix -> `OTHER`); how many codes and events were folded is in the run's report.
"""

from __future__ import annotations

import re
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
from flexible_schema.exceptions import SchemaValidationError, TableValidationError

from hymate.data import meds as meds_reader
from hymate.data.schema import EventData
from hymate.errors import CheckpointError, DataError, DataNotFoundError
from hymate.tasks.base import Task, excluded

VALUE_COLUMNS = {"boolean_value": "binary", "integer_value": "multiclass", "categorical_value": "multiclass",
                 "float_value": "regression"}  # fmt: skip
DEFAULT_WINDOW_HOURS = 168.0
MIN_CODE_COUNT = 10  # a code seen fewer times in the training subjects is read as its prefix's OTHER token
PROTOCOLS = ("meds", "splits5", "kfold5")


def label_files(path: Path) -> list[Path]:
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if files:
            return files
        raise DataNotFoundError(f"no label files (*.parquet) under {path}")
    raise DataNotFoundError(f"label file or folder {path} does not exist")


def read_labels(path: Path) -> tuple[pl.DataFrame, str]:
    """(subject_id, prediction_time, value) and the value column's name, every file validated."""
    frames = []
    for file in label_files(path):
        try:
            table = pq.read_table(file)
            # A value column without any value is as good as absent (some writers emit all four).
            empty = [c for c in VALUE_COLUMNS if c in table.column_names and table.column(c).null_count == table.num_rows]
            table = table.drop_columns(empty) if len(empty) < len(VALUE_COLUMNS) else table
            meds.LabelSchema.validate(table)
        except (SchemaValidationError, TableValidationError) as exc:
            raise DataError(f"{file} does not follow the MEDS label schema: {exc}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{file} is not a readable Parquet file ({exc})") from None
        frames.append(pl.from_arrow(table).with_columns(pl.lit(str(file)).alias("_file")))
    labels = pl.concat(frames, how="diagonal_relaxed")
    filled = [c for c in VALUE_COLUMNS if c in labels.columns and labels.get_column(c).null_count() < labels.height]
    if len(filled) != 1:
        raise DataError(f"labels at {path}: exactly one of {', '.join(VALUE_COLUMNS)} must hold values; "
                        f"{'none does' if not filled else ', '.join(filled) + ' do'}")  # fmt: skip
    column = filled[0]
    empty = labels.filter(pl.col(column).is_null())
    if empty.height:
        raise DataError(f"labels at {path}: {empty.height:,} rows have no {column} (e.g. subject "
                        f"{empty.item(0, 'subject_id')} in {empty.item(0, '_file')})")  # fmt: skip
    labels = labels.select(pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us")),
                           pl.col(column).alias("value"))  # fmt: skip
    dupes = labels.filter(pl.struct("subject_id", "prediction_time").is_duplicated())
    if dupes.height:
        raise DataError(f"labels at {path}: {dupes.height:,} rows repeat a (subject_id, prediction_time), e.g. "
                        f"subject {dupes.item(0, 'subject_id')} at {dupes.item(0, 'prediction_time')}")  # fmt: skip
    return labels, column


def task_name(path: Path) -> str:
    stem = Path(path).name.removesuffix(".parquet")
    return "meds-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def label_task(path: Path | str, lookback_hours: float | None = None, window_hours: float | None = None) -> Task:
    """The task a MEDS label file declares (see the module docstring)."""
    path = Path(path).expanduser()
    labels, column = read_labels(path)
    # A label file of `hymate export meds` carries its task's settings (metadata/hymate.json of its dataset).
    notes = meds_reader.hymate_notes(path.parent.parent).get("labels", {}).get(path.stem, {}) if path.is_file() else {}
    classes: list[str] = []
    if VALUE_COLUMNS[column] == "multiclass":
        classes = [str(v) for v in sorted(labels.get_column("value").unique().to_list())]
        if len(classes) < 2 and not (column == "integer_value" and len(notes.get("classes") or []) >= 2):
            raise DataError(f"labels at {path}: a multiclass task needs two classes or more; {column} holds {classes}")
    lookback = lookback_hours if lookback_hours is not None else notes.get("lookback_hours")
    spec = {"labels": str(path.resolve()), "column": column, "classes": classes, "lookback_hours": lookback,
            "window_hours": float(window_hours or notes.get("window_hours") or lookback or DEFAULT_WINDOW_HOURS),
            "class_names": notes.get("classes") if column == "integer_value" else None,
            "categorical_statics": list(notes.get("categorical_statics", [])),
            # the exported task's model options and training recipe (else: the prediction time as an input)
            "model_defaults": notes.get("model_defaults", {"query_time": True}), "recipe": notes.get("recipe", {})}  # fmt: skip
    return _task(spec, labels)


def task_from_spec(spec: dict, file: Path | None = None) -> Task:
    """The task of a checkpoint trained on MEDS labels, from the spec it recorded; its labels are
    read again only if a command needs them (evaluate), so `predict` works without the file."""
    try:
        if spec["column"] not in VALUE_COLUMNS:
            raise ValueError(f"unknown value column {spec['column']!r}")
        keys = ("labels", "column", "classes", "lookback_hours", "window_hours")
        return _task({**{k: spec[k] for k in keys}, "class_names": spec.get("class_names"),
                      "categorical_statics": list(spec.get("categorical_statics") or []),
                      "model_defaults": dict(spec.get("model_defaults", {"query_time": True})),
                      "recipe": dict(spec.get("recipe") or {})}, None)  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: field 'task_spec' is not a MEDS task spec ({exc})") from None


def encode_labels(rows: pl.DataFrame, label_type: str, classes: tuple[str, ...], indices: bool, path: Path) -> pl.DataFrame:
    """`rows`' value as the task's label: 0/1, a class index (the position of its class in
    `classes`; `indices`: already one), or the number. A class not in `classes` is an error."""
    if label_type == "binary" or (label_type == "multiclass" and indices):
        return rows.with_columns(pl.col("value").cast(pl.Float64))
    if label_type == "multiclass":
        index = {c: k for k, c in enumerate(classes)}
        unknown = rows.filter(~pl.col("value").cast(pl.String).is_in(list(classes)))
        if unknown.height:
            raise DataError(f"labels at {path}: classes {unknown.get_column('value').unique().head(5).to_list()} "
                            f"are not among the task's {list(classes)}")  # fmt: skip
        return rows.with_columns(pl.col("value").cast(pl.String).replace_strict(index, return_dtype=pl.Float64))
    return rows


def lazy_labels(labels: pl.DataFrame | None, read, column: str, path: Path):
    """The task's labels: `labels` when they were read to build the task, else read on first use (a
    task rebuilt from a checkpoint's spec: `predict` needs no label file); a file that now holds
    another value column than the task was built on is an error."""
    cache = {"labels": labels}

    def get() -> pl.DataFrame:
        if cache["labels"] is None:
            cache["labels"], found = read()
            if found != column:
                raise DataError(f"labels at {path} now hold {found}; the task was built on {column}")
        return cache["labels"]

    return get


def _task(spec: dict, labels: pl.DataFrame | None) -> Task:
    path, column, classes = Path(spec["labels"]), spec["column"], tuple(spec["classes"])
    label_type = VALUE_COLUMNS[column]
    get_labels = lazy_labels(labels, lambda: read_labels(path), column, path)

    def build(data: EventData) -> EventData:
        rows = encode_labels(get_labels(), label_type, classes, bool(spec.get("class_names")), path)
        joined = rows.join(data.stays.select(pl.col("stay_id").alias("subject_id"), "origin"), on="subject_id", how="left")
        report = data.report
        unknown = joined.filter(pl.col("origin").is_null())
        if unknown.height:
            report = excluded(report, "label for a subject with no events in the data (left out)",
                              unknown.get_column("subject_id").unique().to_list())  # fmt: skip
        joined = joined.filter(pl.col("origin").is_not_null()).with_columns(
            ((pl.col("prediction_time") - pl.col("origin")).dt.total_microseconds() / 3.6e9).alias("hours"))
        early = joined.filter(pl.col("hours") < 0)
        if early.height:
            report = excluded(report, "prediction time before the subject's first event (nothing to read; left out)",
                              early.get_column("subject_id").unique().to_list())  # fmt: skip
        table = joined.filter(pl.col("hours") >= 0).select(
            pl.col("subject_id").alias("stay_id"), pl.col("hours").alias("prediction_time"), pl.col("value").alias("label"))
        return EventData(data.name, data.events, data.statics, table, data.stays, report)

    counted = "" if labels is None else f"; {labels.height:,} predictions of {labels.get_column('subject_id').n_unique():,} subjects"
    return Task(
        name=task_name(path), short=str(path), dataset=meds_reader.NAME,
        description=f"MEDS labels {path.name} ({column}{counted})",
        label_type=label_type, build=build,
        # integer classes written by `hymate export meds` are indices of its named classes
        classes=tuple(spec["class_names"]) if spec.get("class_names") and len(spec["class_names"]) >= len(classes) else classes,
        categorical_statics=tuple(spec["categorical_statics"]), min_code_count=MIN_CODE_COUNT,
        window_hours=float(spec["window_hours"]), lookback_hours=spec["lookback_hours"],
        protocols=PROTOCOLS, model_defaults=dict(spec["model_defaults"]), recipe=dict(spec["recipe"]),
        positive_label=f"{column} true" if label_type == "binary" else "positive",
        label_rule=f"MEDS label file {path} ({column}); labels of subjects without events or before their first event left out",
        spec=spec,
    )  # fmt: skip
