"""Issue 21's reader and data-walk defects, one test each: every one failed before the fix."""

from __future__ import annotations

import os
import threading

import polars as pl
import pytest

from hymate.data import physionet2012, physionet2019, plausible, sources
from hymate.data.sources import Source, decode_text
from hymate.errors import DataError
from tests.conftest import default_lines, record_text, write_p12
from tests.data.test_physionet2019_bad_input import default_rows, psv, row, write_p19

FIRST = 200000  # write_p12's first record (set a)


def p12(folder, **kw):
    return physionet2012.read(Source(folder), progress=False, **kw)


def p19(folder, **kw):
    return physionet2019.read(Source(folder), progress=False, **kw)


def skipped(data, prefix):
    return sum(v["count"] for k, v in data.report["skipped_lines"].items() if k.startswith(prefix))


# --- bytes and encodings -----------------------------------------------------------------
def test_decode_text_names_the_byte():
    assert decode_text(b"\xef\xbb\xbfa\r\nb") == ("a\nb", None)
    text, problem = decode_text(b"Time\n00:00,Temp,37\xb0C")
    assert text is None and "byte 18 is 0xb0" in problem
    _, problem = decode_text(b"\xef\xbb\xbfab\xe9")  # the offset counts the BOM's bytes too
    assert "byte 5 is 0xe9" in problem


def test_a_latin1_byte_names_the_file_and_offset_not_a_polars_traceback(tmp_path):
    write_p12(tmp_path)
    bad = tmp_path / "set-b" / "201002.txt"
    bad.write_bytes(bad.read_bytes().replace(b"HR", b"H\xe9R", 1))
    with pytest.raises(DataError) as info:
        p12(tmp_path)
    message = str(info.value)
    assert "set-b/201002.txt" in message and "not UTF-8 text: byte" in message and "0xe9" in message
    assert message.count("\n  * ") == 1  # the one bad file, listed


def test_a_byte_order_mark_costs_no_p12_stay(tmp_path):
    write_p12(tmp_path)
    path = tmp_path / "set-a" / f"{FIRST}.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    data = p12(tmp_path)
    assert data.report["excluded_stays"] == {} and FIRST in data.stays.get_column("stay_id").to_list()
    assert data.events.filter(pl.col("stay_id") == FIRST).height == 3


def test_a_control_character_skips_its_line_only(tmp_path):
    lines = [*default_lines(0), "03:00,HR\x00,80", "04:00,HR,8\x1b[31m0", "05:00,H\rR,81"]
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, lines)})
    data = p12(tmp_path)
    assert skipped(data, "control character in line") == 3
    assert data.events.filter(pl.col("stay_id") == FIRST).height == 3
    assert not any("\x1b" in v for v in data.variables)
    acc = data.report["line_accounting"]
    assert acc["lines_read"] == sum(v for k, v in acc.items() if k != "lines_read")


def test_separator_bytes_in_the_data_cannot_split_or_join_records(tmp_path):
    # The old reader joined every file into one buffer with \x01 / \x02 as in-band separators.
    lines = [*default_lines(0), "03:00,HR\x02,80", "03:30,HR,\x0190"]
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, lines)})
    data = p12(tmp_path)
    assert skipped(data, "control character") == 2
    assert data.stays.height == 18


def test_a_p19_latin1_byte_is_one_located_problem(tmp_path):
    write_p19(tmp_path)
    path = tmp_path / "training_setB" / "p100002.psv"
    path.write_bytes(path.read_bytes() + b"\xff")
    with pytest.raises(DataError) as info:
        p19(tmp_path)
    assert "not UTF-8 text" in str(info.value) and "training_setB/p100002.psv" in str(info.value)


# --- clock times ----------------------------------------------------------------------------
@pytest.mark.parametrize("clock", ["25:99", "12:60", "01:7", "1:2:3", "-1:00"])
def test_impossible_clock_times_are_skipped_not_stored(tmp_path, clock):
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, [*default_lines(0), f"{clock},HR,80"])})
    data = p12(tmp_path)
    assert skipped(data, "unparseable time") == 1
    times = data.events.filter(pl.col("stay_id") == FIRST).get_column("time").to_list()
    assert times == sorted(times) and len(times) == 3 and max(times) == 2.5


def test_valid_clock_edges_are_kept(tmp_path):
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, [*default_lines(0), "47:59,HR,80", "48:00,HR,81"])})
    times = p12(tmp_path).events.filter(pl.col("stay_id") == FIRST).get_column("time").to_list()
    assert times[-2:] == [47 + 59 / 60, 48.0]


# --- plausibility ---------------------------------------------------------------------------
def test_every_variable_and_static_of_both_readers_has_a_sourced_range():
    names = {*physionet2012.TIME_SERIES_VARIABLES, *physionet2012.DESCRIPTORS,
             *physionet2019.TIME_SERIES_VARIABLES, "Age", "HospAdmTime", *physionet2019.BINARY_STATICS}  # fmt: skip
    assert names <= set(plausible.RANGES)
    sources_ = {"hymate", "MIMIC-Extract", "MIMIC-Extract, widened", "physical"}
    for name, r in plausible.RANGES.items():
        assert r.source in sources_ and r.lo < r.hi and r.unit, name
        if r.source in ("MIMIC-Extract, widened",) or (r.source == "physical" and name not in ("Gender", "Unit1", "Unit2")):
            assert r.note, f"{name}: a widened or physical range says why"
    with pytest.raises(KeyError, match="no plausibility range"):
        plausible.ranges_for(["NoSuchLab"])


