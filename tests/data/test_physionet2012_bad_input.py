"""Bad input gets a clear error or a counted, reported skip: never a silent drop."""

from __future__ import annotations

import tarfile

import polars as pl
import pytest

from hymate.data import physionet2012
from hymate.data.sources import Source
from hymate.data.store import load_dataset, locate
from hymate.errors import DataError, DataNotFoundError
from tests.conftest import default_lines, record_text, write_p12

FIRST = 200000  # first record id of set a in write_p12


def read_folder(folder):
    return physionet2012.read(Source(folder), progress=False)


def skipped(data, prefix):
    return sum(v["count"] for k, v in data.report["skipped_lines"].items() if k.startswith(prefix))


def test_clean_synthetic_tree_reads_fully(synthetic_p12):
    data = read_folder(synthetic_p12)
    assert data.stays.height == 18
    assert data.events.height == 18 * 3
    assert data.report["skipped_lines"] == {} and data.report["excluded_stays"] == {}
    acc = data.report["line_accounting"]
    assert acc["lines_read"] == 18 * (1 + 5 + 3)


def test_malformed_line_is_counted_and_the_rest_kept(tmp_path):
    bad = record_text(FIRST, [*default_lines(0), "03:00,HR", "04:00,HR,80,extra"])
    write_p12(tmp_path, overrides={FIRST: bad})
    data = read_folder(tmp_path)
    assert skipped(data, "malformed line") == 1  # too few fields
    assert skipped(data, "non-numeric") == 1  # '80,extra' is not a number
    assert data.events.filter(pl.col("stay_id") == FIRST).height == 3
    example = data.report["skipped_lines"]["malformed line (expected Time,Parameter,Value)"]["examples"][0]
    assert "set-a/200000.txt line 11" in example  # header, RecordID, 5 descriptors, 3 events


def test_unknown_parameter_nan_and_bad_time_are_counted(tmp_path):
    lines = [*default_lines(0), "05:00,Foo,1", "06:00,HR,nan", "6h,HR,80", "50:00,HR,80", "07:00,,3.1"]
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, lines)})
    data = read_folder(tmp_path)
    report = data.report["skipped_lines"]
    assert report["unknown parameter 'Foo'"]["count"] == 1
    assert report["unknown parameter ''"]["count"] == 1
    assert skipped(data, "non-numeric, NaN") == 1
    assert skipped(data, "unparseable time") == 1
    assert skipped(data, "time outside") == 1
    assert not data.events.get_column("value").is_nan().any()
    acc = data.report["line_accounting"]
    assert acc["lines_read"] == sum(v for k, v in acc.items() if k != "lines_read")


def test_descriptors_become_statics_and_later_weights_events(tmp_path):
    desc = [("Age", 70), ("Gender", -1), ("Height", 170.2), ("ICUType", 2), ("Weight", 81.5)]
    text = record_text(FIRST, ["00:00,Weight,82", "05:00,Weight,83", "06:00,Temp,-17.8"], descriptors=desc)
    write_p12(tmp_path, overrides={FIRST: text})
    data = read_folder(tmp_path)
    row = data.statics.filter(pl.col("stay_id") == FIRST).row(0, named=True)
    assert row == {"stay_id": FIRST, "age": 70.0, "gender": None, "height": 170.2, "icu_type": 2, "weight": 81.5}
    weights = data.events.filter((pl.col("stay_id") == FIRST) & (pl.col("variable") == "Weight"))
    assert weights.get_column("value").to_list() == [82.0, 83.0]
    assert skipped(data, "implausible Temp") == 1


def test_file_without_record_id_is_excluded_and_reported(tmp_path):
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, default_lines(0), with_id=False)})
    data = read_folder(tmp_path)
    assert FIRST not in data.stay_ids
    assert data.report["excluded_stays"]["no valid RecordID line"]["ids"] == ["set-a/200000.txt"]
    assert data.report["line_accounting"]["lines_of_excluded_stays"] == 5 + 3


def test_record_id_that_differs_from_file_name_is_reported(tmp_path):
    write_p12(tmp_path, overrides={FIRST: record_text(999, default_lines(0))})
    data = read_folder(tmp_path)
    assert data.report["excluded_stays"]["RecordID differs from file name"]["ids"] == ["set-a/200000.txt"]


def test_stay_missing_from_outcomes_is_reported(tmp_path):
    write_p12(tmp_path, labels=lambda rid: None if rid == FIRST + 1 else 0)
    data = read_folder(tmp_path)
    assert data.report["excluded_stays"]["no outcome in Outcomes file"]["ids"] == [FIRST + 1]
    assert FIRST + 1 not in data.stay_ids and data.labels.height == data.stays.height == 17


def test_bad_outcome_label_is_an_error(tmp_path):
    write_p12(tmp_path, labels=lambda rid: "yes" if rid == FIRST else 0)
    with pytest.raises(DataError, match="Outcomes-a.txt.*0/1"):
        read_folder(tmp_path)


def test_bad_header_is_reported(tmp_path):
    write_p12(tmp_path, overrides={FIRST: "Time;Parameter;Value\n00:00;HR;80\n"})
    data = read_folder(tmp_path)
    assert data.report["excluded_stays"]["header is not 'Time,Parameter,Value'"]["ids"] == ["set-a/200000.txt"]


def test_crlf_files_read_like_lf(tmp_path):
    write_p12(tmp_path / "lf")
    write_p12(tmp_path / "crlf")
    for path in (tmp_path / "crlf").rglob("*.txt"):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert read_folder(tmp_path / "lf").events.equals(read_folder(tmp_path / "crlf").events)


def test_archive_and_folder_read_the_same(tmp_path):
    write_p12(tmp_path / "tree" / "physionet-challenge-2012")
    archive = tmp_path / "p12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "physionet-challenge-2012", arcname="physionet-challenge-2012")
    a, b = physionet2012.read(Source(archive), progress=False), read_folder(tmp_path / "tree")
    assert a.events.equals(b.events) and a.statics.equals(b.statics) and a.labels.equals(b.labels)


def test_truncated_archive_is_a_clear_error(tmp_path):
    write_p12(tmp_path / "tree")
    archive = tmp_path / "p12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="physionet-challenge-2012")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        physionet2012.read(Source(archive), progress=False)


def test_missing_data_location_says_how_to_provide_data(tmp_path):
    with pytest.raises(DataNotFoundError, match="(?s)does not exist.*--download"):
        load_dataset("physionet2012", tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no physionet2012 files"):
        locate("physionet2012", tmp_path / "empty")


def test_missing_outcomes_is_a_clear_error(tmp_path):
    write_p12(tmp_path)
    for path in tmp_path.glob("Outcomes-*.txt"):
        path.unlink()
    with pytest.raises(DataNotFoundError, match="Outcomes"):
        read_folder(tmp_path)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mimic'"):
        load_dataset("mimic", tmp_path, tmp_path)
