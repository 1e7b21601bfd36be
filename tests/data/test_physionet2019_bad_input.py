"""PhysioNet 2019 on small synthetic files: what becomes what, and bad input gives one clear error."""

from __future__ import annotations

import json
import math
import tarfile

import polars as pl
import pytest
from typer.testing import CliRunner

from hymate.cli import app
from hymate.data import physionet2019
from hymate.data.physionet2019 import COLUMNS, stay_labels, with_stay_labels
from hymate.data.sources import Source
from hymate.data.store import load_dataset, locate
from hymate.errors import DataError, DataNotFoundError

HEADER = "|".join(COLUMNS)
FIRST = 1  # p000001.psv in training_setA


def row(hour: int, label: int = 0, first_hour_of_stay: bool = False, **values) -> str:
    """One hourly row: NaN everywhere except the given values, the statics, ICULOS and the label."""
    cells = dict.fromkeys(COLUMNS, "NaN")
    cells.update(
        Age="61.5", Gender="1", Unit1="0", Unit2="1", HospAdmTime="-3.2", ICULOS=str(hour), SepsisLabel=str(label)
    )
    cells.update({k: str(v) for k, v in values.items()})
    return "|".join(cells[c] for c in COLUMNS)


def default_rows(k: int, septic: bool) -> list[str]:
    """Hours 1..8; HR every hour, Temp at hour 2, a lab at hour 5; septic stays labelled from hour 6."""
    rows = []
    for hour in range(1, 9):
        values = {"HR": 80 + k + hour}
        if hour == 2:
            values["Temp"] = 37.1
        if hour == 5:
            values["Lactate"] = 2.5
        rows.append(row(hour, int(septic and hour >= 6), **values))
    return rows


