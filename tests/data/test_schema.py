"""The event model and its one-to-one map onto MEDS."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from hymate.data import physionet2012
from hymate.data.schema import MEDS_ANCHOR, EventData
from hymate.data.sources import Source
from hymate.errors import DataError


def test_meds_view_maps_every_event_and_static(synthetic_p12):
    data = physionet2012.read(Source(synthetic_p12), progress=False)
    meds, labels = data.to_meds()
    assert meds.columns == ["subject_id", "time", "code", "numeric_value"]
    assert meds.schema["time"] == pl.Datetime("us") and meds.schema["numeric_value"] == pl.Float32
    non_null_statics = sum(data.statics.drop("stay_id").null_count().row(0))
    n_statics = data.statics.height * (data.statics.width - 1) - non_null_statics
    assert meds.height == data.events.height + n_statics
    assert meds.filter(pl.col("time").is_null()).get_column("code").str.starts_with("STATIC//").all()
    first = data.events.row(0, named=True)
    row = meds.filter(pl.col("time").is_not_null()).row(0, named=True)
    assert row["subject_id"] == first["stay_id"] and row["code"] == first["variable"]
    assert row["time"] == MEDS_ANCHOR + dt.timedelta(hours=first["time"])
    assert labels.columns == ["subject_id", "prediction_time", "boolean_value"]
    assert labels.get_column("boolean_value").to_list() == data.labels.get_column("label").to_list()
    assert (labels.get_column("prediction_time") == MEDS_ANCHOR + dt.timedelta(hours=48)).all()


def test_event_model_rejects_wrong_columns():
    events = pl.DataFrame({"stay_id": [1], "time": [0.5], "variable": ["HR"]})
    with pytest.raises(DataError, match="events table lacks columns \\['value'\\]"):
        EventData("x", events, pl.DataFrame({"stay_id": [1]}), pl.DataFrame(), pl.DataFrame())


def test_save_load_round_trip(tmp_path, synthetic_p12):
    data = physionet2012.read(Source(synthetic_p12), progress=False)
    data.save(tmp_path / "d")
    back = EventData.load(tmp_path / "d")
    assert back.events.equals(data.events) and back.report == data.report and back.name == data.name


def test_a_task_view_with_numeric_labels_maps_to_the_meds_float_value(synthetic_p12):
    from hymate.tasks.registry import get_task

    data = physionet2012.read(Source(synthetic_p12), progress=False)
    assert data.labels.schema["label"] == pl.Boolean  # the reader's own outcome: in-hospital death
    view = get_task("physionet2012", "los-days").view(data)
    _, labels = view.to_meds()
    assert labels.columns == ["subject_id", "prediction_time", "float_value"]
    assert labels.get_column("float_value").to_list() == [7.0] * data.stays.height  # Length_of_stay in the Outcomes
    assert labels.get_column("subject_id").to_list() == view.labels.get_column("stay_id").to_list()


def test_event_model_rejects_a_label_column_that_is_not_a_number():
    events = pl.DataFrame({"stay_id": [1], "time": [0.5], "variable": ["HR"], "value": [80.0]})
    stays = pl.DataFrame({"stay_id": [1], "split_group": ["a"], "n_events": [1]})
    labels = pl.DataFrame({"stay_id": [1], "prediction_time": [48.0]})
    with pytest.raises(DataError, match="labels table lacks the column 'label'"):
        EventData("x", events, pl.DataFrame({"stay_id": [1]}), labels, stays)
    with pytest.raises(DataError, match="label must be boolean or numeric, got String"):
        EventData("x", events, pl.DataFrame({"stay_id": [1]}), labels.with_columns(label=pl.lit("yes")), stays)
    for value in (True, 2, 0.5):  # a reader's outcome, a class index, a value
        EventData("x", events, pl.DataFrame({"stay_id": [1]}), labels.with_columns(label=pl.lit(value)), stays)
