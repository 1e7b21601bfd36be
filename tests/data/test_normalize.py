"""Normalisation statistics come from training stays only."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.tasks.registry import get_task
from hymate.tasks.splits import make_splits

MORTALITY = get_task("physionet2012", "mortality")


def _with_scaled_values(data: EventData, ids, factor: float) -> EventData:
    ids = pl.Series(list(ids)).implode()
    events = data.events.with_columns(
        pl.when(pl.col("stay_id").is_in(ids)).then(pl.col("value") * factor).otherwise(pl.col("value")).alias("value")
    )
    statics = data.statics.with_columns(
        pl.when(pl.col("stay_id").is_in(ids)).then(pl.col("age") * factor).otherwise(pl.col("age")).alias("age")
    )
    return EventData(data.name, events, statics, data.labels, data.stays, data.report)


@pytest.mark.realdata
def test_statistics_ignore_validation_and_test_stays(p12):
    (split,) = make_splits(MORTALITY.view(p12), MORTALITY, "strats", 0)
    clean = Normalizer.fit(p12, split.train, 48.0, categorical=("icu_type",))
    poisoned = _with_scaled_values(p12, split.val + split.test, 1000.0)
    after = Normalizer.fit(poisoned, split.train, 48.0, categorical=("icu_type",))
    assert after == clean
    # The same poison reaches the statistics as soon as those stays are in the fitting set,
    # so the equality above is not vacuous.
    leaky = Normalizer.fit(poisoned, split.train + split.val + split.test, 48.0, categorical=("icu_type",))
    assert leaky.value_mean != clean.value_mean and leaky.static_numeric["age"] != clean.static_numeric["age"]


@pytest.mark.realdata
def test_encoded_training_values_are_standardised(p12):
    (split,) = make_splits(MORTALITY.view(p12), MORTALITY, "strats", 0)
    norm = Normalizer.fit(p12, split.train, 48.0, categorical=("icu_type",))
    train = pl.Series(list(split.train)).implode()
    enc = norm.encode_events(p12.events.filter(pl.col("stay_id").is_in(train)))
    per_var = enc.group_by("var_idx").agg(pl.col("z").mean().alias("m"), pl.col("z").std(ddof=0).alias("s"))
    assert np.allclose(per_var.get_column("m").to_numpy(), 0, atol=1e-3)
    constant = {i + 1 for i, (lo, hi) in enumerate(zip(norm.value_lo, norm.value_hi, strict=True)) if lo == hi}
    assert constant == {norm.variables.index("MechVent") + 1}  # always 1: carries information by presence
    for idx, sd in per_var.select("var_idx", "s").iter_rows():
        assert sd == pytest.approx(0.0 if idx in constant else 1.0, abs=1e-3)
    assert enc.get_column("t").min() >= -1 and enc.get_column("t").max() <= 1
    assert norm.static_categorical["icu_type"] == [1, 2, 3, 4]
    assert Normalizer.from_json(norm.to_json()) == norm


def test_outliers_are_clipped_and_unknown_variables_rejected():
    events = pl.DataFrame({
        "stay_id": [1] * 1000 + [2], "time": [1.0] * 1001,
        "variable": ["HR"] * 1000 + ["HR"], "value": list(np.linspace(60, 100, 1000)) + [1e6],
    })  # fmt: skip
    statics = pl.DataFrame({"stay_id": [1, 2], "age": [50.0, None]})
    data = EventData("x", events, statics, pl.DataFrame(schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}),
                     pl.DataFrame({"stay_id": [1, 2], "split_group": ["a", "a"], "n_events": [1000, 1]}))  # fmt: skip
    norm = Normalizer.fit(data, [1], 48.0)
    z = norm.encode_events(events.filter(pl.col("stay_id") == 2)).get_column("z")[0]
    assert z == pytest.approx((norm.value_hi[0] - norm.value_mean[0]) / norm.value_std[0], rel=1e-5)
    assert norm.encode_statics(statics).tolist() == [[0.0, 0.0], [0.0, 1.0]]
    unknown = events.head(1).with_columns(pl.lit("Foo").alias("variable"))
    with pytest.raises(DataError, match="not trained on: \\['Foo'\\]"):
        norm.encode_events(unknown)
    assert norm.encode_events(unknown, unknown="drop").height == 0
    with pytest.raises(DataError, match="NaN"):
        norm.encode_events(events.head(1).with_columns(pl.lit(float("nan")).alias("value")))


def test_rare_and_unseen_codes_read_as_their_prefix_other_token():
    import polars as pl

    from hymate.data.normalize import Normalizer
    from hymate.data.schema import EventData

    codes = ["LAB//K"] * 5 + ["LAB//Mg"] * 2 + ["DX//I10"] * 1 + ["HR"] * 5 + ["SEX"] * 1
    events = pl.DataFrame({"stay_id": [1] * len(codes), "time": [float(i) for i in range(len(codes))], "variable": codes,
                           "value": [1.0] * len(codes)})  # fmt: skip
    stays = pl.DataFrame({"stay_id": [1], "split_group": ["x"], "n_events": [len(codes)]})
    labels = pl.DataFrame({"stay_id": [1], "prediction_time": [20.0], "label": [True]})
    data = EventData("meds", events, pl.DataFrame({"stay_id": [1]}), labels, stays)
    norm = Normalizer.fit(data, [1], 24.0, min_count=3)
    assert norm.variables == ["DX//OTHER", "HR", "LAB//K", "LAB//OTHER", "OTHER"]
    assert (norm.rare_codes, norm.rare_events) == (3, 4)
    new = pl.DataFrame({"stay_id": [2] * 4, "time": [0.0, 1.0, 2.0, 3.0], "variable": ["LAB//Na", "DX//E11", "LAB//K", "RX//x"],
                        "value": [1.0, None, 2.0, 1.0]})  # fmt: skip
    encoded = norm.encode_events(new, unknown="drop")  # RX//x: no RX//OTHER token, so unknown (dropped)
    assert [norm.variables[i - 1] for i in encoded.get_column("var_idx")] == ["LAB//OTHER", "DX//OTHER", "LAB//K"]
    assert Normalizer.fit(data, [1], 24.0).variables == sorted(set(codes))  # min_count 0: off
