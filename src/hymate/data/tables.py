"""Reader for your own data as plain tables (dataset ``table``): CSV or Parquet, long or wide.

A data folder holds the tables and, optionally, ``hymate-table.json`` (the *table spec*, which
`hymate prepare table EVENTS ...` writes so that `train`, `evaluate` and `predict` read the same
settings). Without a spec the folder layout is the spec: ``events.csv`` / ``events.parquet`` (or
a folder ``events/`` of such files), optionally ``statics.csv`` / ``statics.parquet``, times in
hours, long or wide detected from the columns. The spec (paths relative to its folder)::

    {"events": "events.csv", "statics": "statics.csv", "labels": "labels.csv",
     "time_unit": "hours", "format": "auto", "label_type": null}

- events, **long**: ``stay_id, time, variable, value``; a blank value is an event without a value
  ("present": a drug given, a diagnosis). Any other column is an error.
- events, **wide**: ``stay_id, time`` and one column per variable; a blank (null) cell is a
  variable not measured then (no event). ``format: auto`` reads a table with both ``variable``
  and ``value`` columns as long, any other as wide.
- statics (optional): ``stay_id`` and one numeric column per static (age, sex as 0/1, ...); with
  ``time_unit: timestamp`` it may hold ``admission_time``.
- time: ``hours`` or ``minutes`` (numbers, on any clock shared with the labels: hours since
  admission is usual), or ``timestamp`` (ISO 8601: ``2024-01-31 08:15[:00[.5]]``, ``T`` allowed).
  With timestamps each stay's clock starts at its *origin*: its ``admission_time`` in the statics
  table when it has one, else its first event; events and prediction times become hours since it
  (kept per stay in ``stays.origin``). Events before the admission time keep negative times.
- labels are not read here: a label file is the task (`hymate.tasks.tables`).

Bad input is never dropped silently. An error (`DataError`) names the file, row and problem: a
missing or unknown column, a column of the wrong type (Parquet), an empty file, a stay_id that is
not an integer or is blank, a time that is blank or of the other unit (a timestamp among hours,
a number among timestamps), a statics stay listed twice, a text-only static column. Counted and
reported (``skipped_values`` / ``skipped_lines`` / ``excluded_stays``, shown by `hymate prepare`):
a value that is not a number, a NaN or infinite value or time, a time that is not readable, a
statics row of a stay without events. Rows are numbered as a spreadsheet shows them: the
header is row 1 of a CSV file, the first data row is row 2 (row 1 of a Parquet file).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from hymate.data.schema import EventData, hours_since
from hymate.data.sources import Source, content_hash, read_json_object
from hymate.errors import DataError, DataNotFoundError
from hymate.io import write_atomic

NAME = "table"
READER_VERSION = 1
WINDOW_HOURS = None
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {}  # your variables: no range is assumed
SPEC_FILE = "hymate-table.json"
TIME_UNITS = ("hours", "minutes", "timestamp")
FORMATS = ("auto", "long", "wide")
LONG_COLUMNS = ("stay_id", "time", "variable", "value")
ADMISSION = "admission_time"
SUFFIXES = (".csv", ".parquet")
_EXAMPLES = 5
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_TIMESTAMP_LIKE = r"^\d{4}-\d{2}-\d{2}"
_SPEC_KEYS = {"events", "statics", "labels", "time_unit", "format", "label_type"}


def wanted(path: str) -> bool:
    return path.endswith((*SUFFIXES, SPEC_FILE))


# --- the table spec --------------------------------------------------------------------------------
def write_spec(folder: Path, events: Path, labels: Path | None = None, statics: Path | None = None,
               time_unit: str = "hours", fmt: str = "auto", label_type: str | None = None) -> Path:  # fmt: skip
    """Write `folder`/hymate-table.json (paths relative to `folder` when inside it); returns its path."""
    folder = Path(folder).expanduser().resolve()
    spec = {"events": events, "statics": statics, "labels": labels, "time_unit": time_unit, "format": fmt,
            "label_type": label_type}  # fmt: skip
    for key in ("events", "statics", "labels"):
        if spec[key] is not None:
            path = Path(spec[key]).expanduser().resolve()
            if not path.exists():
                raise DataNotFoundError(f"{key} table {path} does not exist")
            spec[key] = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)
    _check_spec(spec, folder / SPEC_FILE)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    return folder / SPEC_FILE


def load_spec(root: Path) -> dict:
    """The table spec of a data folder: its hymate-table.json, else the folder layout (see above);
    paths resolved."""
    root = Path(root)
    file = root / SPEC_FILE
    if file.is_file():
        spec = read_json_object(file)
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise DataError(f"{file}: unknown keys {unknown}; known: {sorted(_SPEC_KEYS)}")
        spec = {"statics": None, "labels": None, "time_unit": "hours", "format": "auto", "label_type": None, **spec}
        if not spec.get("events"):
            raise DataError(f"{file}: 'events' (the events table's path) is missing")
    else:
        spec = {"events": _default(root, "events"), "statics": _default(root, "statics"), "labels": _default(root, "labels"),
                "time_unit": "hours", "format": "auto", "label_type": None}  # fmt: skip
        if spec["events"] is None:
            raise DataNotFoundError(f"no {SPEC_FILE} and no events.csv, events.parquet or events/ under {root}")
    _check_spec(spec, file)
    for key in ("events", "statics", "labels"):
        if spec[key] is not None:
            path = Path(spec[key]).expanduser()
            spec[key] = path if path.is_absolute() else root / path
    return spec


def _default(root: Path, stem: str) -> str | None:
    for name in (f"{stem}.csv", f"{stem}.parquet", stem):
        if (root / name).exists():
            return name
    return None


def _check_spec(spec: dict, file: Path) -> None:
    if spec["time_unit"] not in TIME_UNITS:
        raise DataError(f"{file}: time_unit {spec['time_unit']!r} is not one of {', '.join(TIME_UNITS)}")
    if spec["format"] not in FORMATS:
        raise DataError(f"{file}: format {spec['format']!r} is not one of {', '.join(FORMATS)}")
    if spec.get("label_type") not in (None, "binary", "multiclass", "regression"):
        raise DataError(f"{file}: label_type {spec['label_type']!r} is not binary, multiclass or regression")


def table_files(path: Path, what: str = "events") -> list[Path]:
    """A table's files: the file itself, or the *.csv / *.parquet files of a folder (one kind)."""
    path = Path(path)
    if path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise DataError(f"{path}: a {what} table is a .csv or .parquet file (or a folder of them)")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise DataNotFoundError(f"no .csv or .parquet files in the {what} folder {path}")
        if len({p.suffix for p in files}) > 1:
            raise DataError(f"the {what} folder {path} mixes .csv and .parquet files; keep one kind")
        return files
    raise DataNotFoundError(f"{what} table {path} does not exist")


