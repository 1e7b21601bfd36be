"""Reader for the PhysioNet/CinC Challenge 2019 ("Early prediction of sepsis from clinical data").

Official layout: ``training_setA/pNNNNNN.psv`` (hospital system A, 20,336 stays) and
``training_setB/p1NNNNN.psv`` (system B, 20,000 stays): one pipe-separated file per ICU stay, a
header line, then one row per ICU hour with 41 columns: 34 vital signs and laboratory values
(HR ... Platelets), 6 demographics (Age, Gender, Unit1, Unit2, HospAdmTime, ICULOS) and the
hourly ``SepsisLabel``. ``NaN`` marks a value that was not measured in that hour.

What becomes what:

- events: every observed (non-NaN) vital/lab value, as (stay_id, time, variable, value).
- time: ``ICULOS`` as given, in hours. ICULOS counts ICU hours from 1 (the row of the first
  ICU hour has ICULOS 1), and 8,793 of the 40,336 stays start later than hour 1 (up to hour
  304): their first rows were not released. We keep ICULOS unchanged rather than shifting
  every stay to start at 0, so that a value with time t was measured during ICU hour t and is
  available to a prediction made at the end of that hour (``prediction_time`` = ICULOS too).
- statics: age, gender, unit1, unit2, hosp_adm_time from the stay's first row (they are
  constant within every released stay; a change would be counted in the report); NaN is kept
  as a missing (null) value, as for the PhysioNet 2012 descriptors.
- labels: one row per hour, (stay_id, prediction_time = ICULOS, label = SepsisLabel). The
  online task needs a label per hour; `stay_labels` gives the stay-level label (any hour 1).
- stays: stay_id (the digits of the file name, pNNNNNN), split_group = hospital system "A" or
  "B", n_events, n_hours.

The files are a fixed-format release, so a deviation is an error, not something to skip: a
malformed row would shift the hourly label sequence of its stay. The reader checks every file
and row (header, field count, numbers, ICULOS rising by one hour per row, 0/1 labels) and
raises one `DataError` listing every problem by reason, with counts and located examples. The
only values it drops are physiologically impossible ones (`PLAUSIBLE_RANGES`), each counted
by variable with examples in ``EventData.report["skipped_values"]``.

Parsing is vectorised: the rows of all files are concatenated and read by one Polars CSV call
(40,336 files, 1.55 M rows), and the per-row checks are Polars/NumPy expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from rich.progress import Progress

from hymate.data.plausible import ranges_for, span
from hymate.data.schema import EventData
from hymate.data.sources import Source, decode_text
from hymate.errors import DataError, DataNotFoundError

NAME = "physionet2019"
READER_VERSION = 3  # bump when parsing changes, so cached preparations are rebuilt
WINDOW_HOURS = None  # every hour of a stay is kept (no observation window)
N_FILES = 40_336  # in the public training set (progress bar total only)

TIME_SERIES_VARIABLES = (
    "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2",
    "BaseExcess", "HCO3", "FiO2", "pH", "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium",
    "Chloride", "Creatinine", "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate",
    "Potassium", "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets",
)  # fmt: skip
DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS")
LABEL = "SepsisLabel"
COLUMNS = (*TIME_SERIES_VARIABLES, *DEMOGRAPHICS, LABEL)  # the official header, in order
STATICS = {"Age": "age", "Gender": "gender", "Unit1": "unit1", "Unit2": "unit2", "HospAdmTime": "hosp_adm_time"}
BINARY_STATICS = ("Gender", "Unit1", "Unit2")  # must be 0 or 1 (or NaN)
# SepsisLabel turns 1 six hours before the clinical onset time t_sepsis (Reyna et al. 2020).
LABEL_LEAD_HOURS = 6

# Plausibility ranges (hymate.data.plausible: one table, with sources) for the time-varying
# variables and the numeric statics. A value outside is a recording error (FiO2 4000 or -50,
# Temp 50 degC, K 27.5) and is dropped and counted.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = ranges_for((*TIME_SERIES_VARIABLES, "Age", "HospAdmTime"))

_FILE_RE = re.compile(r"(?:^|/)training_set([A-Za-z])/p(\d+)\.psv$")
_EXAMPLES = 5
_EMPTY = "empty field (write NaN for a value that was not measured)"
_NON_NUMERIC = "non-numeric value"


def wanted(path: str) -> bool:
    return path.endswith(".psv")


def read(source: Source, progress: bool = True, require_labels: bool = True) -> EventData:
    """Read PhysioNet 2019 from a folder or archive into the common event model.

    Without `require_labels`, files without a SepsisLabel column (new stays to score) are
    accepted and get no label rows.
    """
    raw = _collect(source, progress, require_labels)
    if not raw.files and not raw.problems:
        raise DataNotFoundError(f"no PhysioNet 2019 stays (training_setA/pNNNNNN.psv ...) found under {source.root}")
    return _parse(raw, source, require_labels)


# --------------------------------------------------------------------------------------
# Problems: every deviation is collected, then reported in one DataError.
# --------------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Counts by reason with a few located examples (for problems and for dropped values)."""

    entries: dict[str, dict] = field(default_factory=dict)

    def add(self, reason: str, count: int, examples: list[str]) -> None:
        if count <= 0:
            return
        entry = self.entries.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += count
        entry["examples"] = (entry["examples"] + examples)[:_EXAMPLES]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def raise_if_any(self, source: Source) -> None:
        if not self.entries:
            return
        total = sum(e["count"] for e in self.entries.values())
        lines = [f"PhysioNet 2019 files under {source.root} have {total:,} problem(s); nothing was prepared:"]
        for reason, entry in self.entries.items():
            lines.append(f"  * {reason}: {entry['count']:,}, e.g. " + "; ".join(entry["examples"]))
        raise DataError("\n".join(lines))


