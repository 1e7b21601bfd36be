"""MEDS in: `hymate.data.meds` reads a MEDS 0.4 dataset (the meds-testing-helpers sample, hymate's own
export, and broken ones), and a MEDS label file is a task (`hymate.tasks.meds`)."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_testing_helpers.dataset import MEDSDataset
from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS

from hymate.data import meds as meds_reader
from hymate.data import physionet2012
from hymate.data.meds_export import export_meds
from hymate.data.sources import Source
from hymate.data.store import load_dataset
from hymate.errors import DataError, DataNotFoundError
from hymate.tasks.registry import get_task, tasks_of
from hymate.tasks.splits import load_or_make_splits, make_splits
from tests.conftest import write_p12

TASK = "task_labels/boolean_value_task"


@pytest.fixture
def sample(tmp_path):
    """meds-testing-helpers' static sample: 6 subjects in 4 shards, splits, a boolean task."""
    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS).write(tmp_path / "meds")
    return tmp_path / "meds"


def read(root):
    return meds_reader.read(Source(root), progress=False)


def test_the_sample_dataset_reads_with_codes_values_statics_and_splits(sample):
    data = read(sample)
    assert data.stays.height == 6 and data.report["shards"] == 4
    # 62 rows: 12 statics, 6 births, 44 timed events (12 of them codes without a value)
    assert data.report["rows_read"] == 62 and data.events.height == 44
    assert data.report["valueless_events"] == 12 and data.events.get_column("value").null_count() == 12
    assert set(data.events.filter(pl.col("value").is_null()).get_column("variable")) == {
        "ADMISSION//CARDIAC", "ADMISSION//PULMONARY", "ADMISSION//ORTHOPEDIC", "DISCHARGE"}  # fmt: skip
    assert data.statics.columns == ["stay_id", "EYE_COLOR//BLUE", "EYE_COLOR//BROWN", "EYE_COLOR//HAZEL", "HEIGHT", "age"]
    row = data.statics.filter(pl.col("stay_id") == 239684).row(0, named=True)
    assert row["EYE_COLOR//BROWN"] == 1.0 and row["EYE_COLOR//BLUE"] is None
    assert row["age"] == pytest.approx((2010 - 1980) - (7 * 30.5 + 17) / 365.25, abs=0.05)  # 1980-12-28 to 2010-05-11
    groups = dict(data.stays.select("stay_id", "split_group").iter_rows())
    assert groups[754281] == "tuning" and groups[1500733] == "held_out" and groups[239684] == "train"
    first = data.events.filter(pl.col("stay_id") == 239684)
    assert first.get_column("time").min() == 0.0  # origin: the admission, not the birth
    assert first.filter(pl.col("variable") == "DISCHARGE").get_column("time").item() == pytest.approx(1 + 45 / 60 + 28 / 3600)


def test_a_label_file_is_a_task_on_the_subjects_clock(sample):
    data = read(sample)
    task = get_task("meds", str(sample / TASK))
    assert task.label_type == "binary" and task.dataset == "meds" and task.protocols[0] == "meds"
    view = task.view(data)
    assert view.labels.height == 21  # every label row: all 6 subjects have events before their prediction times
    first = view.labels.filter(pl.col("stay_id") == 239684)
    assert first.get_column("prediction_time").to_list() == pytest.approx([0.3025, 0.8025, 1.3025])  # 18:00 - 17:41:51
    assert first.get_column("label").to_list() == [0.0, 1.0, 1.0]
    (split,) = make_splits(view, task, "meds", 0)
    assert split.val == (754281,) and split.test == (1500733,) and len(split.train) == 4


def test_labels_outside_the_data_are_left_out_and_counted(sample, tmp_path):
    data = read(sample)
    labels = pl.DataFrame({"subject_id": [239684, 239684, 999], "prediction_time": ["2010-05-11 18:00:00", "2001-01-01 00:00:00",
                                                                                   "2010-05-11 18:00:00"]},  # fmt: skip
                          ).with_columns(pl.col("prediction_time").str.to_datetime().cast(pl.Datetime("us")),
                                         pl.Series("float_value", [1.5, 2.0, 3.0], dtype=pl.Float32))  # fmt: skip
    labels.write_parquet(tmp_path / "los.parquet")
    task = get_task("meds", str(tmp_path / "los.parquet"))
    assert task.label_type == "regression"
    view = task.view(data)
    assert view.labels.get_column("label").to_list() == [1.5]
    left = view.report["task"]["excluded_stays"]
    assert left["label for a subject with no events in the data (left out)"]["ids"] == [999]
    assert left["prediction time before the subject's first event (nothing to read; left out)"]["ids"] == [239684]