def fingerprint(source: Source) -> str:
    """The cache key's view of the input: the spec, and path, size and modification time of every
    table file (no byte read; the content hash is kept in the report)."""
    spec = load_spec(source.root)
    h = hashlib.sha256(json.dumps({k: str(v) for k, v in spec.items() if k != "labels"}, sort_keys=True).encode())
    for path in _input_files(spec):
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _input_files(spec: dict) -> list[Path]:
    files = table_files(spec["events"], "events")
    return files + (table_files(spec["statics"], "statics") if spec["statics"] is not None else [])


# --- reading ---------------------------------------------------------------------------------------
def read(source: Source, progress: bool = True, require_labels: bool = True) -> EventData:
    """Read a table dataset into the common event model (labels belong to the task)."""
    root = source.root
    spec = load_spec(root)
    unit = spec["time_unit"]
    losses = _Losses()
    frames = [_read_events(f, spec["format"], unit, losses) for f in table_files(spec["events"], "events")]
    events = pl.concat(frames)
    statics, admission = _read_statics(spec["statics"], unit, losses) if spec["statics"] is not None else (None, None)

    ids = events.select("stay_id").unique().sort("stay_id")
    if unit == "timestamp":
        origin = events.group_by("stay_id").agg(pl.col("time").min().alias("origin"))
        if admission is not None:
            origin = origin.join(admission, on="stay_id", how="left").select(
                "stay_id", pl.coalesce("admission_time", "origin").alias("origin"))
        events = events.join(origin, on="stay_id").with_columns(hours_since(pl.col("time"), pl.col("origin")).alias("time")).drop("origin")
    else:
        origin = ids.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("origin"))
        if unit == "minutes":
            events = events.with_columns(pl.col("time") / 60.0)
    events = events.select(*LONG_COLUMNS).sort("stay_id", "time", "variable", maintain_order=True)

    excluded: dict[str, dict] = {}
    if statics is None:
        statics = ids
    else:
        orphans = statics.join(ids, on="stay_id", how="anti").get_column("stay_id").to_list()
        if orphans:
            excluded["in the statics table but without events"] = {"count": len(orphans), "ids": sorted(orphans)[:50]}
        statics = ids.join(statics, on="stay_id", how="left")
    counts = events.group_by("stay_id").len("n_events")
    stays = ids.join(counts, on="stay_id").join(origin, on="stay_id", how="left").select(
        "stay_id", pl.lit("none").alias("split_group"), pl.col("n_events").cast(pl.Int64), "origin")
    files = _input_files(spec)
    report = {
        "source": str(root),
        "table": {"events": str(spec["events"]), "statics": None if spec["statics"] is None else str(spec["statics"]),
                  "time_unit": unit, "format": losses.formats, "origin": _ORIGIN_RULE[unit]},  # fmt: skip
        "rows_read": losses.rows,
        "records_read": ids.height,
        "stays": stays.height,
        "events": events.height,
        "valueless_events": int(events.get_column("value").null_count()),
        "static_columns": [c for c in statics.columns if c != "stay_id"],
        "excluded_stays": excluded,
        "skipped_values": losses.values,
        "skipped_lines": losses.lines,
        "content_sha256": content_hash(files),
    }
    return EventData(name=NAME, events=events, statics=statics.sort("stay_id"),
                     labels=pl.DataFrame(schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}),
                     stays=stays.sort("stay_id"), report=report)  # fmt: skip