@dataclass
class _Group:
    """Files sharing one header: their rows are parsed together."""

    header: tuple[str, ...]
    recs: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    n_rows: list[int] = field(default_factory=list)


@dataclass
class _RawFiles:
    files: list[str]  # 'training_setA/p000001.psv', index = file index (rec)
    stay_ids: list[int]
    groups: dict[tuple[str, ...], _Group]
    set_of: list[str]  # hospital system per file
    ignored: list[str]  # .psv files outside the training_set<X>/p<digits>.psv layout
    problems: _Tally


# --------------------------------------------------------------------------------------
# Pass 1: gather bytes, check each file's header, group files by header.
# --------------------------------------------------------------------------------------
def _collect(source: Source, progress: bool, require_labels: bool) -> _RawFiles:
    files: list[str] = []
    stay_ids: list[int] = []
    set_of: list[str] = []
    ignored: list[str] = []
    groups: dict[tuple[str, ...], _Group] = {}
    problems = _Tally()
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("reading PhysioNet 2019 files", total=N_FILES)
        for path, data in source.iter_files(wanted):
            bar.advance(task)
            m = _FILE_RE.search(path)
            if m is None:
                ignored.append(path)
                continue
            short = f"training_set{m.group(1)}/p{m.group(2)}.psv"
            text, problem = decode_text(data)  # per file: UTF-8, a BOM dropped, CRLF lines
            if problem:
                problems.add("not UTF-8 text", 1, [f"{short}: {problem}"])
                continue
            data = text.encode()
            head, _, body = data.partition(b"\n")
            header = tuple(name.strip() for name in head.decode().strip().split("|"))
            if not data.strip():
                problems.add("empty file (expected a header line and hourly rows)", 1, [short])
                continue
            if bad := _header_problem(header, require_labels):
                problems.add(bad, 1, [f"{short}: header {'|'.join(header)[:120]!r}"])
                continue
            body = body.rstrip(b"\n")
            if not body.strip():
                problems.add("no hourly rows after the header", 1, [short])
                continue
            rec = len(files)
            files.append(short)
            stay_ids.append(int(m.group(2)))
            set_of.append(m.group(1))
            group = groups.setdefault(header, _Group(header))
            group.recs.append(rec)
            group.bodies.append(body + b"\n")
            group.n_rows.append(body.count(b"\n") + 1)
    return _RawFiles(files, stay_ids, groups, set_of, ignored, problems)


def _header_problem(header: tuple[str, ...], require_labels: bool) -> str | None:
    names = set(header)
    if len(names) != len(header):
        dupes = sorted({n for n in header if header.count(n) > 1})
        return f"header repeats columns {dupes}"
    unknown = [n for n in header if n not in COLUMNS]
    if unknown:
        return f"header has unknown columns {unknown[:5]} (expected the 41 official columns HR ... SepsisLabel)"
    required = COLUMNS if require_labels else COLUMNS[:-1]
    missing = [n for n in required if n not in names]
    if missing == [LABEL]:
        return f"header lacks the {LABEL} column (labels are required; pass require_labels=False to score new stays)"
    if missing:
        return f"header lacks columns {missing[:8]}"
    return None


