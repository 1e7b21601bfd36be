"""MEDS out: a prepared dataset, its tasks' labels and one split, written as a MEDS 0.4 dataset.

    OUT/
      data/<i>.parquet               subject_id, time, code, numeric_value (`EventData.meds_data`);
                                     subjects in contiguous blocks of ascending id, each in one shard,
                                     its static measurements (null time) first, then sorted by time
      metadata/codes.parquet         code, description (the unit, where hymate knows it), parent_codes (null)
      metadata/dataset.json          dataset_name, dataset_version (the prepared data's cache key),
                                     etl_name "hymate", etl_version, meds_version, created_at
      metadata/subject_splits.parquet  subject_id, split: the split's train -> train, val -> tuning,
                                     test -> held_out (only the split's subjects)
      metadata/hymate.json           what the MEDS files do not say: the time anchor, the static code
                                     prefix, each label file's task, label type and classes
      labels/<task short>.parquet    subject_id, prediction_time and the label type's value column
                                     (boolean_value, integer_value, float_value); labelled rows only

Every table is checked against the `meds` package's own schemas before it is written, and the
folder is written through `hymate.io.atomic_folder`: a killed export leaves the old OUT or none.
Times are `MEDS_ANCHOR` + hours (`hymate.data.schema.meds_time`); `meds_hours` maps them back.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from flexible_schema.exceptions import SchemaValidationError, TableValidationError

import hymate
from hymate.data.plausible import RANGES
from hymate.data.schema import MEDS_ANCHOR, MEDS_LABEL_COLUMNS, STATIC_CODE_PREFIX, EventData
from hymate.errors import DataError
from hymate.io import atomic_folder, write_atomic

SUBJECTS_PER_SHARD = 10_000  # the default shard count: ceil(subjects / this)
MEDS_SPLIT_NAMES = {"train": meds.train_split, "val": meds.tuning_split, "test": meds.held_out_split}


def export_meds(data: EventData, out: Path | str, tasks=(), split=None, shards: int | None = None,
                force: bool = False) -> dict:  # fmt: skip
    """Write `data` (a prepared dataset, not a task's view) as a MEDS dataset at `out`, with one
    label file per task of `tasks` and the subject splits of `split` (a `Split`; none if None).
    `shards`: how many data files (default: one per `SUBJECTS_PER_SHARD` subjects). An `out` that
    exists and is not empty is replaced only with `force`. Returns what was written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out} exists and is not empty; choose another folder or pass --force to replace it")
    subjects = np.sort(data.stays.get_column("stay_id").to_numpy())
    n_shards = shards if shards is not None else max(1, math.ceil(len(subjects) / SUBJECTS_PER_SHARD))
    if not 1 <= n_shards <= max(1, len(subjects)):
        raise DataError(f"shards must be 1 to {max(1, len(subjects)):,} (one subject or more each), got {shards}")
    table = data.meds_data()
    unknown = table.filter(~pl.col("subject_id").is_in(pl.Series(subjects).implode())).get_column("subject_id").unique()
    if len(unknown):
        raise DataError(f"events or statics of {len(unknown):,} subjects that are not in the stays table, e.g. {unknown[:3].to_list()}")
    labels = {task.short: (task, _labels(data, task)) for task in tasks}
    splits = _subject_splits(split, subjects) if split is not None else None

    summary = {"out": str(out), "subjects": len(subjects), "events": data.events.height,
               "static_measurements": table.get_column("time").null_count(), "rows": table.height,
               "shards": n_shards, "labels": {short: frame.height for short, (_, frame) in labels.items()},
               "split": split.name if split is not None else None, "meds_version": meds.__version__}  # fmt: skip
    with atomic_folder(out) as tmp:
        (tmp / meds.data_subdirectory).mkdir()
        ids = table.get_column("subject_id").to_numpy()
        for k, block in enumerate(np.array_split(subjects, n_shards)):
            lo, hi = np.searchsorted(ids, block[0], "left"), np.searchsorted(ids, block[-1], "right")
            _write(meds.DataSchema, table.slice(lo, hi - lo), tmp / meds.data_subdirectory / f"{k}.parquet")
        _write(meds.CodeMetadataSchema, _codes(table), tmp / meds.code_metadata_filepath)
        if splits is not None:
            _write(meds.SubjectSplitSchema, splits, tmp / meds.subject_splits_filepath)
        for short, (_, frame) in labels.items():
            _write(meds.LabelSchema, frame, tmp / "labels" / f"{short}.parquet")
        metadata = {"dataset_name": data.name, "dataset_version": data.report.get("cache_key"), "etl_name": "hymate",
                    "etl_version": hymate.__version__, "meds_version": meds.__version__,
                    "created_at": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
        metadata = {k: v for k, v in metadata.items() if v is not None}
        _check(meds.DatasetMetadataSchema, metadata, "metadata/dataset.json")
        write_atomic(tmp / meds.dataset_metadata_filepath, json.dumps(metadata, indent=1))
        write_atomic(tmp / "metadata" / "hymate.json", json.dumps(_hymate_notes(labels, summary, data), indent=1))
    return summary


def _labels(data: EventData, task) -> pl.DataFrame:
    """The task's label table in MEDS form, its labelled rows only."""
    return task.view(data).meds_labels(task.label_type)


def _subject_splits(split, subjects: np.ndarray) -> pl.DataFrame:
    rows = [(int(i), MEDS_SPLIT_NAMES[part]) for part in MEDS_SPLIT_NAMES for i in getattr(split, part)]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "split": pl.String}, orient="row").sort("subject_id")
    missing = frame.filter(~pl.col("subject_id").is_in(pl.Series(subjects).implode()))
    if missing.height:
        raise DataError(f"split {split.name} names {missing.height:,} subjects that are not in the data, "
                        f"e.g. {missing.get_column('subject_id').head(3).to_list()}")  # fmt: skip
    if frame.get_column("subject_id").is_duplicated().any():
        raise DataError(f"split {split.name} puts a subject in two parts")
    return frame