_ORIGIN_RULE = {
    "hours": "times are hours as written",
    "minutes": "times are minutes as written, divided by 60",
    "timestamp": "hours since the stay's admission_time (statics), else since its first event",
}


class _Losses:
    """What reading leaves out, by reason, with the first examples (file:row)."""

    def __init__(self) -> None:
        self.values: dict[str, dict] = {}
        self.lines: dict[str, dict] = {}
        self.rows = 0
        self.formats: list[str] = []

    def add(self, kind: dict, reason: str, rows: pl.DataFrame, file: Path, shown: str) -> None:
        if rows.height:
            entry = kind.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += rows.height
            room = _EXAMPLES - len(entry["examples"])
            entry["examples"] += [f"{file.name} row {r}: {v!r}" for r, v in rows.head(max(room, 0)).select("_row", shown).iter_rows()]


def read_table(file: Path) -> tuple[pl.DataFrame, bool]:
    """A CSV file as text columns (every cell checked here, not guessed), or a Parquet file as
    typed; with a `_row` column numbering rows as a spreadsheet does. (frame, is_csv)."""
    csv = file.suffix == ".csv"
    if file.stat().st_size == 0:
        raise DataError(f"{file} is empty")
    try:
        frame = pl.read_csv(file, infer_schema=False) if csv else pl.read_parquet(file)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        kind = "CSV" if csv else "Parquet"
        raise DataError(f"{file} is not a readable {kind} file ({str(exc).splitlines()[0]})") from None
    if frame.height == 0:
        raise DataError(f"{file} has a header but no rows")
    frame = frame.rename({c: c.strip() for c in frame.columns})
    if csv:
        frame = frame.with_columns(pl.col(c).str.strip_chars().replace("", None) for c in frame.columns)
    return frame.with_row_index("_row", offset=2 if csv else 1), csv


def _check_type(frame: pl.DataFrame, file: Path, column: str, allowed: str) -> None:
    dtype = frame.schema[column]
    ok = {"integer": dtype.is_integer() or dtype == pl.String,
          "number": dtype.is_numeric() or dtype in (pl.String, pl.Null),
          "time": dtype.is_numeric() or dtype in (pl.String, pl.Date) or isinstance(dtype, pl.Datetime),
          "text": dtype in (pl.String, pl.Categorical) or dtype.is_integer()}[allowed]  # fmt: skip
    if not ok:
        raise DataError(f"{file}: column {column!r} has type {dtype}; it must hold {allowed}s")


def _first(rows: pl.DataFrame, column: str) -> str:
    return f"row {rows.item(0, '_row')} ({column} = {rows.item(0, column)!r})"


def stay_ids(frame: pl.DataFrame, file: Path) -> pl.Expr:
    """The stay_id column as Int64, or a DataError naming the first row that is blank or not an integer."""
    _check_type(frame, file, "stay_id", "integer")
    parsed = frame.get_column("stay_id").cast(pl.Int64, strict=False)
    bad = frame.filter(parsed.is_null())
    if bad.height:
        raise DataError(f"{file}: {bad.height:,} rows have a stay_id that is blank or not an integer, e.g. {_first(bad, 'stay_id')}")
    return pl.Series("stay_id", parsed)


