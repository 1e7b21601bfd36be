"""Causal per-prediction-time features (`RunningSpec`) of the tabular models on tasks with many
predictions per stay."""

from __future__ import annotations

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.models.running_features import RUNNING_STATS, RunningSpec
from tests.models.test_hymate_hourly import hourly_data

VARIABLES = ["HR", "Lactate", "MAP", "Temp"]


def test_features_match_a_direct_computation_from_the_events_up_to_each_prediction_time():
    data = hourly_data(seed=2)
    spec = RunningSpec.fit(data, data.stay_ids)
    assert spec.variables == VARIABLES and spec.statics == ["age"]
    X, rows, dropped = spec.transform(data, data.stay_ids)
    names = spec.feature_names
    assert X.shape == (data.labels.height, len(VARIABLES) * len(RUNNING_STATS) + 2) and names[-1] == "prediction_time"
    assert X.dtype == np.float32 and dropped == {"unknown_events": 0}
    assert rows.columns == ["stay_id", "prediction_time", "label"] and rows.height == data.labels.height
    assert rows.equals(data.labels.sort("stay_id", "prediction_time"))  # every label row, with its label
    col = {n: i for i, n in enumerate(names)}
    ages = dict(data.statics.iter_rows())
    for r, (stay, hour, _) in enumerate(rows.iter_rows()):
        assert X[r, col["prediction_time"]] == hour
        np.testing.assert_allclose(X[r, col["age"]], ages[stay], rtol=1e-6)
        for v in VARIABLES:
            seen = data.events.filter((pl.col("stay_id") == stay) & (pl.col("variable") == v) & (pl.col("time") <= hour))
            assert X[r, col[f"{v}:count"]] == seen.height
            if seen.height == 0:
                assert np.isnan(X[r, [col[f"{v}:{s}"] for s in RUNNING_STATS if s != "count"]]).all()
                continue
            values = seen.get_column("value").to_numpy()
            np.testing.assert_allclose(
                X[r, [col[f"{v}:{s}"] for s in ("last", "since_last", "mean", "min", "max")]],
                [values[-1], hour - seen.get_column("time").max(), values.mean(), values.min(), values.max()],
                rtol=1e-5,
            )


def test_features_at_time_t_ignore_data_after_t():
    data = hourly_data(seed=3)
    h = 5.0
    late = pl.col("time") > h
    changed = EventData(data.name, pl.concat([
        data.events.with_columns(pl.when(late).then(pl.col("value") * 9).otherwise(pl.col("value")).alias("value")),
        data.events.filter(late).with_columns(pl.lit("Lactate").alias("variable")),  # and more events after h
    ]).sort("stay_id", "time", "variable"), data.statics, data.labels, data.stays)  # fmt: skip
    spec = RunningSpec.fit(data, data.stay_ids)
    X0, rows, _ = spec.transform(data, data.stay_ids)
    X1, rows1, _ = spec.transform(changed, data.stay_ids)
    assert rows.equals(rows1)
    early = rows.get_column("prediction_time").to_numpy() <= h
    np.testing.assert_array_equal(X0[early], X1[early])
    assert not np.array_equal(np.nan_to_num(X0[~early]), np.nan_to_num(X1[~early]))


def test_vocabulary_comes_from_the_training_stays_and_unknown_events_are_counted():
    data = hourly_data(seed=4)
    only_b = data.events.filter(pl.col("stay_id") >= 4).with_columns(pl.lit("EtCO2").alias("variable"))
    data = EventData(data.name, pl.concat([data.events, only_b]).sort("stay_id", "time", "variable"), data.statics,
                     data.labels, data.stays)  # fmt: skip
    spec = RunningSpec.fit(data, [1, 2, 3])
    assert "EtCO2" not in spec.variables
    X, rows, dropped = spec.transform(data, [5, 4])
    assert dropped == {"unknown_events": only_b.filter(pl.col("stay_id") <= 5).height}  # of the stays asked for
    assert not any(n.startswith("EtCO2") for n in spec.feature_names) and X.shape[1] == len(spec.feature_names)
    assert rows.get_column("stay_id").unique().sort().to_list() == [4, 5]
    # The features of a stay do not depend on which other stays are transformed with it.
    alone, rows4, _ = spec.transform(data, [4])
    np.testing.assert_array_equal(alone, X[rows.get_column("stay_id").to_numpy() == 4])