# --------------------------------------------------------------------------------------
# Pass 2: parse every row (one CSV read per header), validate, split into tables.
# --------------------------------------------------------------------------------------
def _parse(raw: _RawFiles, source: Source, require_labels: bool) -> EventData:
    problems = raw.problems
    dupes = pl.DataFrame({"stay_id": raw.stay_ids, "file": raw.files}).filter(pl.col("stay_id").is_duplicated())
    if dupes.height:
        problems.add("stay id (file name digits) used by more than one file", dupes.height,
                     dupes.sort("stay_id").get_column("file").to_list())  # fmt: skip
    # Groups whose rows do not parse are diagnosed row by row; the rest are checked in full, so
    # the error lists every problem at once.
    frames = [frame for group in raw.groups.values() if (frame := _read_group(group, raw.files, problems)) is not None]
    rows = pl.concat(frames, how="vertical") if frames else _empty_rows()
    _check_rows(rows, raw.files, problems)
    problems.raise_if_any(source)

    files = pl.DataFrame(
        {"rec": pl.Series(range(len(raw.files)), dtype=pl.Int32), "stay_id": raw.stay_ids, "split_group": raw.set_of},
        schema={"rec": pl.Int32, "stay_id": pl.Int64, "split_group": pl.String},
    )
    rows = rows.join(files.select("rec", "stay_id"), on="rec", how="left").sort("stay_id", "ICULOS")
    skipped = _Tally()

    def where(frame: pl.DataFrame, column: str) -> list[str]:
        ex = frame.head(_EXAMPLES).select("rec", "line", column).rows()
        return [f"{raw.files[r]} line {ln}: {column} = {v!r}" for r, ln, v in ex]

    # --- statics: the first row of each stay --------------------------------------------
    firsts = rows.group_by("stay_id", maintain_order=True).agg(
        pl.col("rec", "line").first(),
        *[pl.col(c).first() for c in STATICS],
        *[(pl.col(c).fill_nan(None).n_unique() > 1).alias(f"_{c}_changes") for c in STATICS],
    )
    changes = _Tally()
    for col in STATICS:
        changed = firsts.filter(pl.col(f"_{col}_changes"))
        changes.add(f"{col} changes within the stay (first row kept)", changed.height,
                    [raw.files[r] for r in changed.get_column("rec").head(_EXAMPLES)])  # fmt: skip
    statics = firsts.with_columns(pl.col(list(STATICS)).fill_nan(None))
    for col in STATICS:
        if col in BINARY_STATICS:
            bad = pl.col(col).is_not_null() & ~pl.col(col).is_in([0.0, 1.0])
            reason = f"invalid {col} static (not 0 or 1; set missing)"
        elif col in PLAUSIBLE_RANGES:
            lo, hi = PLAUSIBLE_RANGES[col]
            bad = pl.col(col).is_not_null() & ~pl.col(col).is_between(lo, hi)
            reason = f"implausible {col} static ({span(col)}; set missing)"
        else:
            continue
        flagged = statics.filter(bad)
        skipped.add(reason, flagged.height, where(flagged, col))
        statics = statics.with_columns(pl.when(bad).then(None).otherwise(pl.col(col)).alias(col))
    statics = statics.select(
        "stay_id",
        pl.col("Age").alias("age"),
        pl.col("Gender").cast(pl.Int8).alias("gender"),
        pl.col("Unit1").cast(pl.Int8).alias("unit1"),
        pl.col("Unit2").cast(pl.Int8).alias("unit2"),
        pl.col("HospAdmTime").alias("hosp_adm_time"),
    )

    # --- events: observed values of the 34 time-varying columns ---------------------------
    # One NumPy pass: rows are sorted by (stay_id, ICULOS) and the columns by name, so the
    # row-major order of the observed cells is already the events' (stay_id, time, variable) order.
    names = sorted(TIME_SERIES_VARIABLES)  # code-point order, as Polars sorts strings
    values = rows.select(names).to_numpy()
    observed = ~np.isnan(values)
    n_cells, n_missing = observed.size, int(observed.size - observed.sum())
    n_implausible = 0
    rec, line = rows.get_column("rec").to_numpy(), rows.get_column("line").to_numpy()
    for j, name in enumerate(names):
        if name not in PLAUSIBLE_RANGES:
            continue
        lo, hi = PLAUSIBLE_RANGES[name]
        bad = observed[:, j] & ((values[:, j] < lo) | (values[:, j] > hi))
        if bad.any():
            at = np.flatnonzero(bad)
            ex = [f"{raw.files[rec[i]]} line {line[i]}: {name} = {float(values[i, j])!r}" for i in at[:_EXAMPLES]]
            skipped.add(f"implausible {name} ({span(name)})", len(at), ex)
            observed[:, j] &= ~bad
            n_implausible += len(at)
    row, col = np.nonzero(observed)
    events = pl.DataFrame(
        {
            "stay_id": rows.get_column("stay_id").to_numpy()[row],
            "time": rows.get_column("ICULOS").to_numpy()[row],
            "variable": pl.Series(col.astype(np.uint32)).replace_strict(dict(enumerate(names)), return_dtype=pl.String),
            "value": values[row, col],
        },
        schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64},
    )
    del values, observed, row, col

    # --- stays, labels --------------------------------------------------------------------
    per_stay = rows.group_by("stay_id").agg(
        pl.len().alias("n_hours"),
        pl.col("ICULOS").first().alias("first_hour"),
        pl.col("_has_label").first(),
        (pl.col(LABEL) == 1).any().alias("septic"),
        (pl.col(LABEL) == 1).sum().alias("positive_rows"),
        (pl.col(LABEL).diff() < 0).any().alias("label_returns_to_0"),
    )
    counts = events.group_by("stay_id").len("n_events")
    stays = (
        files.select("stay_id", "split_group")
        .join(counts, on="stay_id", how="left")
        .join(per_stay, on="stay_id", how="left")
        .with_columns(pl.col("n_events").fill_null(0).cast(pl.Int64), pl.col("n_hours").cast(pl.Int64))
        .sort("stay_id")
    )
    labels = (
        rows.filter(pl.col("_has_label"))
        .select("stay_id", pl.col("ICULOS").alias("prediction_time"), (pl.col(LABEL) == 1).alias("label"))
        .sort("stay_id", "prediction_time")
    )
    labelled = stays.filter(pl.col("_has_label"))
    per_set = (
        stays.group_by("split_group")
        .agg(
            pl.len().alias("stays"), pl.col("n_hours").sum().alias("rows"),
            pl.col("septic").filter(pl.col("_has_label")).sum().alias("septic_stays"),
            pl.col("positive_rows").filter(pl.col("_has_label")).sum().alias("positive_rows"),
        )
        .sort("split_group")
    )  # fmt: skip
    excluded = {}
    if raw.ignored:
        excluded["not a training_set<X>/p<digits>.psv file"] = {"count": len(raw.ignored), "ids": raw.ignored[:50]}
    report = {
        "source": str(source.root),
        "records_read": len(raw.files) + len(raw.ignored),
        "stays": stays.height,
        "events": events.height,
        "hourly_rows": rows.height,
        "label_rows": labels.height,
        "per_set": {
            g: {"stays": s, "rows": r, "septic_stays": sp, "positive_rows": pr}
            for g, s, r, sp, pr in per_set.iter_rows()
        },  # fmt: skip
        "stays_without_labels": stays.height - labelled.height,
        "stays_starting_after_hour_1": stays.filter(pl.col("first_hour") > 1).height,
        "stays_without_events": stays.filter(pl.col("n_events") == 0).height,
        "stays_whose_label_returns_to_0": labelled.filter(pl.col("label_returns_to_0")).height,
        "static_changes": changes.entries,
        "excluded_stays": excluded,
        "skipped_values": skipped.entries,
        # Every cell of the 34 time-varying columns is in exactly one of these (tests check the sum).
        "value_accounting": {
            "cells": n_cells,
            "events": events.height,
            "missing_nan": n_missing,
            "implausible_dropped": n_implausible,
        },
    }
    stays = stays.select("stay_id", "split_group", "n_events", "n_hours", "first_hour")
    return EventData(name=NAME, events=events, statics=statics.sort("stay_id"), labels=labels, stays=stays,
                     report=report)  # fmt: skip