def parse_times(frame: pl.DataFrame, file: Path, column: str, unit: str, losses: _Losses | None = None) -> pl.Series:
    """`column` as Float64 (hours or minutes, as written) or Datetime("us") (timestamps). A blank
    time or one of the other unit is an error; an unreadable, NaN or infinite one is counted and
    null (with `losses`; else an error)."""
    _check_type(frame, file, column, "time")
    raw = frame.get_column(column)
    if raw.null_count():
        raise DataError(f"{file}: {raw.null_count():,} rows have no {column}, e.g. row {frame.filter(raw.is_null()).item(0, '_row')}")
    if raw.dtype == pl.String:
        like_stamp = raw.str.contains(_TIMESTAMP_LIKE)
        as_number = raw.cast(pl.Float64, strict=False)
        other = like_stamp if unit != "timestamp" else as_number.is_not_null()
        if other.any():
            bad = frame.filter(other)
            kind = "a timestamp" if unit != "timestamp" else "a number"
            hint = "--time-unit timestamp" if unit != "timestamp" else "--time-unit hours or minutes"
            mixed = "mixed time units: " if (~other).any() else ""
            raise DataError(f"{file}: {mixed}{bad.height:,} {column} values are {kind} but the time unit is {unit}, "
                            f"e.g. {_first(bad, column)}; write every time in one unit ({hint})")  # fmt: skip
        if unit == "timestamp":
            parsed = pl.select(pl.coalesce([pl.lit(raw).str.to_datetime(f, strict=False, time_unit="us") for f in _TIMESTAMP_FORMATS])).to_series()
        else:
            parsed = as_number
    elif raw.dtype.is_numeric():
        if unit == "timestamp":
            raise DataError(f"{file}: column {column!r} holds numbers ({raw.dtype}) but the time unit is timestamp; "
                            "use --time-unit hours or minutes, or write timestamps")  # fmt: skip
        parsed = raw.cast(pl.Float64)
    else:  # Date / Datetime
        if unit != "timestamp":
            raise DataError(f"{file}: column {column!r} holds timestamps ({raw.dtype}) but the time unit is {unit}; "
                            "use --time-unit timestamp")  # fmt: skip
        parsed = raw.cast(pl.Datetime("us")) if not getattr(raw.dtype, "time_zone", None) else \
            raw.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.Datetime("us"))  # fmt: skip
    parsed = parsed.alias(column)
    unreadable = parsed.is_null()
    nonfinite = parsed.is_nan() | parsed.is_infinite() if parsed.dtype == pl.Float64 else pl.Series([False] * len(parsed))
    for mask, reason in ((unreadable, f"{column} not readable (as {unit})"), (nonfinite.fill_null(False), f"{column} NaN or infinite")):
        if mask.any():
            if losses is None:
                raise DataError(f"{file}: {int(mask.sum()):,} rows have a {reason}, e.g. {_first(frame.filter(mask), column)}")
            losses.add(losses.lines, reason, frame.filter(mask), file, column)
    return parsed.set(unreadable | nonfinite.fill_null(False), None) if parsed.dtype == pl.Float64 else parsed


def _read_events(file: Path, fmt: str, unit: str, losses: _Losses) -> pl.DataFrame:
    frame, csv = read_table(file)
    losses.rows += frame.height
    columns = [c for c in frame.columns if c != "_row"]
    for needed in ("stay_id", "time"):
        if needed not in columns:
            raise DataError(f"{file}: no {needed!r} column (columns: {', '.join(columns)}); an events table has "
                            "stay_id, time and either variable, value (long) or one column per variable (wide)")  # fmt: skip
    long = fmt == "long" or (fmt == "auto" and {"variable", "value"} <= set(columns))
    if long:
        missing = [c for c in LONG_COLUMNS if c not in columns]
        unknown = [c for c in columns if c not in LONG_COLUMNS]
        if missing or unknown:
            raise DataError(f"{file}: a long events table has exactly {', '.join(LONG_COLUMNS)}; "
                            + (f"missing {missing}" if missing else f"unknown column {unknown[0]!r}")
                            + (" (for a wide table, pass --format wide)" if unknown and not missing else ""))  # fmt: skip
        _check_type(frame, file, "variable", "text")
        _check_type(frame, file, "value", "number")
        blank = frame.filter(pl.col("variable").is_null())
        if blank.height:
            raise DataError(f"{file}: {blank.height:,} rows have no variable, e.g. row {blank.item(0, '_row')}")
        frame = frame.with_columns(pl.col("variable").cast(pl.String), pl.col("value").cast(pl.String) if csv else pl.col("value"))
    else:
        variables = [c for c in columns if c not in ("stay_id", "time")]
        if not variables:
            raise DataError(f"{file}: a wide events table has stay_id, time and one column per variable; it has none")
        for c in variables:
            _check_type(frame, file, c, "number")
        frame = frame.with_columns(pl.col(variables).cast(pl.String if csv else pl.Float64))
    frame = frame.with_columns(stay_ids(frame, file), parse_times(frame, file, "time", unit, losses))
    frame = frame.filter(pl.col("time").is_not_null())
    losses.formats = sorted({*losses.formats, "long" if long else "wide"})
    if not long:
        frame = frame.unpivot(index=["_row", "stay_id", "time"], on=variables, variable_name="variable", value_name="value")
        frame = frame.filter(pl.col("value").is_not_null())  # a blank cell: not measured
    return _values(frame, file, losses, present=long).select(*LONG_COLUMNS)


