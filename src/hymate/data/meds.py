"""Reader for MEDS 0.4 datasets (the Medical Event Data Standard): any cohort a MEDS ETL produced.

Layout (https://github.com/Medical-Event-Data-Standard/meds): ``data/**/*.parquet`` shards with
``subject_id, time, code, numeric_value`` (``text_value`` and extra columns allowed, not read),
``metadata/dataset.json``, ``metadata/codes.parquet``, ``metadata/subject_splits.parquet``
(``train`` / ``tuning`` / ``held_out``). Every shard's schema and every metadata table is checked
with the `meds` package's own schemas; a shard that does not follow them is an error naming it.

What becomes what:

- events: every row with a time. ``code`` becomes the variable, ``numeric_value`` the value; a
  row without a numeric value (a diagnosis, a medication, a procedure: most of a real EHR) is an
  event whose value is null, "present", which the models embed apart from any number.
- time: hours since the subject's *origin*: the dataset's declared time anchor if it has one
  (``metadata/hymate.json``, which `hymate export meds` writes: PhysioNet's ICU admission, so the
  round trip gives back the native times exactly), else the subject's first timed row (other
  than ``MEDS_BIRTH``). One clock per subject, so a subject with many prediction times is scored
  in one pass, as the P19 hourly task is; label times are put on the same clock by the task
  (`hymate.tasks.meds`). The origin is kept per stay (``stays.origin``).
- statics: rows with a null time, one column per code (a ``STATIC//`` prefix, hymate's export
  convention, is dropped): the numeric value, or 1.0 for a code without one. ``MEDS_BIRTH``
  becomes the static ``age`` (years at the origin) unless a static of that name exists.
- stays: one per subject (``stay_id`` = ``subject_id``); ``split_group`` is the subject's split
  in ``subject_splits.parquet`` (``train`` / ``tuning`` / ``held_out``), or ``none``.
- labels: MEDS keeps labels outside the dataset (ACES or any other tool writes them); the
  prepared data have none, and a task reads them from its label files.

Reading is lazy (`polars.scan_parquet` over the shards, selecting the four columns), so memory
follows the rows read, not the shards' other columns. Values that are NaN or infinite are
dropped and counted; a subject in two shards, a null subject_id or code, or a static code with
two different values for one subject is an error listing the cases.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
from flexible_schema.exceptions import SchemaValidationError, TableValidationError

from hymate.data.schema import EventData, hours_since
from hymate.data.sources import Source, content_hash, read_json_object
from hymate.errors import DataError, DataNotFoundError

NAME = "meds"
READER_VERSION = 1
WINDOW_HOURS = None
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {}  # MEDS values are whatever the ETL wrote
STATIC_PREFIX = "STATIC//"
BIRTH = meds.birth_code
_SHARD_RE = re.compile(r"(?:^|/)data/.+\.parquet$")
_EXAMPLES = 5
COLUMNS = {"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.Float64}


def wanted(path: str) -> bool:
    return bool(_SHARD_RE.search(path)) or path.endswith(
        (meds.subject_splits_filepath, meds.code_metadata_filepath, meds.dataset_metadata_filepath)
    )


def shards(source: Source) -> list[Path]:
    """The data shards under a MEDS root, sorted (regular files inside the root only)."""
    if not source.root.is_dir():
        raise DataNotFoundError(f"a MEDS dataset is a folder (with data/ and metadata/); {source.root} is not one")
    found = [p for p in source._files() if _SHARD_RE.search(p.relative_to(source.root).as_posix())]
    if not found:
        raise DataNotFoundError(f"no MEDS data shards (data/*.parquet) under {source.root}")
    return found


def fingerprint(source: Source) -> str:
    """The cache key's view of the input: path, size and modification time of every shard and
    metadata file. Cheap on every load (no byte is read); the content hash is taken once, at
    preparation, and kept in the report."""
    h = hashlib.sha256()
    for path in source._files():
        rel = path.relative_to(source.root).as_posix()
        if wanted(rel):
            st = path.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read(source: Source, progress: bool = True, require_labels: bool = True) -> EventData:
    """Read a MEDS dataset into the common event model (`require_labels` is unused: MEDS labels
    belong to tasks)."""
    files = shards(source)
    for path in files:
        _check_shard_schema(path, source.root)
    splits = _subject_splits(source.root)
    metadata = _dataset_metadata(source.root)
    metadata["hymate"] = hymate_notes(source.root)
    _check_codes(source.root)
    rows = pl.scan_parquet(files, include_file_paths="_file").select(
        pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(pl.Datetime("us")), pl.col("code").cast(pl.String),
        pl.col("numeric_value").cast(pl.Float64), pl.col("_file"),
    ).collect()  # fmt: skip
    return _build(rows, splits, metadata, source, files)


def _build(rows: pl.DataFrame, splits: pl.DataFrame | None, metadata: dict, source: Source, files: list[Path]) -> EventData:
    root = source.root
    problems: list[str] = []
    nulls = rows.filter(pl.col("subject_id").is_null() | pl.col("code").is_null())
    if nulls.height:
        problems.append(f"{nulls.height:,} rows with a null subject_id or code (e.g. in {_rel(nulls.item(0, '_file'), root)})")
    spread = rows.group_by("subject_id").agg(pl.col("_file").unique().sort()).filter(pl.col("_file").list.len() > 1)
    if spread.height:
        ex = "; ".join(f"subject {s} in {', '.join(_rel(f, root) for f in fs[:2])}" for s, fs in spread.head(3).iter_rows())
        problems.append(f"{spread.height:,} subjects are in more than one shard (MEDS keeps a subject in one): {ex}")
    if problems:
        raise DataError(f"MEDS data under {root}: " + "; ".join(problems))

    skipped: dict[str, dict] = {}
    bad = pl.col("numeric_value").is_nan() | pl.col("numeric_value").is_infinite()
    dropped = rows.filter(bad.fill_null(False))
    if dropped.height:
        skipped["numeric_value NaN or infinite"] = {
            "count": dropped.height,
            "examples": [f"{_rel(f, root)}: subject {s} {c} = {v!r}" for s, c, v, f in
                         dropped.head(_EXAMPLES).select("subject_id", "code", "numeric_value", "_file").iter_rows()],
        }  # fmt: skip
        rows = rows.filter(~bad.fill_null(False))

    # --- statics: null-time rows, one column per code ------------------------------------------
    static_rows = rows.filter(pl.col("time").is_null()).with_columns(
        pl.col("code").str.strip_prefix(STATIC_PREFIX), pl.col("numeric_value").fill_null(1.0)
    )
    conflicts = static_rows.group_by("subject_id", "code").agg(pl.col("numeric_value").n_unique().alias("n")).filter(pl.col("n") > 1)
    if conflicts.height:
        ex = ", ".join(f"subject {s} {c}" for s, c, _ in conflicts.head(3).iter_rows())
        raise DataError(f"MEDS data under {root}: {conflicts.height:,} static codes have two values for one subject ({ex})")
    timed = rows.filter(pl.col("time").is_not_null())
    origin = timed.filter(pl.col("code") != BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("origin"))
    if anchor := (metadata.get("hymate") or {}).get("time_anchor"):
        origin = origin.with_columns(pl.lit(dt.datetime.fromisoformat(anchor)).cast(pl.Datetime("us")).alias("origin"))
    subjects = rows.select("subject_id").unique().sort("subject_id")
    statics = subjects
    if static_rows.height:
        wide = static_rows.unique(["subject_id", "code"]).pivot(on="code", index="subject_id", values="numeric_value")
        statics = subjects.join(wide, on="subject_id", how="left")
    births = timed.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("_birth"))
    if births.height and "age" not in statics.columns:
        age = births.join(origin, on="subject_id").select(
            "subject_id", ((pl.col("origin") - pl.col("_birth")).dt.total_seconds() / (365.25 * 86400)).alias("age"))
        statics = statics.join(age, on="subject_id", how="left")
    declared = (metadata.get("hymate") or {}).get("static_columns") or []  # hymate's export lists them all
    statics = statics.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in declared if c not in statics.columns)
    statics = statics.select("subject_id", *sorted(c for c in statics.columns if c != "subject_id")).rename({"subject_id": "stay_id"})

    # --- events: hours since the subject's origin -----------------------------------------------
    events = (
        timed.filter(pl.col("code") != BIRTH)
        .join(origin, on="subject_id")
        .select(
            pl.col("subject_id").alias("stay_id"),
            hours_since(pl.col("time"), pl.col("origin")).alias("time"),
            pl.col("code").alias("variable"),
            pl.col("numeric_value").alias("value"),
        )
        .sort("stay_id", "time", "variable", maintain_order=True)
    )

    # --- stays ---------------------------------------------------------------------------------
    counts = events.group_by("stay_id").len("n_events")
    stays = subjects.rename({"subject_id": "stay_id"}).join(counts, on="stay_id", how="left").join(
        origin.rename({"subject_id": "stay_id"}), on="stay_id", how="left")
    group = pl.lit("none")
    if splits is not None:
        stays = stays.join(splits.rename({"subject_id": "stay_id"}), on="stay_id", how="left")
        group = pl.col("split").fill_null("none")
    stays = stays.select("stay_id", group.alias("split_group"), pl.col("n_events").fill_null(0).cast(pl.Int64), "origin")
    excluded = {}
    empty = stays.filter(pl.col("n_events") == 0).get_column("stay_id").to_list()
    if empty:
        excluded["no timed events (statics only)"] = {"count": len(empty), "ids": empty[:50]}
    keep = pl.col("stay_id").is_in(stays.filter(pl.col("n_events") > 0).get_column("stay_id").implode())
    stays, statics = stays.filter(keep), statics.filter(keep)
    labels = pl.DataFrame(schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean})
    report = {
        "source": str(root),
        "dataset_metadata": metadata,
        "shards": len(files),
        "rows_read": rows.height + dropped.height,
        "records_read": subjects.height,
        "stays": stays.height,
        "events": events.height,
        "valueless_events": int(events.get_column("value").null_count()),
        "codes": int(events.get_column("variable").n_unique()),
        "static_columns": [c for c in statics.columns if c != "stay_id"],
        "excluded_stays": excluded,
        "skipped_values": skipped,
        "content_sha256": content_hash(files),
    }
    return EventData(name=NAME, events=events, statics=statics.sort("stay_id"), labels=labels, stays=stays.sort("stay_id"),
                     report=report)  # fmt: skip


# --- checks of the files, with the meds package's schemas ------------------------------------------
def _check_shard_schema(path: Path, root: Path) -> None:
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
        raise DataError(f"{_rel(path, root)} is not a readable Parquet file ({exc})") from None
    try:
        meds.DataSchema.validate(schema.empty_table())
    except SchemaValidationError as exc:
        raise DataError(f"{_rel(path, root)} does not follow the MEDS data schema: {exc}") from None


def _subject_splits(root: Path) -> pl.DataFrame | None:
    path = root / meds.subject_splits_filepath
    if not path.is_file():
        return None
    table = _read_table(path, root, meds.SubjectSplitSchema)
    frame = pl.from_arrow(table).select(pl.col("subject_id").cast(pl.Int64), "split")
    dupes = frame.filter(pl.col("subject_id").is_duplicated())
    if dupes.height:
        raise DataError(f"{_rel(path, root)}: {dupes.get_column('subject_id').n_unique():,} subjects are in two splits, "
                        f"e.g. {dupes.get_column('subject_id').head(3).to_list()}")  # fmt: skip
    return frame


def hymate_notes(root: Path) -> dict:
    """`metadata/hymate.json` (written by `hymate export meds`: the time anchor, each label file's
    task settings), or {} for a MEDS dataset from elsewhere."""
    path = Path(root) / "metadata" / "hymate.json"
    return read_json_object(path) if path.is_file() else {}


def _check_codes(root: Path) -> None:
    path = root / meds.code_metadata_filepath
    if path.is_file():
        _read_table(path, root, meds.CodeMetadataSchema)


def _dataset_metadata(root: Path) -> dict:
    path = root / meds.dataset_metadata_filepath
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        meds.DatasetMetadataSchema.validate(raw)
    except (ValueError, SchemaValidationError, TableValidationError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{_rel(path, root)} is not valid MEDS dataset metadata: {exc}") from None
    return {k: raw.get(k) for k in ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version")}


def _read_table(path: Path, root: Path, schema):
    try:
        table = pq.read_table(path)
        schema.validate(table)
    except (SchemaValidationError, TableValidationError) as exc:
        raise DataError(f"{_rel(path, root)} does not follow the MEDS schema {schema.__name__}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{_rel(path, root)} is not a readable Parquet file ({exc})") from None
    return table


def _rel(path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
