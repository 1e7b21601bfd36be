"""Long and wide tables (dataset ``table``): the same data read long, wide, in hours, minutes and
timestamps give the same events; every bad input is an error naming file, row and problem, or a
counted skip that reaches the prepare screen."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from hymate.cli import app
from hymate.data import losses, tables
from hymate.data.sources import Source
from hymate.errors import DataError
from hymate.tasks import tables as table_tasks

runner = CliRunner()
ADMIT = dt.datetime(2024, 3, 1, 8, 0)


def long_events(n: int = 30, seed: int = 0) -> pl.DataFrame:
    """n stays with HR, SBP every 2 h over 24 h (a few missing) and a valueless Drug event."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n + 1):
        for h in range(0, 24, 2):
            rows.append((s, float(h), "HR", float(rng.integers(60, 120))))
            if rng.random() > 0.3:
                rows.append((s, h + 0.5, "SBP", float(rng.integers(90, 150))))
        rows.append((s, 3.25, "Drug", None))
    return pl.DataFrame(rows, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}, orient="row")


def labels_for(n: int = 30) -> pl.DataFrame:
    return pl.DataFrame({"stay_id": list(range(1, n + 1)), "prediction_time": [24.0] * n,
                         "boolean_value": [s % 3 == 0 for s in range(1, n + 1)]})  # fmt: skip


def wide(events: pl.DataFrame) -> pl.DataFrame:
    """The wide form of numeric events (a valueless event has no wide form)."""
    return events.drop_nulls("value").pivot(on="variable", index=["stay_id", "time"], values="value").sort("stay_id", "time")


def stamped(frame: pl.DataFrame, column: str = "time") -> pl.DataFrame:
    return frame.with_columns((pl.lit(ADMIT) + pl.duration(microseconds=(pl.col(column) * 3.6e9).cast(pl.Int64)))
                              .dt.strftime("%Y-%m-%d %H:%M:%S").alias(column))  # fmt: skip


def read(folder, **spec) -> tables.EventData:
    if spec:  # table paths relative to the folder
        spec = {k: folder / v if k in ("events", "statics", "labels") else v for k, v in spec.items()}
        tables.write_spec(folder, spec.pop("events"), **spec)
    return tables.read(Source(folder), progress=False)


def test_long_and_wide_csv_and_parquet_read_the_same_events(tmp_path):
    events = long_events()
    (tmp_path / "long").mkdir()
    events.write_csv(tmp_path / "long" / "events.csv")
    (tmp_path / "wide").mkdir()
    wide(events).write_parquet(tmp_path / "wide" / "events.parquet")
    long_data, wide_data = read(tmp_path / "long"), read(tmp_path / "wide")
    assert long_data.report["table"]["format"] == ["long"] and wide_data.report["table"]["format"] == ["wide"]
    numeric = long_data.events.drop_nulls("value")
    assert_frame_equal(numeric, wide_data.events.sort("stay_id", "time", "variable"))
    assert long_data.report["valueless_events"] == 30 and long_data.stays.height == 30
    assert losses.losses(long_data.report) == [] and losses.unclassified_keys(long_data.report) == []


def test_timestamps_and_minutes_equal_hours(tmp_path):
    events = long_events(5)
    hours = tmp_path / "hours"
    hours.mkdir()
    events.write_csv(hours / "events.csv")
    base = read(hours)
    minutes = tmp_path / "minutes"
    minutes.mkdir()
    events.with_columns(pl.col("time") * 60).write_csv(minutes / "events.csv")
    assert_frame_equal(read(minutes, events="events.csv", time_unit="minutes").events, base.events)
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    # The first event of stay 1 is at the admission time; the other stays have their admission 1 h earlier.
    stamped(events).write_csv(stamps / "events.csv")
    pl.DataFrame({"stay_id": [2, 3, 4, 5], "admission_time": ["2024-03-01 07:00"] * 4, "age": [50, 60, 70, 80]}).write_csv(stamps / "statics.csv")
    data = read(stamps, events="events.csv", statics="statics.csv", time_unit="timestamp")
    shifted = base.events.with_columns(pl.when(pl.col("stay_id") > 1).then(pl.col("time") + 1).otherwise(pl.col("time")).alias("time"))
    assert_frame_equal(data.events, shifted)
    assert data.stays.get_column("origin").to_list() == [ADMIT] + [ADMIT - dt.timedelta(hours=1)] * 4
    assert data.statics.get_column("age").to_list() == [None, 50.0, 60.0, 70.0, 80.0]
    # Labels in timestamps land on the same clock as hours.
    labels = stamped(labels_for(5).with_columns(pl.col("prediction_time") - 1), "prediction_time")
    labels.write_csv(stamps / "labels.csv")
    view = table_tasks.label_task(stamps / "labels.csv").view(data)
    assert view.labels.get_column("prediction_time").to_list() == [23.0, 24.0, 24.0, 24.0, 24.0]