@pytest.mark.parametrize("columns, message", [
    ({"boolean_value": [True], "float_value": pl.Series([1.0], dtype=pl.Float32)}, "exactly one of"),
    ({"float_value": [1.0]}, "want float, got double"),
    ({}, "exactly one of"),
    ({"boolean_value": [True], "foo": [1]}, "does not follow the MEDS label schema"),
])  # fmt: skip
def test_bad_label_files_are_one_clear_error(tmp_path, columns, message):
    frame = pl.DataFrame({"subject_id": [1], "prediction_time": [dt.datetime(2010, 1, 1)], **columns})
    frame.with_columns(pl.col("prediction_time").cast(pl.Datetime("us"))).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(DataError, match=message):
        get_task("meds", str(tmp_path / "l.parquet"))


def test_duplicate_label_rows_and_a_missing_label_path_are_errors(tmp_path):
    frame = pl.DataFrame({"subject_id": [1, 1], "prediction_time": [dt.datetime(2010, 1, 1)] * 2, "boolean_value": [True, False]})
    frame.with_columns(pl.col("prediction_time").cast(pl.Datetime("us"))).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(DataError, match="repeat a"):
        get_task("meds", str(tmp_path / "l.parquet"))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        get_task("meds", str(tmp_path / "none.parquet"))


# --- broken datasets ------------------------------------------------------------------------------
def _shard(root, name, **columns):
    table = pa.table({"subject_id": pa.array(columns.pop("subject_id", [1, 1]), pa.int64()),
                      "time": pa.array(columns.pop("time", [None, 3_600_000_000]), pa.timestamp("us")),
                      "code": pa.array(columns.pop("code", ["AGE", "HR"]), pa.string()),
                      "numeric_value": pa.array(columns.pop("numeric_value", [50.0, 80.0]), columns.pop("dtype", pa.float32()))})  # fmt: skip
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / name)


def test_a_shard_off_the_meds_schema_is_named(tmp_path):
    _shard(tmp_path, "0.parquet")
    _shard(tmp_path, "1.parquet", subject_id=[2, 2], dtype=pa.float64())
    with pytest.raises(DataError, match=r"data/1.parquet does not follow the MEDS data schema.*numeric_value"):
        read(tmp_path)
    (tmp_path / "data" / "1.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"data/1.parquet is not a readable Parquet file"):
        read(tmp_path)


def test_a_subject_in_two_shards_and_conflicting_statics_are_errors(tmp_path):
    _shard(tmp_path, "0.parquet")
    _shard(tmp_path, "1.parquet")
    with pytest.raises(DataError, match=r"subjects are in more than one shard \(MEDS keeps a subject in one\): subject 1 in data/0.parquet, data/1.parquet"):
        read(tmp_path)
    (tmp_path / "data" / "1.parquet").unlink()
    _shard(tmp_path, "0.parquet", subject_id=[1, 1, 1], time=[None, None, 5], code=["AGE", "AGE", "HR"], numeric_value=[50.0, 51.0, 1.0])
    with pytest.raises(DataError, match="static codes have two values for one subject"):
        read(tmp_path)


def test_non_finite_values_are_dropped_and_counted_and_empty_subjects_left_out(tmp_path):
    _shard(tmp_path, "0.parquet", subject_id=[1, 1, 1, 2], time=[None, 5, 6, None], code=["AGE", "HR", "HR", "AGE"],
           numeric_value=[50.0, float("nan"), 80.0, 60.0])  # fmt: skip
    data = read(tmp_path)
    assert data.report["skipped_values"]["numeric_value NaN or infinite"]["count"] == 1
    assert data.events.height == 1 and data.stays.get_column("stay_id").to_list() == [1]
    assert data.report["excluded_stays"]["no timed events (statics only)"]["ids"] == [2]


def test_no_shards_or_no_folder_is_data_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="no MEDS data shards"):
        read(tmp_path)
    with pytest.raises(DataNotFoundError):
        load_dataset("meds", tmp_path / "absent", tmp_path / "cache", progress=False)


