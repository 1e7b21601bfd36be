"""The other Outcomes columns (SAPS-I, SOFA, Length_of_stay, Survival) kept per stay, as given."""

from __future__ import annotations

import polars as pl
import pytest

from hymate.data import physionet2012
from hymate.data.sources import Source
from hymate.errors import DataError
from tests.conftest import write_p12

FIRST = 200000  # first record id of set a in write_p12; set b starts at 201000, set c at 202000
HEADER = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"
VALUE_COLUMNS = ["saps_i", "sofa", "length_of_stay", "survival"]


def read_folder(folder, require_labels: bool = True):
    return physionet2012.read(Source(folder), progress=False, require_labels=require_labels)


def write_outcomes(folder, group: str, rows: list[str], header: str = HEADER) -> None:
    (folder / f"Outcomes-{group}.txt").write_text("\n".join([header, *rows]) + "\n")


def outcome_row(data, stay_id: int) -> dict:
    return data.stays.filter(pl.col("stay_id") == stay_id).select(VALUE_COLUMNS).row(0, named=True)


def test_outcome_values_are_kept_as_given_with_minus_one(tmp_path):
    write_p12(tmp_path, per_set=4)  # sets b, c: SAPS-I 10, SOFA 5, Length_of_stay 7, Survival -1
    write_outcomes(tmp_path, "a", [
        f"{FIRST},12,3,9,-1,0",
        f"{FIRST + 1},-1,-1,-1,-1,0",  # every value unknown
        f"{FIRST + 2}, 20 ,11,4,3,1",  # spaces around a value are stripped
        f"{FIRST + 3},7,,2,-23,0",  # an empty cell is missing; -23 is kept as given
    ])  # fmt: skip
    data = read_folder(tmp_path)
    assert {c: data.stays.schema[c] for c in VALUE_COLUMNS} == dict.fromkeys(VALUE_COLUMNS, pl.Int64)
    assert outcome_row(data, FIRST) == {"saps_i": 12, "sofa": 3, "length_of_stay": 9, "survival": -1}
    assert outcome_row(data, FIRST + 1) == {"saps_i": -1, "sofa": -1, "length_of_stay": -1, "survival": -1}
    assert outcome_row(data, FIRST + 2) == {"saps_i": 20, "sofa": 11, "length_of_stay": 4, "survival": 3}
    assert outcome_row(data, FIRST + 3) == {"saps_i": 7, "sofa": None, "length_of_stay": 2, "survival": -23}
    assert outcome_row(data, 201000) == {"saps_i": 10, "sofa": 5, "length_of_stay": 7, "survival": -1}
    deaths = data.labels.filter(pl.col("label") & (pl.col("stay_id") < 201000)).get_column("stay_id")
    assert deaths.to_list() == [FIRST + 2]
    assert data.report["outcomes"] == {
        "saps_i": {"missing": 0, "minus_one": 1, "other_negative": 0, "min": 7, "max": 20},
        "sofa": {"missing": 1, "minus_one": 1, "other_negative": 0, "min": 3, "max": 11},
        "length_of_stay": {"missing": 0, "minus_one": 1, "other_negative": 0, "min": 2, "max": 9},
        "survival": {"missing": 0, "minus_one": 10, "other_negative": 1, "min": -23, "max": 3},
    }


def test_the_old_stays_columns_and_labels_are_unchanged(tmp_path):
    write_p12(tmp_path)
    data = read_folder(tmp_path)
    assert data.stays.columns == ["stay_id", "split_group", "n_events", *VALUE_COLUMNS]
    assert data.stays.get_column("n_events").to_list() == [3] * 18
    assert data.labels.columns == ["stay_id", "prediction_time", "label"]
    assert data.labels.get_column("label").sum() == 6  # write_p12: every third record died


def test_stays_without_an_outcome_row_get_nulls_when_labels_are_not_required(tmp_path):
    write_p12(tmp_path)
    (tmp_path / "Outcomes-c.txt").unlink()
    data = read_folder(tmp_path, require_labels=False)
    set_c = data.stays.filter(pl.col("split_group") == "c")
    assert set_c.height == 6 and data.stays.height == 18
    assert all(set_c.get_column(c).null_count() == 6 for c in VALUE_COLUMNS)
    assert outcome_row(data, FIRST) == {"saps_i": 10, "sofa": 5, "length_of_stay": 7, "survival": -1}
    assert data.report["outcomes"]["length_of_stay"] == {
        "missing": 6, "minus_one": 0, "other_negative": 0, "min": 7, "max": 7,
    }  # fmt: skip
    assert data.labels.height == 12


def test_no_outcomes_files_at_all_gives_null_columns_when_labels_are_not_required(tmp_path):
    write_p12(tmp_path)
    for path in tmp_path.glob("Outcomes-*.txt"):
        path.unlink()
    data = read_folder(tmp_path, require_labels=False)
    assert data.stays.height == 18 and data.labels.height == 0
    assert all(data.stays.get_column(c).null_count() == 18 for c in VALUE_COLUMNS)
    assert data.report["outcomes"]["survival"] == {
        "missing": 18, "minus_one": 0, "other_negative": 0, "min": None, "max": None,
    }  # fmt: skip


def test_outcomes_file_with_only_the_label_columns_still_reads(tmp_path):
    write_p12(tmp_path, per_set=2)
    write_outcomes(tmp_path, "a", [f"{FIRST},1", f"{FIRST + 1},0"], header="RecordID,In-hospital_death")
    data = read_folder(tmp_path)
    assert outcome_row(data, FIRST) == dict.fromkeys(VALUE_COLUMNS)
    assert data.labels.filter(pl.col("stay_id") == FIRST).get_column("label").to_list() == [True]
    assert data.report["outcomes"]["sofa"]["missing"] == 2


@pytest.mark.parametrize(
    ("column", "value"),
    [("SAPS-I", "high"), ("SOFA", "3.5"), ("Length_of_stay", "7 days"), ("Survival", "NA"), ("Length_of_stay", "1e3")],
)
def test_non_integer_outcome_value_is_a_clear_error(tmp_path, column, value):
    write_p12(tmp_path, per_set=3)
    values = {"SAPS-I": "10", "SOFA": "5", "Length_of_stay": "7", "Survival": "-1"} | {column: value}
    rows = ["201000,10,5,7,-1,0", f"201001,{','.join(values.values())},0", "201002,10,5,7,-1,1"]
    write_outcomes(tmp_path, "b", rows)
    with pytest.raises(DataError) as err:
        read_folder(tmp_path)
    message = str(err.value)
    assert "Outcomes-b.txt" in message and "RecordID 201001" in message and column in message
    assert repr(value) in message