def test_a_label_column_takes_its_type_from_the_spec_and_the_task_round_trips(tmp_path):
    long_events().write_csv(tmp_path / "events.csv")
    labels_for().rename({"boolean_value": "label"}).with_columns(pl.col("label").cast(pl.Int64)).write_csv(tmp_path / "labels.csv")
    with pytest.raises(DataError, match="needs its label type"):
        table_tasks.label_task(tmp_path / "labels.csv")
    tables.write_spec(tmp_path, tmp_path / "events.csv", labels=tmp_path / "labels.csv", label_type="binary")
    task = table_tasks.label_task(tmp_path / "labels.csv")
    assert task.label_type == "binary" and task.spec["column"] == "boolean_value"
    again = table_tasks.task_from_spec(json.loads(json.dumps(task.spec)))
    data = read(tmp_path)
    assert_frame_equal(again.view(data).labels, task.view(data).labels)
    assert task.view(data).labels.get_column("label").sum() == 10
    pl.DataFrame({"stay_id": [1, 2, 3], "prediction_time": [5.0] * 3, "label": ["a", "b", "a"]}).write_csv(tmp_path / "kinds.csv")
    multi = table_tasks.label_task(tmp_path / "kinds.csv", label_type="multiclass")
    assert multi.classes == ("a", "b") and multi.view(data).labels.get_column("label").to_list() == [0.0, 1.0, 0.0]


def test_labels_without_events_or_before_the_first_event_are_counted(tmp_path):
    long_events(4).filter(pl.col("time") >= 2).write_csv(tmp_path / "events.csv")  # first events at 2 h
    pl.DataFrame({"stay_id": [1, 2, 9], "prediction_time": [24.0, 1.0, 24.0], "float_value": [1.5, 2.5, 3.5]}).write_csv(tmp_path / "y.csv")
    view = table_tasks.label_task(tmp_path / "y.csv").view(read(tmp_path))
    assert view.labels.get_column("stay_id").to_list() == [1]
    left = {loss.reason: loss.count for loss in losses.losses(view.report)}
    assert left == {"label for a stay with no events in the data (left out)": 1,
                    "prediction time before the stay's first event (nothing to read; left out)": 1}  # fmt: skip


