"""Sepsis task definitions: online splits (5-fold by stay, hospital A -> B) and the stay-level view."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.tasks.sepsis import load_or_make_online_splits, online_splits, stay_level_data


def p19_like(n_stays: int = 120, seed: int = 0) -> EventData:
    """Hospital A (first half) and B; every 5th stay septic from hour n - 8; some start after hour 1."""
    rng = np.random.default_rng(seed)
    events, labels, stays = [], [], []
    for stay in range(1, n_stays + 1):
        first, n_hours = int(rng.integers(1, 5)), int(rng.integers(10, 90))
        for hour in range(first, first + n_hours):
            events.append((stay, float(hour), "HR", float(rng.normal(80, 10))))
            labels.append((stay, float(hour), stay % 5 == 0 and hour >= first + n_hours - 8))
        stays.append((stay, "A" if stay <= n_stays // 2 else "B", n_hours))
    return EventData(
        "physionet2019",
        pl.DataFrame(events, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}, orient="row"),
        pl.DataFrame({"stay_id": list(range(1, n_stays + 1)), "age": rng.normal(60, 9, n_stays)}),
        pl.DataFrame(labels, schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}, orient="row"),
        pl.DataFrame(stays, schema={"stay_id": pl.Int64, "split_group": pl.String, "n_events": pl.Int64}, orient="row"),
    )  # fmt: skip


def test_five_folds_partition_the_stays_and_keep_each_stay_whole():
    data = p19_like()
    splits = online_splits(data, "kfold5", seed=0)
    assert [s.index for s in splits] == [0, 1, 2, 3, 4]
    everyone = set(data.stay_ids)
    tests = [set(s.test) for s in splits]
    assert set().union(*tests) == everyone and sum(map(len, tests)) == len(everyone)  # each stay tested once
    septic = set(data.labels.filter(pl.col("label")).get_column("stay_id").to_list())
    for s in splits:
        train, val, test = set(s.train), set(s.val), set(s.test)
        assert not (train & val or train & test or val & test) and train | val | test == everyone
        assert len(test & septic) in (4, 5)  # stratified: 24 septic stays over 5 folds
    assert [s.sha256 for s in online_splits(data, "kfold5", seed=0)] == [s.sha256 for s in splits]


def test_a2b_trains_on_hospital_a_and_tests_on_all_of_b(tmp_path):
    data = p19_like()
    (split,) = load_or_make_online_splits(data, "a2b", 0, tmp_path)
    group = dict(data.stays.select("stay_id", "split_group").iter_rows())
    assert {group[i] for i in split.train + split.val} == {"A"} and {group[i] for i in split.test} == {"B"}
    assert len(split.test) == 60 and len(split.train) + len(split.val) == 60
    assert load_or_make_online_splits(data, "a2b", 0, tmp_path)[0].sha256 == split.sha256  # read back, verified
    with pytest.raises(DataError, match="unknown online setting"):
        online_splits(data, "a2c")


def test_stay_level_view_keeps_the_first_60_hours_and_one_label_per_stay():
    data = p19_like()
    view = stay_level_data(data, hours=60)
    assert view.labels.height == view.stays.height == 120
    first = data.labels.group_by("stay_id").agg(pl.col("prediction_time").min())
    assert view.events.get_column("time").min() == 0 and view.events.get_column("time").max() == 59
    n = view.events.group_by("stay_id").len().join(data.stays, on="stay_id")
    assert (n.get_column("len") == n.get_column("n_events").clip(upper_bound=60)).all()
    assert first.height == 120
    labels = dict(view.labels.select("stay_id", "label").iter_rows())
    assert all(labels[i] == (i % 5 == 0) for i in labels)  # any hour positive, even after hour 60
    assert view.stays.get_column("n_events").dtype == pl.Int64