@pytest.mark.parametrize("value", ["1e308", "-1e308", "22.9"])
def test_absurd_p12_values_are_dropped_and_counted(tmp_path, value):
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, [*default_lines(0), f"03:00,K,{value}"])})
    data = p12(tmp_path)
    assert skipped(data, "implausible K measurement (outside 0..15 mmol/L)") == 1
    assert data.events.filter(pl.col("variable") == "K").height == 0


def test_absurd_p19_values_and_statics_are_dropped_and_counted(tmp_path):
    rows = default_rows(1, False)
    rows[3] = row(4, Potassium="1e308", Lactate="-1e308", BaseExcess=100)
    rows[0] = row(1, first_hour_of_stay=True, HospAdmTime="1e308", HR=80)
    write_p19(tmp_path, overrides={1: psv(rows)})
    data = p19(tmp_path)
    reasons = data.report["skipped_values"]
    assert reasons["implausible Potassium (outside 0..15 mmol/L)"]["count"] == 1
    assert reasons["implausible Lactate (outside 0..33 mmol/L)"]["count"] == 1
    assert reasons["implausible BaseExcess (outside -50..50 mmol/L)"]["count"] == 1
    assert any(k.startswith("implausible HospAdmTime static") for k in reasons)
    assert data.events.get_column("value").abs().max() < 1e6


# --- the data walk -----------------------------------------------------------------------------
def test_a_fifo_is_refused_not_waited_on(tmp_path):
    write_p12(tmp_path)
    os.mkfifo(tmp_path / "set-a" / "299999.txt")
    result = {}

    def read():
        try:
            p12(tmp_path)
        except DataError as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the reader blocked on a FIFO"
    assert "299999.txt is not a regular file" in result["error"]


def test_a_link_to_a_device_or_outside_file_is_refused_without_reading_it(tmp_path):
    data = tmp_path / "data"
    write_p12(data)
    secret = tmp_path / "secret.txt"
    secret.write_text("Time,Parameter,Value\nTOP SECRET LINE\n")
    link = data / "set-a" / "299998.txt"
    link.symlink_to(secret)
    with pytest.raises(DataError) as info:
        p12(data)
    assert "outside the data folder" in str(info.value) and "TOP SECRET" not in str(info.value)
    link.unlink()
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="outside the data folder"):
        p12(data)


def test_a_link_inside_the_data_folder_is_followed(tmp_path):
    write_p12(tmp_path)
    moved = tmp_path / "elsewhere.txt"
    (tmp_path / "set-a" / f"{FIRST}.txt").rename(moved)
    (tmp_path / "set-a" / f"{FIRST}.txt").symlink_to(moved)
    assert FIRST in p12(tmp_path).stays.get_column("stay_id").to_list()


def test_an_oversized_file_is_refused_by_size(tmp_path, monkeypatch):
    write_p12(tmp_path)
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    (tmp_path / "set-a" / "299997.txt").write_text("Time,Parameter,Value\n" + "00:01,HR,80\n" * 200)
    with pytest.raises(DataError, match=r"299997\.txt is 2,421 bytes, over the 1,000 bytes"):
        p12(tmp_path)


def test_the_fingerprint_ignores_files_the_reader_does_not_read(tmp_path):
    write_p12(tmp_path)
    before = Source(tmp_path).fingerprint(physionet2012.wanted)
    (tmp_path / "README.md").write_text("notes")
    assert Source(tmp_path).fingerprint(physionet2012.wanted) == before
    (tmp_path / "set-a" / f"{FIRST}.txt").write_text(record_text(FIRST, default_lines(5)))
    assert Source(tmp_path).fingerprint(physionet2012.wanted) != before


# --- labels ------------------------------------------------------------------------------------
def test_a_missing_outcomes_file_is_named_at_preparation(tmp_path):
    write_p12(tmp_path)
    (tmp_path / "Outcomes-c.txt").unlink()
    with pytest.raises(DataError, match=r"set-c/ holds 6 records but Outcomes-c.txt is missing"):
        p12(tmp_path)
    assert p12(tmp_path, require_labels=False).stays.height == 18  # scoring new stays: allowed


def test_duplicate_outcome_rows_name_their_files(tmp_path):
    write_p12(tmp_path)
    with open(tmp_path / "Outcomes-b.txt", "a") as f:
        f.write(f"{FIRST},10,5,7,-1,0\n")
    with pytest.raises(DataError) as info:
        p12(tmp_path)
    assert f"RecordID {FIRST} in Outcomes-a.txt, Outcomes-b.txt" in str(info.value)


def test_outcome_rows_without_a_record_file_are_counted(tmp_path):
    write_p12(tmp_path)
    with open(tmp_path / "Outcomes-a.txt", "a") as f:
        f.write("299990,10,5,7,-1,0\n")
    assert p12(tmp_path).report["outcome_rows_without_record"] == 1