EVENTS_HEADER = "stay_id,time,variable,value\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "events.csv is empty"),
        (EVENTS_HEADER, "header but no rows"),
        ("stay_id,time,variable,value,unit\n1,0,HR,80,bpm\n", "unknown column 'unit'"),
        ("stay_id,variable,value\n1,HR,80\n", "no 'time' column"),
        (EVENTS_HEADER + "1,0,HR,80\nx,1,HR,80\n", r"stay_id that is blank or not an integer, e\.g\. row 3 \(stay_id = 'x'\)"),
        (EVENTS_HEADER + "1,0,HR,80\n1,,HR,80\n", "rows have no time, e.g. row 3"),
        (EVENTS_HEADER + "1,0,HR,80\n1,2024-01-01 10:00,HR,80\n", "mixed time units: 1 time values are a timestamp"),
        (EVENTS_HEADER + "1,0,,80\n", "rows have no variable, e.g. row 2"),
    ],
)
def test_bad_events_are_errors_naming_file_and_row(tmp_path, text, message):
    (tmp_path / "events.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read(tmp_path)


def test_bad_inputs_of_other_kinds_are_errors(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS_HEADER + "1,2024-01-01 10:00,HR,80\n1,3.5,HR,80\n")
    with pytest.raises(DataError, match=r"mixed time units: 1 time values are a number .* row 3"):
        read(tmp_path, events="events.csv", time_unit="timestamp")
    pl.DataFrame({"stay_id": [1.5], "time": [0.0], "HR": [80.0]}).write_parquet(tmp_path / "w.parquet")
    with pytest.raises(DataError, match="column 'stay_id' has type Float64; it must hold integers"):
        read(tmp_path, events="w.parquet")
    pl.DataFrame({"stay_id": [1], "time": [True], "HR": [80.0]}).write_parquet(tmp_path / "w.parquet")
    with pytest.raises(DataError, match="column 'time' has type Boolean"):
        read(tmp_path, events="w.parquet")
    (tmp_path / "events.csv").write_text(EVENTS_HEADER + "1,0,HR,80\n")
    (tmp_path / "statics.csv").write_text("stay_id,sex\n1,F\n")
    with pytest.raises(DataError, match="static column 'sex' holds text, e.g. row 2"):
        read(tmp_path, events="events.csv", statics="statics.csv")
    (tmp_path / "statics.csv").write_text("stay_id,age\n1,50\n1,51\n")
    with pytest.raises(DataError, match=r"stay_id 1 has 2 statics rows \(rows 2, 3\)"):
        read(tmp_path, events="events.csv", statics="statics.csv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stay_id,prediction_time,boolean_value\n1,24,true\n1,24,false\n", r"repeat a \(stay_id, prediction_time\), e.g. .*row 2"),
        ("stay_id,prediction_time,boolean_value\n1,24,maybe\n", r"not true/false or 1/0, e.g. row 2 \(boolean_value = 'maybe'\)"),
        ("stay_id,prediction_time,float_value\n1,24,nan\n", "not a finite number, e.g. row 2"),
        ("stay_id,prediction_time,boolean_value\n1,24,1\n2,2024-01-01 10:00,0\n", "mixed time units"),
        ("stay_id,prediction_time,boolean_value,site\n1,24,1,A\n", "unknown column 'site'"),
        ("stay_id,prediction_time,boolean_value,float_value\n1,24,1,2\n", "2 value columns"),
        ("stay_id,prediction_time,boolean_value\n", "header but no rows"),
    ],
)
def test_bad_labels_are_errors_naming_file_and_row(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        table_tasks.label_task(tmp_path / "labels.csv")


def test_timestamp_labels_on_hour_events_are_an_error(tmp_path):
    long_events(2).write_csv(tmp_path / "events.csv")
    (tmp_path / "labels.csv").write_text("stay_id,prediction_time,boolean_value\n1,2024-01-01 10:00,1\n2,2024-01-01 10:00,0\n")
    with pytest.raises(DataError, match="mixed time units: prediction times are timestamps, the events' time unit is hours"):
        table_tasks.label_task(tmp_path / "labels.csv").view(read(tmp_path))


def test_skipped_values_and_lines_are_counted_and_reach_the_prepare_screen(tmp_path):
    text = EVENTS_HEADER + "1,0,HR,80\n1,1,HR,abc\n1,2,HR,nan\n1,x,HR,80\n1,inf,HR,80\n2,0,HR,70\n1,3,Drug,\n"
    (tmp_path / "events.csv").write_text(text)
    (tmp_path / "statics.csv").write_text("stay_id,age\n1,50\n2,inf\n3,40\n")
    data = read(tmp_path)
    assert data.events.height == 3 and data.statics.get_column("age").to_list() == [50.0, None]
    left = {(loss.kind, loss.reason): (loss.count, loss.example) for loss in losses.losses(data.report)}
    assert left == {
        ("stays", "in the statics table but without events"): (1, "3"),
        ("lines", "time not readable (as hours)"): (1, "events.csv row 5: 'x'"),
        ("lines", "time NaN or infinite"): (1, "events.csv row 6: 'inf'"),
        ("values", "value not a number"): (1, "events.csv row 3: 'HR = abc'"),
        ("values", "value NaN or infinite"): (1, "events.csv row 4: 'HR = nan'"),
        ("values", "static value NaN or infinite"): (1, "statics.csv row 3: 'age = inf'"),
    }
    assert losses.unclassified_keys(data.report) == []
    result = runner.invoke(app, ["prepare", "table", str(tmp_path / "events.csv"), "--statics", str(tmp_path / "statics.csv"),
                                 "--cache-dir", str(tmp_path / "c"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "left out: 1 stays, 2 lines, 3 values" in out and "HR = abc" in out


def test_prepare_errors_are_one_line(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS_HEADER + "1,0,HR,80\n1,2024-01-01,HR,80\n")
    result = runner.invoke(app, ["prepare", "table", str(tmp_path / "events.csv"), "--cache-dir", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 2 and "error:" in result.output and "row 3" in result.output and "Traceback" not in result.output