def _empty_rows() -> pl.DataFrame:
    schema = {"rec": pl.Int32, "line": pl.Int32, **dict.fromkeys(COLUMNS, pl.Float64), "_has_label": pl.Boolean}
    return pl.DataFrame(schema=schema)


def _read_group(group: _Group, files: list[str], problems: _Tally) -> pl.DataFrame | None:
    """All rows of the files sharing `group.header`, as Float64 columns in the official order.

    Fast path: one CSV read of every file's rows as numbers. Files whose separator count does
    not match their row count are diagnosed row by row (`_diagnose`) and left out; if the read
    still fails (a non-numeric value, or rows too long and too short in the same file), the rows
    are read again as text to locate each bad value. Returns None when no row can be trusted.
    """
    n_fields = len(group.header)
    bad = [
        i
        for i, (b, n) in enumerate(zip(group.bodies, group.n_rows, strict=True))
        if b.count(b"|") != (n_fields - 1) * n
    ]
    if bad:
        _diagnose(_subset(group, bad), files, problems)
        group = _subset(group, sorted(set(range(len(group.recs))) - set(bad)))
        if not group.recs:
            return None
    buffer, n_rows = b"".join(group.bodies), sum(group.n_rows)
    read = {"has_header": False, "separator": "|", "quote_char": None}
    try:
        frame = pl.read_csv(buffer, schema=dict.fromkeys(group.header, pl.Float64), **read)
    except pl.exceptions.PolarsError:
        frame = None
    if frame is None or frame.height != n_rows:
        try:
            text = pl.read_csv(buffer, schema=dict.fromkeys(group.header, pl.String), **read)
        except pl.exceptions.PolarsError:
            text = None
        found = False
        if text is not None and text.height == n_rows:
            recs, line = _rec_and_line(group)
            text = text.with_columns(pl.Series("rec", recs), pl.Series("line", line))
            for column in group.header:
                rows = text.filter(
                    pl.col(column).is_not_null() & pl.col(column).cast(pl.Float64, strict=False).is_null()
                )
                ex = [
                    f"{files[r]} line {ln}: column {column} = {v[:40]!r}"
                    for r, ln, v in rows.head(_EXAMPLES).select("rec", "line", column).rows()
                ]
                problems.add(_NON_NUMERIC, rows.height, ex)
                found = found or rows.height > 0
                empty = text.filter(pl.col(column).is_null())
                problems.add(
                    _EMPTY,
                    empty.height,
                    [
                        f"{files[r]} line {ln}: column {column} is empty"
                        for r, ln in empty.head(_EXAMPLES).select("rec", "line").rows()
                    ],
                )
        if not found:
            _diagnose(group, files, problems)
        return None
    recs, line = _rec_and_line(group)
    has_label = LABEL in group.header
    frame = frame.with_columns(
        pl.Series("rec", recs), pl.Series("line", line), pl.lit(has_label).alias("_has_label"),
        *([] if has_label else [pl.lit(None, dtype=pl.Float64).alias(LABEL)]),
    )  # fmt: skip
    return frame.select("rec", "line", *COLUMNS, "_has_label")