def psv(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def write_p19(folder, per_set: int = 3, overrides: dict[int, str] | None = None) -> dict[int, str]:
    """training_setA/p00000k.psv and training_setB/p10000k.psv; stay k = 1 of each set is septic."""
    overrides = overrides or {}
    ids = {}
    for hospital, base in (("A", 0), ("B", 100000)):
        (folder / f"training_set{hospital}").mkdir(parents=True, exist_ok=True)
        for k in range(1, per_set + 1):
            sid = base + k
            ids[sid] = hospital
            text = overrides.get(sid, psv(default_rows(k, septic=k == 1)))
            (folder / f"training_set{hospital}" / f"p{sid:06d}.psv").write_text(text)
    return ids


def read_folder(folder, **kwargs):
    return physionet2019.read(Source(folder), progress=False, **kwargs)


def test_clean_synthetic_tree_reads_fully(tmp_path):
    ids = write_p19(tmp_path)
    data = read_folder(tmp_path)
    assert data.stay_ids == sorted(ids)
    assert data.stays.get_column("split_group").to_list() == ["A"] * 3 + ["B"] * 3
    assert data.stays.get_column("n_hours").to_list() == [8] * 6
    assert data.events.height == 6 * (8 + 1 + 1)
    assert data.labels.height == 6 * 8  # one label per stay-hour
    assert data.report["excluded_stays"] == {} and data.report["skipped_values"] == {}
    acc = data.report["value_accounting"]
    assert acc["cells"] == 6 * 8 * 34 == acc["events"] + acc["missing_nan"] + acc["implausible_dropped"]
    assert data.report["per_set"]["A"] == {"stays": 3, "rows": 24, "septic_stays": 1, "positive_rows": 3}
    # Events: time = ICULOS, sorted by (stay, time, variable), only observed values.
    first = data.events.filter(pl.col("stay_id") == FIRST)
    assert first.rows()[:4] == [
        (1, 1.0, "HR", 82.0),
        (1, 2.0, "HR", 83.0),
        (1, 2.0, "Temp", 37.1),
        (1, 3.0, "HR", 84.0),
    ]
    assert data.events.equals(data.events.sort("stay_id", "time", "variable"))
    row0 = data.statics.filter(pl.col("stay_id") == FIRST).row(0, named=True)
    assert row0 == {"stay_id": 1, "age": 61.5, "gender": 1, "unit1": 0, "unit2": 1, "hosp_adm_time": -3.2}


def test_hourly_labels_and_stay_level_labels(tmp_path):
    write_p19(tmp_path)
    data = read_folder(tmp_path)
    hourly = data.labels.filter(pl.col("stay_id") == FIRST)
    assert hourly.get_column("prediction_time").to_list() == [float(h) for h in range(1, 9)]
    assert hourly.get_column("label").to_list() == [False] * 5 + [True] * 3
    per_stay = stay_labels(data)
    assert per_stay.height == 6 and per_stay.get_column("label").sum() == 2
    septic = per_stay.filter(pl.col("stay_id") == FIRST).row(0, named=True)
    assert septic == {"stay_id": 1, "label": True, "first_positive_hour": 6.0, "onset_hour": 12.0,
                      "last_hour": 8.0, "n_hours": 8}  # fmt: skip
    assert per_stay.filter(pl.col("stay_id") == 2).get_column("first_positive_hour").to_list() == [None]
    collapsed = with_stay_labels(data)
    assert collapsed.labels.height == 6 and collapsed.labels.get_column("prediction_time").to_list() == [8.0] * 6


def test_nan_statics_are_missing_and_iculos_may_start_late(tmp_path):
    rows = [row(h, HR=90, Unit1="NaN", Unit2="NaN", HospAdmTime="NaN") for h in (5, 6, 7)]
    write_p19(tmp_path, overrides={FIRST: psv(rows)})
    data = read_folder(tmp_path)
    statics = data.statics.filter(pl.col("stay_id") == FIRST).row(0, named=True)
    assert statics["unit1"] is None and statics["unit2"] is None and statics["hosp_adm_time"] is None
    assert data.events.filter(pl.col("stay_id") == FIRST).get_column("time").to_list() == [5.0, 6.0, 7.0]
    assert data.report["stays_starting_after_hour_1"] == 1


def test_implausible_values_are_dropped_and_counted(tmp_path):
    rows = default_rows(1, False)
    rows[2] = row(3, HR=80, FiO2=4000, Temp=50)
    write_p19(tmp_path, overrides={FIRST: psv(rows)})
    data = read_folder(tmp_path)
    skipped = data.report["skipped_values"]
    assert skipped["implausible FiO2 (outside 0.1..1 fraction)"]["count"] == 1
    assert skipped["implausible Temp (outside 15..46 degC)"]["examples"] == [
        "training_setA/p000001.psv line 4: Temp = 50.0"
    ]
    assert data.report["value_accounting"]["implausible_dropped"] == 2
    assert not data.events.filter(pl.col("variable") == "FiO2").height


def test_archive_and_folder_read_the_same(tmp_path):
    write_p19(tmp_path / "tree" / "training")
    archive = tmp_path / "p19.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="physionet-challenge-2019")
    a, b = physionet2019.read(Source(archive), progress=False), read_folder(tmp_path / "tree")
    assert a.events.equals(b.events) and a.statics.equals(b.statics) and a.labels.equals(b.labels)
    assert a.stays.equals(b.stays)


def test_crlf_files_and_a_byte_order_mark_read_like_lf(tmp_path):
    write_p19(tmp_path / "lf")
    write_p19(tmp_path / "crlf")
    for path in (tmp_path / "crlf").rglob("*.psv"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert read_folder(tmp_path / "lf").events.equals(read_folder(tmp_path / "crlf").events)


# --- bad input: one DataError naming the file, the line and the problem -------------------
def error_of(tmp_path, overrides, **kwargs) -> str:
    write_p19(tmp_path, overrides=overrides)
    with pytest.raises(DataError) as info:
        read_folder(tmp_path, **kwargs)
    return str(info.value)


def test_wrong_column_count_is_located(tmp_path):
    rows = default_rows(1, False)
    rows[1] = rows[1] + "|7"  # 42 fields
    rows[3] = rows[3].rsplit("|", 2)[0]  # 39 fields
    message = error_of(tmp_path, {FIRST: psv(rows)})
    assert "wrong number of fields (expected 41, as in the header): 2" in message
    assert "training_setA/p000001.psv line 3: 42 fields" in message
    assert "training_setA/p000001.psv line 5: 39 fields" in message


def test_compensating_field_counts_are_still_caught(tmp_path):
    # One row one field short, the next one long: the file's total separator count is right.
    rows = default_rows(1, False)
    rows[1], rows[2] = rows[1].rsplit("|", 1)[0], rows[2] + "|0"
    message = error_of(tmp_path, {FIRST: psv(rows)})
    assert "line 3: 40 fields" in message and "line 4: 42 fields" in message


def test_malformed_row_and_blank_line(tmp_path):
    rows = default_rows(1, False)
    rows[4] = "this is not a row"
    rows.insert(2, "")
    message = error_of(tmp_path, {FIRST: psv(rows)})
    assert "blank line: 1" in message and "p000001.psv line 4" in message
    assert "1 fields in 'this is not a row'" in message


def test_non_numeric_and_empty_values_name_the_column(tmp_path):
    rows = default_rows(1, False)
    rows[0] = row(1, HR="abc")
    rows[1] = row(2, HR="")
    message = error_of(tmp_path, {FIRST: psv(rows), 100002: psv([row(1, Glucose="1,5")])})
    assert "non-numeric value: 2" in message
    assert "training_setA/p000001.psv line 2: column HR = 'abc'" in message
    assert "training_setB/p100002.psv line 2: column Glucose = '1,5'" in message
    assert "empty field (write NaN for a value that was not measured): 1" in message
    assert "p000001.psv line 3: column HR is empty" in message


def test_empty_file_and_header_only_file(tmp_path):
    message = error_of(tmp_path, {FIRST: "", 2: HEADER + "\n"})
    assert "empty file" in message and "training_setA/p000001.psv" in message
    assert "no hourly rows after the header: 1, e.g. training_setA/p000002.psv" in message


def test_missing_label_column_is_an_error_unless_labels_are_optional(tmp_path):
    header = HEADER.removesuffix("|SepsisLabel")
    rows = [r.rsplit("|", 1)[0] for r in default_rows(1, False)]
    message = error_of(tmp_path, {FIRST: psv(rows, header)})
    assert "lacks the SepsisLabel column" in message and "training_setA/p000001.psv" in message
    data = read_folder(tmp_path, require_labels=False)  # new stays to score
    assert FIRST in data.stay_ids and data.labels.filter(pl.col("stay_id") == FIRST).height == 0
    assert data.labels.height == 5 * 8 and data.report["stays_without_labels"] == 1


def test_unknown_missing_and_repeated_columns(tmp_path):
    unknown = psv([r + "|1" for r in default_rows(1, False)], HEADER + "|Lactate2")
    missing = psv([r.split("|", 1)[1] for r in default_rows(2, False)], HEADER.split("|", 1)[1])
    repeated = psv([r + "|1" for r in default_rows(3, False)], HEADER + "|HR")
    message = error_of(tmp_path, {FIRST: unknown, 2: missing, 3: repeated})
    assert "header has unknown columns ['Lactate2']" in message
    assert "header lacks columns ['HR']" in message and "training_setA/p000002.psv" in message
    assert "header repeats columns ['HR']" in message


def test_bad_iculos_and_labels(tmp_path):
    gap = [row(h, HR=80) for h in (1, 2, 4)]
    frac = [row(1, HR=80), row(1.5, HR=81)]
    label = [row(1, HR=80, SepsisLabel=2), row(2, HR=80, SepsisLabel="NaN")]
    message = error_of(tmp_path, {FIRST: psv(gap), 2: psv(frac), 3: psv(label)})
    assert "ICULOS does not rise by exactly 1 hour from the previous row: 2" in message  # the gap and 1 -> 1.5
    assert "training_setA/p000001.psv line 4: ICULOS = 4.0" in message
    assert "ICULOS is not a whole number of hours >= 0: 1" in message
    assert "SepsisLabel is not 0 or 1: 2" in message


def test_infinite_values_and_duplicate_stay_ids(tmp_path):
    write_p19(tmp_path / "a")
    (tmp_path / "a" / "training_setA" / "p000001.psv").write_text(psv([row(1, HR="inf")]))
    (tmp_path / "a" / "training_setB" / "p000002.psv").write_text(psv([row(1, HR=80)]))
    with pytest.raises(DataError) as info:
        read_folder(tmp_path / "a")
    message = str(info.value)
    assert "infinite value: 1" in message
    assert "stay id (file name digits) used by more than one file: 2" in message


def test_files_outside_the_layout_are_reported_not_silently_dropped(tmp_path):
    write_p19(tmp_path)
    (tmp_path / "training_setA" / "notes.psv").write_text(psv(default_rows(1, False)))
    data = read_folder(tmp_path)
    assert data.report["excluded_stays"]["not a training_set<X>/p<digits>.psv file"]["ids"] == [
        "training_setA/notes.psv"
    ]
    assert data.report["records_read"] == 7 and data.stays.height == 6


def test_no_files_and_no_download(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no PhysioNet 2019 stays"):
        read_folder(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="no physionet2019 files"):
        locate("physionet2019", tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="(?s)--download is not supported for physionet2019.*training_setA"):
        load_dataset("physionet2019", tmp_path / "empty", tmp_path / "cache", download=True)


def test_store_finds_and_caches_the_dataset(tmp_path):
    write_p19(tmp_path / "raw" / "physionet2019" / "training")
    assert locate("physionet2019", tmp_path / "raw") == tmp_path / "raw" / "physionet2019"
    first = load_dataset("physionet2019", tmp_path / "raw", tmp_path / "cache", progress=False)
    again = load_dataset("physionet2019", tmp_path / "raw", tmp_path / "cache", progress=False)
    assert again.report["cache_key"] == first.report["cache_key"]
    assert again.labels.equals(first.labels) and again.stays.equals(first.stays)


def test_cli_prepare_and_describe(tmp_path):
    write_p19(tmp_path / "raw", per_set=4)
    args = ["--data-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "physionet2019", *args])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "8 records read -> 8 stays, 80 events, 64 label rows" in text
    # Too few stays for the sepsis tasks' protocols: said per task and protocol, not a crash.
    assert "sepsis-online kfold5: no split files" in text and "too few labelled stays" in text
    result = runner.invoke(app, ["describe", "physionet2019", *args, "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stays"] == 8 and summary["labelled_stays"] == 8 and summary["positives"] == 2
    assert summary["task"]["label_rows"] == 64 and summary["task"]["positive_rows"] == 6
    assert {g["split_group"]: g["positives"] for g in summary["groups"]} == {"A": 1, "B": 1}
    assert math.isclose(summary["label_rate"], 0.25)
    result = runner.invoke(app, ["prepare", "physionet2019", "--data-dir", str(tmp_path / "none"), "-q"])
    assert result.exit_code == 2 and "training_setA" in result.output and "Traceback" not in result.output


def test_invalid_and_changing_statics_are_counted(tmp_path):
    rows = [row(1, HR=80, Gender=2), row(2, HR=81, Gender=2, Age=62)]
    write_p19(tmp_path, overrides={FIRST: psv(rows)})
    data = read_folder(tmp_path)
    statics = data.statics.filter(pl.col("stay_id") == FIRST).row(0, named=True)
    assert statics["gender"] is None and statics["age"] == 61.5  # the first row's age is kept
    invalid = data.report["skipped_values"]["invalid Gender static (not 0 or 1; set missing)"]
    assert invalid == {"count": 1, "examples": ["training_setA/p000001.psv line 2: Gender = 2.0"]}
    changes = data.report["static_changes"]["Age changes within the stay (first row kept)"]
    assert changes == {"count": 1, "examples": ["training_setA/p000001.psv"]}