def _values(frame: pl.DataFrame, file: Path, losses: _Losses, present: bool) -> pl.DataFrame:
    """Values as Float64: blank stays null (a present event, long tables), text that is not a
    number and NaN / infinite values are dropped and counted."""
    raw = pl.col("value")
    number = raw.cast(pl.Float64, strict=False)
    frame = frame.with_columns(number.alias("_number"), pl.concat_str(pl.col("variable"), pl.lit(" = "), raw.cast(pl.String)).alias("_shown"))
    text = frame.filter(pl.col("_number").is_null() & raw.is_not_null())
    losses.add(losses.values, "value not a number", text, file, "_shown")
    bad = pl.col("_number").is_nan() | pl.col("_number").is_infinite()
    losses.add(losses.values, "value NaN or infinite", frame.filter(bad.fill_null(False)), file, "_shown")
    keep = ~bad.fill_null(False) & (pl.col("_number").is_not_null() | raw.is_null())
    return frame.filter(keep).with_columns(pl.col("_number").alias("value"))


def _read_statics(path: Path, unit: str, losses: _Losses) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    parts, admissions = [], []
    for file in table_files(path, "statics"):
        frame, csv = read_table(file)
        if "stay_id" not in frame.columns:
            raise DataError(f"{file}: a statics table has a 'stay_id' column and one column per static")
        frame = frame.with_columns(stay_ids(frame, file))
        dupes = frame.filter(pl.col("stay_id").is_duplicated())
        if dupes.height:
            raise DataError(f"{file}: stay_id {dupes.item(0, 'stay_id')} has {dupes.height} statics rows "
                            f"(rows {', '.join(map(str, dupes.get_column('_row').head(3).to_list()))}); a stay has one")  # fmt: skip
        if ADMISSION in frame.columns:
            if unit != "timestamp":
                raise DataError(f"{file}: column {ADMISSION!r} is for --time-unit timestamp (the time unit is {unit}); "
                                "with numbers, write times on the admission clock instead")  # fmt: skip
            stamp = frame.filter(pl.col(ADMISSION).is_not_null())
            admissions.append(stamp.select("stay_id", parse_times(stamp, file, ADMISSION, unit).alias(ADMISSION)))
            frame = frame.drop(ADMISSION)
        columns = [c for c in frame.columns if c not in ("stay_id", "_row")]
        for c in columns:
            _check_type(frame, file, c, "number")
            number = frame.get_column(c).cast(pl.Float64, strict=False)
            text = frame.filter(number.is_null() & frame.get_column(c).is_not_null())
            if text.height and text.height == frame.get_column(c).drop_nulls().len():
                raise DataError(f"{file}: static column {c!r} holds text, e.g. {_first(text, c)}; statics are numbers "
                                "(code a category as 0/1 columns)")  # fmt: skip
            shown = text.with_columns(pl.concat_str(pl.lit(f"{c} = "), pl.col(c).cast(pl.String)).alias("_shown"))
            losses.add(losses.values, "static value not a number", shown, file, "_shown")
            bad = frame.filter(number.is_nan() | number.is_infinite()).with_columns(pl.concat_str(pl.lit(f"{c} = "), pl.col(c).cast(pl.String)).alias("_shown"))
            losses.add(losses.values, "static value NaN or infinite", bad, file, "_shown")
            frame = frame.with_columns(number.set(number.is_nan() | number.is_infinite(), None).alias(c))
        parts.append(frame.drop("_row"))
    statics = pl.concat(parts, how="diagonal_relaxed")
    dupes = statics.filter(pl.col("stay_id").is_duplicated())
    if dupes.height:
        raise DataError(f"statics at {path}: stay_id {dupes.item(0, 'stay_id')} is in two files; a stay has one statics row")
    statics = statics.select("stay_id", *sorted(c for c in statics.columns if c != "stay_id"))
    return statics, pl.concat(admissions) if admissions else None