def _subset(group: _Group, keep: list[int]) -> _Group:
    return _Group(group.header, [group.recs[i] for i in keep], [group.bodies[i] for i in keep],
                  [group.n_rows[i] for i in keep])  # fmt: skip


def _diagnose(group: _Group, files: list[str], problems: _Tally) -> None:
    """Slow path for a group that failed to parse: report every malformed row and field."""
    n_fields = len(group.header)
    lines = [ln for body in group.bodies for ln in body.decode("utf-8", "replace").split("\n")[:-1]]
    recs, line_numbers = _rec_and_line(group)
    text = pl.DataFrame({"rec": recs, "line": line_numbers, "text": lines}).with_columns(
        (pl.col("text").str.count_matches("|", literal=True) + 1).alias("fields"),
        (pl.col("text").str.strip_chars() == "").alias("blank"),
    )

    def loc(frame: pl.DataFrame, what) -> list[str]:
        ex = frame.head(_EXAMPLES)
        return [
            f"{files[r]} line {ln}: {what(row)}"
            for r, ln, row in zip(ex["rec"], ex["line"], ex.rows(named=True), strict=True)
        ]

    blank = text.filter(pl.col("blank"))
    problems.add("blank line", blank.height, loc(blank, lambda r: "''"))
    wrong = text.filter((pl.col("fields") != n_fields) & ~pl.col("blank"))
    problems.add(f"wrong number of fields (expected {n_fields}, as in the header)", wrong.height,
                 loc(wrong, lambda r: f"{r['fields']} fields in {r['text'][:80]!r}"))  # fmt: skip
    cells = (
        text.filter(pl.col("fields") == n_fields)
        .select("rec", "line", pl.col("text").str.split("|").alias("value"),
                pl.lit(list(group.header), dtype=pl.List(pl.String)).alias("column"))
        .explode("value", "column")
        .with_columns(pl.col("value").cast(pl.Float64, strict=False).alias("number"))
    )  # fmt: skip
    empty = cells.filter(pl.col("value") == "")
    problems.add(_EMPTY, empty.height, loc(empty, lambda r: f"column {r['column']} is empty"))
    non_numeric = cells.filter((pl.col("value") != "") & pl.col("number").is_null())
    problems.add(
        _NON_NUMERIC, non_numeric.height, loc(non_numeric, lambda r: f"column {r['column']} = {r['value'][:40]!r}")
    )
    if not problems:  # pragma: no cover - the CSV reader rejected something the checks above did not find
        problems.add("unreadable rows", 1, [files[group.recs[0]]])


