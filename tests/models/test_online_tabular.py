"""Causal per-hour summary features of the online LightGBM baseline."""

from __future__ import annotations

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.models.online_tabular import HOURLY_STATS, hourly_features
from tests.models.test_hymate_hourly import hourly_data

VARIABLES = ["HR", "Lactate", "MAP", "Temp"]


def test_features_match_a_direct_computation_from_the_events_up_to_each_hour():
    data = hourly_data(seed=2)
    X, rows, names = hourly_features(data, data.stay_ids, VARIABLES)
    assert X.shape == (data.labels.height, len(VARIABLES) * len(HOURLY_STATS) + 2) and names[-1] == "hour"
    assert rows.height == data.labels.height
    col = {n: i for i, n in enumerate(names)}
    for r, (stay, hour, _) in enumerate(rows.iter_rows()):
        assert X[r, col["hour"]] == hour
        for v in VARIABLES:
            seen = data.events.filter((pl.col("stay_id") == stay) & (pl.col("variable") == v) & (pl.col("time") <= hour))
            assert X[r, col[f"{v}:count"]] == seen.height
            if seen.height == 0:
                assert np.isnan(X[r, col[f"{v}:last"]]) and np.isnan(X[r, col[f"{v}:mean"]])
                continue
            values = seen.get_column("value").to_numpy()
            np.testing.assert_allclose(
                X[r, [col[f"{v}:{s}"] for s in ("last", "since_last", "mean", "min", "max")]],
                [values[-1], hour - seen.get_column("time").max(), values.mean(), values.min(), values.max()],
                rtol=1e-5,
            )


def test_features_at_hour_h_ignore_data_after_h():
    data = hourly_data(seed=3)
    h = 5.0
    late = pl.col("time") > h
    changed = EventData(data.name, data.events.with_columns(pl.when(late).then(pl.col("value") * 9).otherwise(pl.col("value"))
                        .alias("value")), data.statics, data.labels, data.stays)  # fmt: skip
    X0, rows, _ = hourly_features(data, data.stay_ids, VARIABLES)
    X1, _, _ = hourly_features(changed, data.stay_ids, VARIABLES)
    early = rows.get_column("hour").to_numpy() <= h
    np.testing.assert_array_equal(X0[early], X1[early])
    assert not np.array_equal(np.nan_to_num(X0[~early]), np.nan_to_num(X1[~early]))
