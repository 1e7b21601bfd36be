"""MEDS out: `export_meds` and `hymate export meds` write a MEDS 0.4 dataset that the `meds` package's
schemas accept, with every event and static, the task labels, one split, and times that map back."""

from __future__ import annotations

import json

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import hymate.data.meds_export as meds_export
from hymate.cli import app
from hymate.data import physionet2012
from hymate.data.meds_export import export_meds
from hymate.data.schema import STATIC_CODE_PREFIX, meds_hours
from hymate.data.sources import Source
from hymate.errors import DataError
from hymate.tasks.registry import get_task, tasks_of
from hymate.tasks.splits import Split, load_or_make_splits
from tests.conftest import default_lines, record_text, write_p12

runner = CliRunner()
VALUE_COLUMN = {"binary": "boolean_value", "multiclass": "integer_value", "regression": "float_value"}
# Odd minutes up to the end of the 48 h window: times whose float is not a short decimal.
ODD_TIMES = ["00:01", "00:07", "03:13", "13:07", "23:59", "29:41", "47:59", "48:00"]


def _tree(folder):
    overrides = {200000 + k: record_text(200000 + k, [*default_lines(k), *(f"{t},HR,{60 + j}" for j, t in enumerate(ODD_TIMES))])
                 for k in range(5)}  # fmt: skip
    write_p12(folder, per_set=20, overrides=overrides)
    return physionet2012.read(Source(folder), progress=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("meds")
    data = _tree(root / "raw")
    task = get_task("physionet2012")
    split = load_or_make_splits(task.view(data), task, task.protocols[0], 0, root / "splits")[0]
    summary = export_meds(data, root / "out", tasks_of("physionet2012"), split, shards=3)
    return data, root, split, summary


def _shards(out) -> list[pl.DataFrame]:
    return [pl.read_parquet(out / "data" / f"{k}.parquet") for k in range(len(list((out / "data").iterdir())))]


def test_every_table_validates_with_the_meds_schemas(exported):
    _, root, _, summary = exported
    out = root / "out"
    for path in sorted((out / "data").iterdir()):
        meds.DataSchema.validate(pq.read_table(path))
        assert pq.read_schema(path).names == ["subject_id", "time", "code", "numeric_value"]
    meds.CodeMetadataSchema.validate(pq.read_table(out / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(out / meds.subject_splits_filepath))
    for path in (out / "labels").iterdir():
        meds.LabelSchema.validate(pq.read_table(path))
    metadata = json.loads((out / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(metadata)
    assert metadata["etl_name"] == "hymate" and metadata["meds_version"] == meds.__version__
    assert metadata["dataset_name"] == "physionet2012" and set(metadata) >= {"etl_version", "created_at"}
    assert summary["shards"] == 3 and sorted(p.name for p in (out / "data").iterdir()) == ["0.parquet", "1.parquet", "2.parquet"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left beside OUT


def test_rows_are_the_events_and_the_non_null_statics_each_subject_in_one_shard_sorted(exported):
    data, root, _, summary = exported
    shards = _shards(root / "out")
    statics = data.statics.drop("stay_id")
    non_null = statics.height * statics.width - sum(statics.null_count().row(0))
    assert sum(s.height for s in shards) == data.events.height + non_null == summary["rows"]
    assert summary["subjects"] == data.stays.height and summary["events"] == data.events.height
    seen = [set(s.get_column("subject_id").to_list()) for s in shards]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == data.stays.height  # each subject in one shard
    for shard in shards:
        ids = shard.get_column("subject_id")
        assert ids.is_sorted() and ids.n_unique() == (ids.diff().drop_nulls() != 0).sum() + 1  # contiguous
        for (_,), rows in shard.group_by("subject_id", maintain_order=True):
            times = rows.get_column("time")
            n_static = times.null_count()
            assert times.head(n_static).is_null().all() and times.tail(rows.height - n_static).is_sorted()
            assert rows.head(n_static).get_column("code").str.starts_with(STATIC_CODE_PREFIX).all()


def test_times_round_trip_to_the_hours_exactly(exported):
    data, root, _, _ = exported
    timed = pl.concat(_shards(root / "out")).filter(pl.col("time").is_not_null())
    back = timed.select(stay_id="subject_id", time=meds_hours(pl.col("time")), variable="code",
                        value=pl.col("numeric_value").cast(pl.Float64))  # fmt: skip
    assert back.select("stay_id", "time", "variable").equals(data.events.select("stay_id", "time", "variable"))
    assert (back.get_column("time") == data.events.get_column("time")).all()  # bit for bit, not approximately
    assert data.events.filter(pl.col("time") == 47 + 59 / 60).height == 5  # the odd minutes are there


def test_label_files_hold_each_tasks_labelled_rows_in_its_value_column(exported):
    data, root, _, summary = exported
    for task in tasks_of("physionet2012"):
        labels = pl.read_parquet(root / "out" / "labels" / f"{task.short}.parquet")
        view = task.view(data).labels.filter(pl.col("label").is_not_null())
        column = VALUE_COLUMN[task.label_type]
        assert labels.columns == ["subject_id", "prediction_time", column], task.short
        assert labels.height == view.height == summary["labels"][task.short]
        assert labels.get_column("subject_id").to_list() == view.get_column("stay_id").to_list()
        assert meds_hours(pl.col("prediction_time")).alias("h").pipe(labels.select).get_column("h").to_list() == \
            view.get_column("prediction_time").to_list()  # fmt: skip
        expected = view.get_column("label")
        got = labels.get_column(column)
        if task.label_type == "binary":
            assert got.to_list() == (expected == 1).to_list()
        else:
            assert got.cast(pl.Float64).to_list() == expected.to_list()
    notes = json.loads((root / "out" / "metadata" / "hymate.json").read_text())
    assert notes["labels"]["los-bands"]["classes"] == list(get_task("physionet2012", "los-bands").classes)
    assert notes["static_code_prefix"] == STATIC_CODE_PREFIX and notes["time_anchor"] == "2000-01-01T00:00:00"


def test_subject_splits_are_the_split_files_and_codes_list_every_code(exported):
    _, root, split, _ = exported
    stored = Split.load(root / "splits" / f"{split.name}.json")
    splits = pl.read_parquet(root / "out" / meds.subject_splits_filepath)
    for part, name in (("train", "train"), ("val", "tuning"), ("test", "held_out")):
        assert sorted(splits.filter(pl.col("split") == name).get_column("subject_id").to_list()) == list(getattr(stored, part))
    assert splits.height == len(stored.train) + len(stored.val) + len(stored.test)
    codes = pl.read_parquet(root / "out" / meds.code_metadata_filepath)
    used = set(pl.concat(_shards(root / "out")).get_column("code").unique())
    assert set(codes.get_column("code")) == used and codes.get_column("code").is_unique().all()
    described = dict(codes.select("code", "description").iter_rows())
    assert described["HR"] == "HR (bpm)" and described["STATIC//age"].startswith("age")
    assert codes.get_column("parent_codes").null_count() == codes.height


def test_a_failed_export_leaves_no_folder_and_bad_requests_are_data_errors(tmp_path, monkeypatch):
    data = _tree(tmp_path / "raw")
    with pytest.raises(DataError, match="shards must be 1 to 60"):
        export_meds(data, tmp_path / "out", shards=61)
    real_write = meds_export._write

    def failing(schema, frame, path):
        if "labels" in path.parts:
            raise OSError("disk full")
        real_write(schema, frame, path)

    monkeypatch.setattr(meds_export, "_write", failing)
    with pytest.raises(OSError, match="disk full"):
        export_meds(data, tmp_path / "out", tasks_of("physionet2012"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no OUT, no temporary folder
    monkeypatch.undo()
    export_meds(data, tmp_path / "out")  # no tasks, no split: data and metadata only
    assert not (tmp_path / "out" / "labels").exists() and not (tmp_path / "out" / meds.subject_splits_filepath).exists()
    with pytest.raises(DataError, match="exists and is not empty"):
        export_meds(data, tmp_path / "out")
    assert export_meds(data, tmp_path / "out", shards=2, force=True)["shards"] == 2


def test_the_export_meds_command_writes_and_reports_and_refuses_bad_input(tmp_path):
    write_p12(tmp_path / "raw", per_set=20)
    where = ["--data-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    result = runner.invoke(app, ["export", "meds", "physionet2012", str(tmp_path / "out"), *where, "--shards", "2"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "60 subjects, 180 events + 240 static measurements in 2 shards" in out
    assert "physionet2012-mortality-strats-seed0-split0" in out
    for task in tasks_of("physionet2012"):
        assert f"labels/{task.short}.parquet" in out
    assert (tmp_path / "cache" / "splits" / "physionet2012-mortality-strats-seed0-split0.json").exists()
    metadata = json.loads((tmp_path / "out" / meds.dataset_metadata_filepath).read_text())
    assert len(metadata["dataset_version"]) == 64  # the prepared data's cache key
    # one task, another protocol's split
    result = runner.invoke(app, ["export", "meds", "physionet2012", str(tmp_path / "one"), *where, "--task", "los-days",
                                 "--protocol", "kfold5", "--split", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "one" / "labels").iterdir()) == ["los-days.parquet"]
    assert "physionet2012-los-days-kfold5-seed0-split3" in result.output
    for args, message in (
        (["physionet2012", str(tmp_path / "out")], "exists and is not an empty folder"),
        (["physionet2012", str(tmp_path / "x"), "--task", "nope"], "unknown task 'nope'"),
        (["nope", str(tmp_path / "x")], "unknown dataset or task 'nope'"),
        (["physionet2012", str(tmp_path / "x"), "--protocol", "a2b"], "does not use the 'a2b' protocol"),
        (["physionet2012", str(tmp_path / "x"), "--split", "5"], "splits 0 to 0"),
    ):
        result = runner.invoke(app, ["export", "meds", *args, *where])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
    again = runner.invoke(app, ["export", "meds", "physionet2012", str(tmp_path / "out"), *where, "--force"])
    assert again.exit_code == 0, again.output


@pytest.mark.realdata
@pytest.mark.slow
def test_real_p12_exports_every_event_and_stay(p12, tmp_path):
    task = get_task("physionet2012")
    split = load_or_make_splits(task.view(p12), task, "strats", 0, tmp_path / "splits")[0]
    summary = export_meds(p12, tmp_path / "out", tasks_of("physionet2012"), split)
    assert (summary["events"], summary["subjects"], summary["shards"]) == (5_205_660, 11_988, 2)
    shards = [pq.read_table(p) for p in sorted((tmp_path / "out" / "data").iterdir())]
    for table in shards:
        meds.DataSchema.validate(table)
    assert sum(t.num_rows for t in shards) == summary["rows"] == 5_205_660 + summary["static_measurements"]
    ids = [set(t.column("subject_id").to_pylist()) for t in shards]
    assert len(ids[0] | ids[1]) == 11_988 and not ids[0] & ids[1]
    timed = pl.concat([pl.from_arrow(t) for t in shards]).filter(pl.col("time").is_not_null())
    assert (timed.select(meds_hours(pl.col("time"))).to_series() == p12.events.get_column("time")).all()
    for task in tasks_of("physionet2012"):
        labels = pq.read_table(tmp_path / "out" / "labels" / f"{task.short}.parquet")
        meds.LabelSchema.validate(labels)
        assert labels.num_rows == task.view(p12).labels.get_column("label").drop_nulls().len()
