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