def test_the_cache_key_follows_size_and_time_not_content_reads(sample, tmp_path):
    first = load_dataset("meds", sample, tmp_path / "cache", progress=False)
    assert load_dataset("meds", sample, tmp_path / "cache", progress=False).report["cache_key"] == first.report["cache_key"]
    shard = sorted((sample / "data").rglob("*.parquet"))[0]
    pq.write_table(pq.read_table(shard), shard)  # rewritten: a new modification time
    assert load_dataset("meds", sample, tmp_path / "cache", progress=False).report["cache_key"] != first.report["cache_key"]


# --- the round trip through hymate's own export ------------------------------------------------------
def _round_trip(native, root):
    task = get_task("physionet2012")
    split = load_or_make_splits(task.view(native), task, task.protocols[0], 0, root / "splits")[0]
    export_meds(native, root / "meds", tasks_of("physionet2012"), split)
    return read(root / "meds"), split


def _same(native, back):
    a, b = back.events, native.events
    assert a.select("stay_id", "time", "variable").equals(b.select("stay_id", "time", "variable"))  # times exact
    assert (a.get_column("value") == b.get_column("value").cast(pl.Float32).cast(pl.Float64)).all()  # MEDS stores float32
    joined = back.statics.join(native.statics, on="stay_id", suffix="_native")
    for column in [c for c in native.statics.columns if c != "stay_id"]:
        x, y = joined.get_column(column), joined.get_column(f"{column}_native").cast(pl.Float32).cast(pl.Float64)
        assert x.is_null().equals(y.is_null()) and (x.drop_nulls() == y.drop_nulls()).all(), column


def test_exported_p12_reads_back_with_the_native_events_statics_labels_and_split(tmp_path):
    write_p12(tmp_path / "raw", per_set=20)
    native = physionet2012.read(Source(tmp_path / "raw"), progress=False)
    back, split = _round_trip(native, tmp_path)
    _same(native, back)
    for short in ("mortality", "los-bands", "los-days"):
        ours, theirs = get_task("meds", str(tmp_path / "meds" / "labels" / f"{short}.parquet")), get_task("physionet2012", short)
        assert ours.classes == theirs.classes and ours.categorical_statics == theirs.categorical_statics
        assert ours.window_hours == theirs.window_hours
        expected = theirs.view(native).labels.drop_nulls("label")
        got = ours.view(back).labels
        assert got.select("stay_id", "prediction_time").equals(expected.select("stay_id", "prediction_time"))
        assert (got.get_column("label") == expected.get_column("label").cast(pl.Float32).cast(pl.Float64)).all()
    ours = get_task("meds", str(tmp_path / "meds" / "labels" / "mortality.parquet"))
    (drawn,) = make_splits(ours.view(back), ours, "meds", 0)
    assert (drawn.train, drawn.val, drawn.test) == (split.train, split.val, split.test)


@pytest.mark.realdata
def test_real_p12_round_trips_through_meds(p12, tmp_path):
    back, _ = _round_trip(p12, tmp_path)
    assert back.events.height == 5_205_660 and back.stays.height == 11_988
    _same(p12, back)
    assert json.loads((tmp_path / "meds" / "metadata" / "hymate.json").read_text())["time_anchor"].startswith("2000-01-01")


def test_exported_p19_reads_back_with_the_native_events_statics_and_hourly_labels(tmp_path):
    from hymate.data import physionet2019
    from tests.data.test_physionet2019_bad_input import write_p19

    write_p19(tmp_path / "raw", per_set=6)
    native = physionet2019.read(Source(tmp_path / "raw"), progress=False)
    task = get_task("physionet2019", "sepsis-online")
    export_meds(native, tmp_path / "meds", tasks_of("physionet2019"), None)  # 2 septic stays: too few to split
    back = read(tmp_path / "meds")
    _same(native, back)
    ours = get_task("meds", str(tmp_path / "meds" / "labels" / "sepsis-online.parquet"))
    assert ours.label_type == "binary" and ours.window_hours == task.window_hours
    expected = task.view(native).labels.drop_nulls("label")
    got = ours.view(back).labels
    assert got.select("stay_id", "prediction_time").equals(expected.select("stay_id", "prediction_time"))
    assert got.get_column("label").equals(expected.get_column("label"))