def _codes(table: pl.DataFrame) -> pl.DataFrame:
    """Every code of the data, described by its unit where `hymate.data.plausible` knows it."""
    codes = sorted(table.get_column("code").unique().to_list())
    return pl.DataFrame({"code": codes, "description": [_describe(c) for c in codes],
                         "parent_codes": pl.Series([None] * len(codes), dtype=pl.List(pl.String))})  # fmt: skip


def _describe(code: str) -> str:
    static = code.startswith(STATIC_CODE_PREFIX)
    name = code.removeprefix(STATIC_CODE_PREFIX)
    unit = next((r.unit for n, r in RANGES.items() if n.lower() == name.lower()), None)  # statics: "weight"
    text = f"{name} ({unit})" if unit else name
    return f"{text}; static descriptor (a measurement with a null time)" if static else text


def _hymate_notes(labels: dict, summary: dict, data: EventData) -> dict:
    return {
        # every static column, also one no stay has a value of (MEDS would otherwise lose it)
        "static_columns": [c for c in data.statics.columns if c != "stay_id"],
        "time": f"{MEDS_ANCHOR.isoformat()} + hours since ICU admission (the source has no calendar dates)",
        "time_anchor": MEDS_ANCHOR.isoformat(),
        "static_code_prefix": STATIC_CODE_PREFIX,
        "split": summary["split"],
        "labels": {short: {"task": task.name, "label_type": task.label_type,
                           "value_column": MEDS_LABEL_COLUMNS[task.label_type][0], "classes": list(task.classes),
                           "rows": summary["labels"][short], "categorical_statics": list(task.categorical_statics),
                           "window_hours": task.window_hours, "lookback_hours": task.lookback_hours,
                           "model_defaults": dict(task.model_defaults), "recipe": dict(task.recipe)}  # fmt: skip
                   for short, (task, _) in labels.items()},
    }


def _check(schema, value, what: str):
    try:
        schema.validate(value)
    except (SchemaValidationError, TableValidationError) as exc:
        raise DataError(f"MEDS export: {what} fails meds.{schema.__name__}: {exc}") from None


def _write(schema, frame: pl.DataFrame, path: Path) -> None:
    """`frame` cast to `schema`'s Arrow types (Polars writes large strings), checked, written."""
    what = "/".join(path.parts[-2:])
    try:
        table = schema.align(frame.to_arrow())
    except (SchemaValidationError, TableValidationError) as exc:
        raise DataError(f"MEDS export: {what} does not fit meds.{schema.__name__}: {exc}") from None
    _check(schema, table, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
