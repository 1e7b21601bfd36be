"""Hypothesis strategies for PhysioNet 2012 and 2019 trees, valid ones and mutated ones, and the
property every reader must hold on them (tests/fuzz and benchmarks/fuzz.py share both).

The property: an input either prepares with every line (P12) or cell (P19) accounted for, and
only finite, in-range, in-window events kept; or it fails with a `HymateError` whose message
names the file (or the folder) at fault. Anything else (another exception, a hang, a lost line)
is a crash.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from hymate.data import physionet2012, physionet2019
from hymate.data.sources import Source
from hymate.errors import DataNotFoundError, HymateError

P12_VARIABLES = (*physionet2012.TIME_SERIES_VARIABLES, "Foo", "", "hr", ":x:", "[b]")
P19_COLUMNS = physionet2019.COLUMNS

# --- values and times ---------------------------------------------------------------------------
numbers = st.one_of(
    st.integers(-5, 400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["-1", "1e308", "-1e308", "nan", "NaN", "inf", "", " 7.5 ", "7,5", "0x1A", "1e-320", "-0"]),
    st.text(max_size=6),
)
clocks = st.one_of(
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 49), st.integers(0, 59)),
    st.sampled_from(["25:99", "12:60", "48:00", "47:59", "-1:00", "1:2:3", "00:7", "", "ab:cd", "999:00", " 01:00 "]),
)


@st.composite
def p12_record(draw, record_id: int) -> str:
    lines = ["Time,Parameter,Value", f"00:00,RecordID,{record_id}"]
    for name, value in (("Age", 54), ("Gender", 0), ("Height", -1), ("ICUType", 4), ("Weight", 80)):
        lines.append(f"00:00,{name},{draw(st.one_of(st.just(str(value)), numbers))}")
    for _ in range(draw(st.integers(0, 12))):
        lines.append(f"{draw(clocks)},{draw(st.sampled_from(P12_VARIABLES))},{draw(numbers)}")
    return "\n".join(lines) + "\n"


def _p19_row(draw, hour: int) -> str:
    cells = dict.fromkeys(P19_COLUMNS, "NaN")
    cells.update(Age="61", Gender="1", Unit1="0", Unit2="1", HospAdmTime="-3.2", ICULOS=str(hour), SepsisLabel="0")
    for name in draw(st.lists(st.sampled_from(P19_COLUMNS), max_size=6)):
        # mostly a plausible number or NaN (one bad cell fails the whole tree: P19's reader is strict)
        cells[name] = draw(numbers) if draw(st.integers(0, 9)) < 2 else draw(st.floats(-10, 500).map(repr))
    return "|".join(cells[c] for c in P19_COLUMNS)


@st.composite
def p19_record(draw) -> str:
    start = draw(st.integers(1, 3))
    rows = ["|".join(P19_COLUMNS), *(_p19_row(draw, start + i) for i in range(draw(st.integers(1, 6))))]
    return "\n".join(rows) + "\n"


# --- mutations of one file's bytes -------------------------------------------------------------------
@st.composite
def mutate(draw, data: bytes) -> bytes:
    # Most files of a tree stay intact (a tree is 2-12 files, and one fatal file decides the whole
    # outcome); the rest get one mutation each.
    if not data or draw(st.integers(0, 9)) < 7:
        return data
    kind = draw(st.sampled_from(["insert", "replace", "truncate", "bom", "crlf", "latin1", "control",
                                 "delete_line", "duplicate_line", "empty", "swap_separator"]))  # fmt: skip
    at = draw(st.integers(0, len(data) - 1))
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if kind == "replace":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[:at]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "latin1":
        return data[:at] + "é°µ".encode("latin-1") + data[at:]
    if kind == "control":
        return data[:at] + draw(st.sampled_from([b"\x00", b"\x1b[31m", b"\r", b"\x01", b"\x02", b"\x7f"])) + data[at:]
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "delete_line":
        return b"\n".join(lines[:i] + lines[i + 1 :])
    if kind == "duplicate_line":
        return b"\n".join(lines[: i + 1] + lines[i:])
    if kind == "empty":
        return b""
    return data.replace(b",", b"|") if b"," in data else data.replace(b"|", b",")


# --- whole trees ---------------------------------------------------------------------------------------
@dataclass
class Tree:
    files: dict[str, bytes]  # relative path -> bytes

    def write(self, root: Path) -> None:
        for rel, data in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


@st.composite
def p12_tree(draw) -> Tree:
    files: dict[str, bytes] = {}
    for s_i, s in enumerate(draw(st.sampled_from(["a", "ab", "abc"]))):
        outcome = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
        for k in range(draw(st.integers(1, 3))):
            rid = 200000 + s_i * 1000 + k
            name = draw(st.sampled_from([str(rid)] * 4 + [str(rid + 1), "x"]))  # sometimes a wrong file name
            files[f"set-{s}/{name}.txt"] = draw(mutate(draw(p12_record(rid)).encode()))
            if draw(st.integers(0, 9)):  # a row, mostly valid (a bad one fails the whole set, as it should)
                saps, los, death = "10", draw(st.sampled_from(["7", "-1", "2", ""])), draw(st.sampled_from(["0", "1"]))
                if not draw(st.integers(0, 9)):
                    saps, los, death = draw(numbers), draw(st.sampled_from(["x", "1.5", "7"])), draw(st.sampled_from(["2", "", "1"]))
                outcome.append(f"{rid},{saps},5,{los},-1,{death}")
        if draw(st.integers(0, 9)):
            files[f"Outcomes-{s}.txt"] = draw(mutate(("\n".join(outcome) + "\n").encode()))
    return Tree(files)


@st.composite
def p19_tree(draw) -> Tree:
    files: dict[str, bytes] = {}
    for hospital, base in (("A", 0), ("B", 100000)):
        for k in range(1, draw(st.integers(1, 3)) + 1):
            name = draw(st.sampled_from([f"p{base + k:06d}"] * 5 + ["p1", "x"]))
            files[f"training_set{hospital}/{name}.psv"] = draw(mutate(draw(p19_record()).encode()))
    return Tree(files)


# --- the property --------------------------------------------------------------------------------------
class Crash(AssertionError):
    """The reader broke the property (the harness's one failure)."""


def outcome(dataset: str, tree: Tree) -> str:
    """Read `tree` with `dataset`'s reader; return the outcome class, or raise Crash."""
    reader = physionet2012 if dataset == "physionet2012" else physionet2019
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        tree.write(root)
        try:
            data = reader.read(Source(root), progress=False)
        except HymateError as exc:
            message = str(exc)
            named = str(root) in message or any(Path(rel).name in message for rel in tree.files)
            if not named:
                raise Crash(f"{type(exc).__name__} names no file: {message[:300]}") from None
            return "DataNotFoundError" if isinstance(exc, DataNotFoundError) else "DataError"
        except Exception as exc:  # noqa: BLE001 - anything else is what this harness looks for
            raise Crash(f"{type(exc).__name__}: {exc}"[:400]) from exc
        _check_prepared(dataset, data)
        lost = data.report.get("skipped_lines") or data.report.get("skipped_values") or data.report.get("excluded_stays")
        return "prepared with losses" if lost else "prepared"


def _check_prepared(dataset: str, data) -> None:
    report = data.report
    if dataset == "physionet2012":
        acc = report["line_accounting"]
        if acc["lines_read"] != sum(v for k, v in acc.items() if k != "lines_read"):
            raise Crash(f"lines not accounted for: {acc}")
        window = physionet2012.WINDOW_HOURS
        ranges = physionet2012.PLAUSIBLE_RANGES
    else:
        acc = report["value_accounting"]
        if acc["cells"] != acc["events"] + acc["missing_nan"] + acc["implausible_dropped"]:
            raise Crash(f"cells not accounted for: {acc}")
        window = math.inf
        ranges = physionet2019.PLAUSIBLE_RANGES
    if acc["events"] != data.events.height:
        raise Crash("the accounting's events differ from the events table")
    for stay, t, var, value in data.events.iter_rows():
        lo, hi = ranges.get(var, (-math.inf, math.inf))
        if not (math.isfinite(value) and lo <= value <= hi and 0 <= t <= window):
            raise Crash(f"event kept out of range: stay {stay}, {var} = {value!r} at {t}")
    if data.stays.height != data.stays.get_column("stay_id").n_unique():
        raise Crash("a stay id twice in the stays table")
