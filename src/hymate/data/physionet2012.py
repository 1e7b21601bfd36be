"""Reader for the PhysioNet/CinC Challenge 2012 ("Predicting mortality of ICU patients").

Official layout: ``set-{a,b,c}/<RecordID>.txt`` with ``Time,Parameter,Value`` lines (time as
HH:MM since ICU admission, first 48 h) and ``Outcomes-{a,b,c}.txt``. The first lines of a
record are descriptors at 00:00 (RecordID, Age, Gender, Height, ICUType, Weight); -1 means
missing. Later Weight lines are time-series measurements.

Outcomes: In-hospital_death becomes the label; SAPS-I, SOFA, Length_of_stay and Survival are kept
as given (nullable Int64, -1 included) in the ``stays`` table as ``saps_i``, ``sofa``,
``length_of_stay`` and ``survival`` (see OUTCOME_VALUES), and summarised in ``report["outcomes"]``.

Parsing is vectorised: every record's lines are tagged with the record's index and parsed in
one Polars frame, so 12,000 files (5.3 M lines) take seconds. Nothing is dropped silently:
every rejected line is counted by reason, with examples, in ``EventData.report``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl
from rich.progress import Progress

from hymate.data.plausible import ranges_for, span
from hymate.data.schema import EventData
from hymate.data.sources import Source, decode_text
from hymate.errors import DataError, DataNotFoundError

NAME = "physionet2012"
READER_VERSION = 3  # bump when parsing changes, so cached preparations are rebuilt
WINDOW_HOURS = 48.0
SETS = ("a", "b", "c")

TIME_SERIES_VARIABLES = (
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine",
    "DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP",
    "MechVent", "Mg", "NIDiasABP", "NIMAP", "NISysABP", "Na", "PaCO2", "PaO2", "Platelets",
    "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC", "Weight", "pH",
)  # fmt: skip
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")
OUTCOME_COLUMNS = ("RecordID", "SAPS-I", "SOFA", "Length_of_stay", "Survival", "In-hospital_death")
# Outcome columns kept per stay, as given (no rule applied): file column -> stays column (Int64).
# PhysioNet: Length_of_stay = days from ICU admission to the end of hospitalisation; Survival = days
# from ICU admission to a recorded death (in or out of hospital), -1 if none was recorded (a
# survivor). The description says neither is ever 0 or 1 (stays < 48 h were excluded) and gives no
# meaning to Length_of_stay = -1, yet the released files have Length_of_stay -1 (167 stays, all
# in-hospital survivors) and 1 (5 stays), Survival 0 and 1, one Survival of -23, and -1 in
# SAPS-I / SOFA (score not available). Tasks state their own rule for these; the reader only counts.
OUTCOME_VALUES = {"SAPS-I": "saps_i", "SOFA": "sofa", "Length_of_stay": "length_of_stay", "Survival": "survival"}
UNKNOWN_OUTCOME = -1

# Plausibility ranges (hymate.data.plausible: one table, with sources). A value outside is a
# recording error (Temp -17.8, a 0 degF conversion; pH 735 for 7.35) and is dropped and counted.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = ranges_for((*TIME_SERIES_VARIABLES, *DESCRIPTORS))
MISSING_SENTINEL = -1.0

_RECORD_RE = re.compile(r"(?:^|/)set-([abc])/([^/]+)\.txt$")
_OUTCOME_RE = re.compile(r"(?:^|/)Outcomes-([abc])\.txt$")
_HEADER = "Time,Parameter,Value"
_EXAMPLES = 5


@dataclass(frozen=True)
class _RawRecords:
    paths: list[str]  # 'set-a/132539.txt', index = record index
    groups: list[str]  # set letter per record
    lines: pl.DataFrame  # columns: rec (i32), line (i32, 1-based file line), text (str)
    outcomes: dict[str, bytes]  # set letter -> file bytes
    bad_headers: list[str]


def wanted(path: str) -> bool:
    return bool(_RECORD_RE.search(path) or _OUTCOME_RE.search(path))


def read(source: Source, progress: bool = True, require_labels: bool = True) -> EventData:
    """Read PhysioNet 2012 from a folder or archive(s) into the common event model.

    Without `require_labels`, records with no Outcomes file (new stays to score) are kept unlabelled.
    """
    raw = _collect(source, progress)
    if not raw.paths:
        raise DataNotFoundError(
            f"no PhysioNet 2012 records (set-a/<RecordID>.txt ...) found under {source.root}"
        )
    return _parse(raw, source, require_labels)


# --------------------------------------------------------------------------------------
# Pass 1: gather bytes and tag every line with its record index.
# --------------------------------------------------------------------------------------
def _collect(source: Source, progress: bool) -> _RawRecords:
    """Each file is decoded on its own (UTF-8, BOM stripped) and split into lines in Python, so a
    bad byte names its file and offset, and no byte of the data can act as a separator."""
    paths: list[str] = []
    groups: list[str] = []
    texts: list[str] = []
    counts: list[int] = []
    outcomes: dict[str, bytes] = {}
    bad_headers: list[str] = []
    not_text: list[str] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("reading PhysioNet 2012 files", total=12_003)
        for path, data in source.iter_files(wanted):
            bar.advance(task)
            if m := _OUTCOME_RE.search(path):
                if m.group(1) in outcomes:
                    raise DataError(f"two Outcomes-{m.group(1)}.txt files found under {source.root}")
                outcomes[m.group(1)] = data
                continue
            m = _RECORD_RE.search(path)
            short = f"set-{m.group(1)}/{m.group(2)}.txt"
            text, problem = decode_text(data)
            if problem:
                not_text.append(f"{short}: {problem}")
                continue
            head, _, body = text.partition("\n")
            if head.strip() != _HEADER:
                bad_headers.append(short)
                continue
            lines = body.rstrip("\n").split("\n") if body.strip("\n") else []
            paths.append(short)
            groups.append(m.group(1))
            texts += lines
            counts.append(len(lines))
    if not_text:
        shown = "\n  * ".join(not_text[:10])
        more = f"\n  ... and {len(not_text) - 10} more" if len(not_text) > 10 else ""
        raise DataError(f"{len(not_text)} PhysioNet 2012 record file(s) under {source.root} are not text; "
                        f"nothing was prepared:\n  * {shown}{more}")  # fmt: skip
    counts_arr = np.asarray(counts, dtype=np.int64)
    rec = np.repeat(np.arange(len(paths), dtype=np.int32), counts_arr)
    starts = np.repeat(np.cumsum(counts_arr) - counts_arr, counts_arr)
    line = (np.arange(len(rec)) - starts + 2).astype(np.int32)  # the header is line 1
    frame = pl.DataFrame({"rec": rec, "text": pl.Series(texts, dtype=pl.String), "line": line})
    return _RawRecords(paths, groups, frame, outcomes, bad_headers)


# --------------------------------------------------------------------------------------
# Pass 2: parse, validate and split into descriptors / events, all vectorised.
# --------------------------------------------------------------------------------------
def _parse(raw: _RawRecords, source: Source, require_labels: bool) -> EventData:
    skipped: dict[str, dict] = {}
    paths = pl.Series("path", raw.paths)

    def skip(reason: str, rows: pl.DataFrame) -> None:
        """Count rejected lines under `reason`, keeping a few located examples."""
        if rows.height == 0:
            return
        ex = rows.head(_EXAMPLES).with_columns(pl.col("rec").map_elements(lambda r: raw.paths[r], return_dtype=pl.String))
        entry = skipped.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += rows.height
        entry["examples"] += [f"{p} line {ln}: {t!r}" for p, ln, t in ex.select("rec", "line", "text").iter_rows()]
        entry["examples"] = entry["examples"][:_EXAMPLES]

    # A control character (NUL, ESC, a lone CR ...) is no part of a record's text: its line is
    # skipped whole, so nothing of it reaches a variable name, a message or a terminal.
    control = pl.col("text").str.contains(r"[\x00-\x08\x0b-\x1f\x7f]")
    skip("control character in line", raw.lines.filter(control))
    parts = raw.lines.filter(~control).with_columns(
        pl.col("text").str.splitn(",", 3).struct.rename_fields(["t", "parameter", "v"]).alias("f")
    ).unnest("f")
    hhmm = pl.col("t").str.strip_chars().str.extract_groups(r"^(\d{1,3}):([0-5]\d)$")
    parts = parts.with_columns(
        (hhmm.struct.field("1").cast(pl.Float64) + hhmm.struct.field("2").cast(pl.Float64) / 60.0).alias("time"),
        pl.col("parameter").str.strip_chars(),
        pl.col("v").str.strip_chars().cast(pl.Float64, strict=False).alias("value"),
    )
    malformed = pl.col("v").is_null()
    skip("malformed line (expected Time,Parameter,Value)", parts.filter(malformed))
    parts = parts.filter(~malformed)
    bad_time = pl.col("time").is_null()
    skip("unparseable time (expected HH:MM, minutes 00-59)", parts.filter(bad_time))
    parts = parts.filter(~bad_time)
    bad_value = pl.col("value").is_null() | pl.col("value").is_nan() | pl.col("value").is_infinite()
    skip("non-numeric, NaN or infinite value", parts.filter(bad_value & (pl.col("parameter") != "RecordID")))
    parts = parts.filter(~bad_value | (pl.col("parameter") == "RecordID"))

    known = set(TIME_SERIES_VARIABLES) | set(DESCRIPTORS) | {"RecordID"}
    unknown = parts.filter(~pl.col("parameter").is_in(known))
    for name, rows in unknown.group_by("parameter", maintain_order=True):
        skip(f"unknown parameter {name[0]!r}", rows)
    parts = parts.filter(pl.col("parameter").is_in(known))

    # --- record identity -------------------------------------------------------------
    ids = parts.filter(pl.col("parameter") == "RecordID").group_by("rec").agg(pl.col("v").first().alias("rid"))
    ids = ids.with_columns(pl.col("rid").str.strip_chars().cast(pl.Int64, strict=False).alias("stay_id"))
    stems = pl.DataFrame({"rec": pl.Series(range(len(raw.paths)), dtype=pl.Int32), "path": paths, "group": raw.groups})
    stems = stems.with_columns(pl.col("path").str.extract(r"/([^/]+)\.txt$").alias("stem"))
    records = stems.join(ids, on="rec", how="left")
    excluded: dict[str, list] = {}
    no_id = records.filter(pl.col("stay_id").is_null())
    if no_id.height:
        excluded["no valid RecordID line"] = no_id.get_column("path").to_list()
    mismatch = records.filter(pl.col("stay_id").is_not_null() & (pl.col("stay_id").cast(pl.String) != pl.col("stem")))
    if mismatch.height:
        excluded["RecordID differs from file name"] = mismatch.get_column("path").to_list()
    records = records.filter(pl.col("stay_id").is_not_null() & (pl.col("stay_id").cast(pl.String) == pl.col("stem")))
    dupes = records.filter(pl.col("stay_id").is_duplicated())
    if dupes.height:
        raise DataError(f"RecordIDs appear in more than one file: {sorted(dupes.get_column('path').to_list())[:10]}")
    if raw.bad_headers:
        excluded["header is not 'Time,Parameter,Value'"] = raw.bad_headers
    before_join = parts.height
    parts = parts.join(records.select("rec", "stay_id"), on="rec", how="inner")
    lines_of_excluded = before_join - parts.height
    record_id_lines = parts.filter(pl.col("parameter") == "RecordID").height

    # --- descriptors (statics): the first line of each at 00:00; -1 means missing ------
    parts = parts.with_columns(
        (pl.col("line") == pl.col("line").min().over("rec", "parameter")).alias("first_of_kind")
    )
    is_descriptor = (
        pl.col("parameter").is_in(DESCRIPTORS) & pl.col("first_of_kind") & (pl.col("time") == 0.0)
    )
    descriptors = parts.filter(is_descriptor)
    extra = parts.filter(pl.col("parameter").is_in(["Age", "Gender", "Height", "ICUType"]) & ~is_descriptor)
    skip("repeated or late descriptor line (only the first, at 00:00, is used)", extra)
    sentinel = descriptors.filter(pl.col("value") == MISSING_SENTINEL).height  # -1: missing, not an error
    descriptors = _drop_implausible(descriptors.filter(pl.col("value") != MISSING_SENTINEL), skip, "descriptor")
    descriptor_lines = descriptors.height + sentinel
    statics = (
        descriptors.pivot(on="parameter", index="stay_id", values="value", aggregate_function="first")
        if descriptors.height
        else pl.DataFrame({"stay_id": []}, schema={"stay_id": pl.Int64})
    )
    statics = records.select("stay_id").join(statics, on="stay_id", how="left")
    for col in DESCRIPTORS:
        if col not in statics.columns:
            statics = statics.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    statics = statics.select(
        "stay_id",
        pl.col("Age").alias("age"),
        pl.col("Gender").cast(pl.Int8).alias("gender"),
        pl.col("Height").alias("height"),
        pl.col("ICUType").cast(pl.Int8).alias("icu_type"),
        pl.col("Weight").alias("weight"),
    )

    # --- time series -------------------------------------------------------------------
    ts = parts.filter(pl.col("parameter").is_in(TIME_SERIES_VARIABLES) & ~is_descriptor)
    skip("missing-value sentinel -1 in a time series", ts.filter(pl.col("value") == MISSING_SENTINEL))
    ts = ts.filter(pl.col("value") != MISSING_SENTINEL)
    outside = (pl.col("time") < 0) | (pl.col("time") > WINDOW_HOURS)
    skip(f"time outside the first {WINDOW_HOURS:g} h", ts.filter(outside))
    ts = _drop_implausible(ts.filter(~outside), skip, "measurement")
    events = ts.select(
        "stay_id", "time", pl.col("parameter").alias("variable"), "value"
    ).sort("stay_id", "time", "variable", maintain_order=True)

    # --- stays, labels ---------------------------------------------------------------
    counts = events.group_by("stay_id").len("n_events")
    stays = records.select("stay_id", pl.col("group").alias("split_group")).join(counts, on="stay_id", how="left")
    stays = stays.with_columns(pl.col("n_events").fill_null(0).cast(pl.Int64))
    empty = stays.filter(pl.col("n_events") == 0)
    if empty.height:
        excluded["no time series"] = sorted(empty.get_column("stay_id").to_list())
    stays = stays.filter(pl.col("n_events") > 0)

    if require_labels and raw.outcomes:
        # A set whose Outcomes file is missing would be cached unlabelled and fail later, far from
        # the cause; say it now.
        counts_per_set = pl.Series(raw.groups).value_counts()
        for group, n in counts_per_set.iter_rows():
            if group not in raw.outcomes:
                raise DataError(
                    f"set-{group}/ holds {n:,} records but Outcomes-{group}.txt is missing under {source.root}: "
                    f"its labels come from that file (add it, or remove set-{group}/)"
                )
    outcomes = _read_outcomes(raw.outcomes, source, require_labels)
    outcome_sets = sorted(raw.outcomes)
    in_labelled_sets = pl.col("split_group").is_in(outcome_sets)
    values = list(OUTCOME_VALUES.values())
    joined = stays.join(outcomes.select("stay_id", "label", *values), on="stay_id", how="left")
    unlabelled = joined.filter(pl.col("label").is_null() & in_labelled_sets)
    if unlabelled.height:
        excluded["no outcome in Outcomes file"] = sorted(unlabelled.get_column("stay_id").to_list())
    stays = joined.filter(pl.col("label").is_not_null() | ~in_labelled_sets).drop("label").sort("stay_id")
    labels = (
        stays.join(outcomes.select("stay_id", "label"), on="stay_id", how="inner")
        .select("stay_id", pl.lit(WINDOW_HOURS).alias("prediction_time"), "label")
        .sort("stay_id")
    )
    # Outcomes rows whose RecordID has no record file at all (a record excluded above is counted there).
    file_ids = stems.select(pl.col("stem").cast(pl.Int64, strict=False).alias("stay_id")).drop_nulls()
    orphan = outcomes.join(file_ids, on="stay_id", how="anti")

    keep = stays.get_column("stay_id")
    events_before = events.height
    events = events.filter(pl.col("stay_id").is_in(keep.implode()))
    lines_of_excluded += events_before - events.height
    statics = statics.filter(pl.col("stay_id").is_in(keep.implode())).sort("stay_id")

    per_set = (
        outcomes.group_by("split_group").agg(pl.len().alias("records"), pl.col("label").sum().alias("deaths"))
        .sort("split_group")
    )  # fmt: skip
    report = {
        "source": str(source.root),
        "records_read": len(raw.paths) + len(raw.bad_headers),
        "stays": stays.height,
        "events": events.height,
        "outcomes_per_set": {g: {"records": r, "deaths": d} for g, r, d in per_set.iter_rows()},
        "outcome_rows_without_record": orphan.height,
        "outcomes": _outcome_summary(stays),
        "excluded_stays": {k: {"count": len(v), "ids": v[:50]} for k, v in excluded.items()},
        "skipped_lines": skipped,
        # Every line read is in exactly one of these buckets (tests check the sum).
        "line_accounting": {
            "lines_read": raw.lines.height,
            "events": events.height,
            "descriptor_lines": descriptor_lines,
            "record_id_lines": record_id_lines,
            "skipped_lines": sum(v["count"] for v in skipped.values()),
            "lines_of_excluded_stays": lines_of_excluded,
        },
    }
    return EventData(name=NAME, events=events, statics=statics, labels=labels, stays=stays, report=report)


def _drop_implausible(frame: pl.DataFrame, skip, kind: str) -> pl.DataFrame:
    ranges = pl.DataFrame(
        [(k, float(lo), float(hi)) for k, (lo, hi) in PLAUSIBLE_RANGES.items()],
        schema={"parameter": pl.String, "_lo": pl.Float64, "_hi": pl.Float64},
        orient="row",
    )
    flagged = frame.join(ranges, on="parameter", how="left", maintain_order="left").with_columns(
        ((pl.col("value") < pl.col("_lo")) | (pl.col("value") > pl.col("_hi"))).fill_null(False).alias("_bad")
    )
    for name, rows in flagged.filter(pl.col("_bad")).group_by("parameter", maintain_order=True):
        skip(f"implausible {name[0]} {kind} ({span(name[0])})", rows)
    return flagged.filter(~pl.col("_bad")).drop("_bad", "_lo", "_hi")


def _outcome_summary(stays: pl.DataFrame) -> dict:
    """Per kept stay and outcome column: nulls (no Outcomes row or an empty cell), -1s, other
    negatives, and min / max of the remaining values (None when there are none)."""
    summary = {}
    for col in OUTCOME_VALUES.values():
        values = stays.get_column(col)
        known = values.filter(values.is_not_null() & (values != UNKNOWN_OUTCOME))
        summary[col] = {
            "missing": values.null_count(),
            "minus_one": int((values == UNKNOWN_OUTCOME).sum()),
            "other_negative": int((known < 0).sum()),
            "min": known.min(),
            "max": known.max(),
        }
    return summary


def _read_outcomes(files: dict[str, bytes], source: Source, required: bool) -> pl.DataFrame:
    value_schema = dict.fromkeys(OUTCOME_VALUES.values(), pl.Int64)
    if not files and not required:
        return pl.DataFrame(
            schema={"stay_id": pl.Int64, "label": pl.Boolean, "split_group": pl.String, **value_schema}
        )
    if not files:
        raise DataNotFoundError(
            f"no Outcomes-a/b/c.txt found under {source.root}: labels (In-hospital_death) come from them"
        )
    frames = []
    for group, data in sorted(files.items()):
        decoded, problem = decode_text(data)
        if problem:
            raise DataError(f"Outcomes-{group}.txt under {source.root} is {problem}")
        try:
            text = pl.read_csv(decoded.encode(), infer_schema=False, quote_char=None)
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"Outcomes-{group}.txt is not a readable CSV: {exc}") from None
        missing = [c for c in ("RecordID", "In-hospital_death") if c not in text.columns]
        if missing:
            raise DataError(f"Outcomes-{group}.txt lacks columns {missing}; expected {list(OUTCOME_COLUMNS)}")
        # An absent value column or an empty cell is a missing value (null); other text must be an integer.
        text = text.select(
            pl.col("RecordID", "In-hospital_death").str.strip_chars(),
            *(
                (pl.col(c).str.strip_chars() if c in text.columns else pl.lit(None, dtype=pl.String)).alias(c)
                for c in OUTCOME_VALUES
            ),
        ).with_columns(pl.col(*OUTCOME_VALUES).replace("", None))  # fmt: skip
        frame = text.select(
            pl.col("RecordID").cast(pl.Int64, strict=False).alias("stay_id"),
            pl.col("In-hospital_death").alias("raw_label"),
            pl.lit(group).alias("split_group"),
            *(pl.col(c).cast(pl.Int64, strict=False).alias(name) for c, name in OUTCOME_VALUES.items()),
        )
        bad_rows = frame.get_column("stay_id").is_null() | ~frame.get_column("raw_label").is_in(["0", "1"])
        if bad_rows.any():
            shown = text.filter(bad_rows).head(3).select("RecordID", "In-hospital_death").rows()  # as typed
            examples = ", ".join(f"RecordID {r!r} In-hospital_death {d!r}" for r, d in shown)
            raise DataError(
                f"Outcomes-{group}.txt has {int(bad_rows.sum())} rows with a non-integer RecordID or an "
                f"In-hospital_death other than 0/1 ({examples})"
            )
        for c, name in OUTCOME_VALUES.items():
            bad = text.filter(pl.col(c).is_not_null() & frame.get_column(name).is_null())
            if bad.height:
                examples = ", ".join(f"RecordID {r} has {v!r}" for r, v in bad.head(3).select("RecordID", c).rows())
                raise DataError(f"Outcomes-{group}.txt: {bad.height} non-integer {c} values ({examples})")
        label = (pl.col("raw_label") == "1").alias("label")
        frames.append(frame.select("stay_id", label, "split_group", *OUTCOME_VALUES.values()))
    outcomes = pl.concat(frames)
    dupes = outcomes.filter(pl.col("stay_id").is_duplicated())
    if dupes.height:
        where = dupes.group_by("stay_id", maintain_order=True).agg(pl.col("split_group")).head(10)
        shown = "; ".join(
            f"RecordID {rid} in " + ", ".join(f"Outcomes-{g}.txt" for g in sets) for rid, sets in where.iter_rows()
        )
        raise DataError(f"{dupes.get_column('stay_id').n_unique():,} RecordIDs are listed more than once in the "
                        f"Outcomes files under {source.root}: {shown}")  # fmt: skip
    return outcomes