def _rec_and_line(group: _Group) -> tuple[np.ndarray, np.ndarray]:
    """File index and file line number (the header is line 1) of every row of a group."""
    recs = np.repeat(np.asarray(group.recs, dtype=np.int32), group.n_rows)
    starts = np.repeat(np.cumsum([0, *group.n_rows[:-1]]), group.n_rows)
    return recs, (np.arange(len(recs)) - starts + 2).astype(np.int32)


def _check_rows(rows: pl.DataFrame, files: list[str], problems: _Tally) -> None:
    """Per-row checks on the parsed numbers: all vectorised, every failure located."""

    def loc(frame: pl.DataFrame, column: str, note: str = "") -> list[str]:
        ex = frame.head(_EXAMPLES).select("rec", "line", column).rows()
        return [f"{files[r]} line {ln}: {column} = {v!r}{note}" for r, ln, v in ex]

    for column in COLUMNS:
        empty = rows.filter(pl.col(column).is_null() & (pl.col("_has_label") | (column != LABEL)))
        problems.add(
            _EMPTY,
            empty.height,
            [
                f"{files[r]} line {ln}: column {column} is empty"
                for r, ln in empty.head(_EXAMPLES).select("rec", "line").rows()
            ],
        )
        inf = rows.filter(pl.col(column).is_infinite())
        problems.add("infinite value", inf.height, loc(inf, column))
    iculos = pl.col("ICULOS")
    bad_hour = rows.filter(iculos.is_nan() | (iculos < 0) | (iculos != iculos.floor()))
    problems.add("ICULOS is not a whole number of hours >= 0", bad_hour.height, loc(bad_hour, "ICULOS"))
    step = rows.with_columns((iculos - iculos.shift(1).over("rec")).alias("_step")).filter(
        pl.col("_step").is_not_null() & (pl.col("_step") != 1)
    )
    problems.add("ICULOS does not rise by exactly 1 hour from the previous row", step.height,
                 loc(step, "ICULOS", " (one row per ICU hour expected)"))  # fmt: skip
    label = rows.filter(pl.col("_has_label") & ~pl.col(LABEL).is_in([0.0, 1.0]))
    problems.add(f"{LABEL} is not 0 or 1", label.height, loc(label, LABEL))


# --------------------------------------------------------------------------------------
# Stay-level views of the hourly labels.
# --------------------------------------------------------------------------------------
def stay_labels(data: EventData | pl.DataFrame) -> pl.DataFrame:
    """One row per labelled stay from the hourly labels.

    Columns: stay_id; label (True if any hour has SepsisLabel 1); first_positive_hour (ICULOS of
    the first hour labelled 1, null if none); onset_hour (first_positive_hour + 6, the challenge's
    t_sepsis; for the stays labelled 1 from their first row the true onset may be earlier);
    last_hour (ICULOS of the stay's last row); n_hours.
    """
    labels = data.labels if isinstance(data, EventData) else data
    return (
        labels.group_by("stay_id")
        .agg(
            pl.col("label").any().alias("label"),
            pl.col("prediction_time").filter(pl.col("label")).min().alias("first_positive_hour"),
            pl.col("prediction_time").max().alias("last_hour"),
            pl.len().alias("n_hours"),
        )
        .with_columns((pl.col("first_positive_hour") + LABEL_LEAD_HOURS).alias("onset_hour"))
        .select("stay_id", "label", "first_positive_hour", "onset_hour", "last_hour", "n_hours")
        .sort("stay_id")
    )


def with_stay_labels(data: EventData) -> EventData:
    """The same data with one label per stay (sepsis at any hour), predicted at the last hour.

    For stay-level summaries and stratified splits; the hourly labels stay in `data`.
    """
    per_stay = stay_labels(data).select("stay_id", pl.col("last_hour").alias("prediction_time"), "label")
    return EventData(name=data.name, events=data.events, statics=data.statics, labels=per_stay,
                     stays=data.stays, report=data.report)  # fmt: skip
