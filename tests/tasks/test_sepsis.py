"""Sepsis tasks (PhysioNet 2019): the online view and its protocols (5-fold by stay, hospital
A -> B), and the stay-level view (first 60 h, one label per stay at its last event)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.tasks.physionet2019 import online, stay_level
from hymate.tasks.registry import get_task
from hymate.tasks.splits import load_or_make_splits, make_splits

ONLINE = get_task("physionet2019", "sepsis-online")
STAY = get_task("physionet2019", "sepsis-stay")


def p19_like(n_stays: int = 120, seed: int = 0) -> EventData:
    """Hospital A (first half) and B; every 5th stay septic from hour n - 8; some start after hour 1.

    One HR event and one label row per hour first .. first + n_hours - 1; the stays table has the
    reader's columns (split_group, n_events, n_hours, first_hour)."""
    rng = np.random.default_rng(seed)
    events, labels, stays = [], [], []
    for stay in range(1, n_stays + 1):
        first, n_hours = int(rng.integers(1, 5)), int(rng.integers(10, 90))
        for hour in range(first, first + n_hours):
            events.append((stay, float(hour), "HR", float(rng.normal(80, 10))))
            labels.append((stay, float(hour), stay % 5 == 0 and hour >= first + n_hours - 8))
        stays.append((stay, "A" if stay <= n_stays // 2 else "B", n_hours, n_hours, first))
    return EventData(
        "physionet2019",
        pl.DataFrame(events, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}, orient="row"),
        pl.DataFrame({"stay_id": list(range(1, n_stays + 1)), "age": rng.normal(60, 9, n_stays)}),
        pl.DataFrame(labels, schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}, orient="row"),
        pl.DataFrame(stays, schema={"stay_id": pl.Int64, "split_group": pl.String, "n_events": pl.Int64, "n_hours": pl.Int64,
                                    "first_hour": pl.Int64}, orient="row"),
    )  # fmt: skip


def test_five_folds_partition_the_stays_and_keep_each_stay_whole():
    data = p19_like()
    view = ONLINE.view(data)
    splits = make_splits(view, ONLINE, "kfold5", seed=0)
    assert [s.index for s in splits] == [0, 1, 2, 3, 4] and {s.task for s in splits} == {ONLINE.name}
    everyone = set(data.stay_ids)
    tests = [set(s.test) for s in splits]
    assert set().union(*tests) == everyone and sum(map(len, tests)) == len(everyone)  # each stay tested once
    septic = set(data.labels.filter(pl.col("label")).get_column("stay_id").to_list())
    for s in splits:
        train, val, test = set(s.train), set(s.val), set(s.test)
        assert not (train & val or train & test or val & test) and train | val | test == everyone
        assert len(test & septic) in (4, 5)  # stratified: 24 septic stays over 5 folds
    assert [s.sha256 for s in make_splits(view, ONLINE, "kfold5", seed=0)] == [s.sha256 for s in splits]


def test_a2b_trains_on_hospital_a_and_tests_on_all_of_b(tmp_path):
    view = ONLINE.view(p19_like())
    (split,) = load_or_make_splits(view, ONLINE, "a2b", 0, tmp_path)
    group = dict(view.stays.select("stay_id", "split_group").iter_rows())
    assert {group[i] for i in split.train + split.val} == {"A"} and {group[i] for i in split.test} == {"B"}
    assert len(split.test) == 60 and len(split.train) + len(split.val) == 60
    assert load_or_make_splits(view, ONLINE, "a2b", 0, tmp_path)[0].sha256 == split.sha256  # read back, verified
    with pytest.raises(DataError, match="unknown protocol 'a2c'"):
        make_splits(view, ONLINE, "a2c")
    with pytest.raises(DataError, match="does not use the splits5 protocol"):
        make_splits(view, ONLINE, "splits5")


def test_online_view_is_every_labelled_hour_and_the_hours_of_unlabelled_stays():
    data = p19_like(n_stays=20)
    unlabelled = [3, 7]  # new stays to score: no label rows
    data = EventData(data.name, data.events, data.statics,
                     data.labels.filter(~pl.col("stay_id").is_in(unlabelled)), data.stays)  # fmt: skip
    view = ONLINE.view(data)
    assert view.labels.schema["label"] == pl.Float64 and view.labels.height == data.events.height
    for stay, first, n in data.stays.select("stay_id", "first_hour", "n_hours").iter_rows():
        rows = view.labels.filter(pl.col("stay_id") == stay)
        assert rows.get_column("prediction_time").to_list() == [float(h) for h in range(first, first + n)]
        assert rows.get_column("label").null_count() == (n if stay in unlabelled else 0)
    assert view.report["task"]["name"] == ONLINE.name
    assert online(data).labels.height == view.labels.height


def test_stays_without_events_leave_the_online_view_and_are_counted():
    data = p19_like(n_stays=20)
    stays = data.stays.with_columns(
        pl.when(pl.col("stay_id") == 4).then(0).otherwise(pl.col("n_events")).alias("n_events")
    )
    data = EventData(data.name, data.events.filter(pl.col("stay_id") != 4), data.statics, data.labels, stays)
    view = ONLINE.view(data)
    assert 4 not in view.stay_ids and 4 not in view.labels.get_column("stay_id").to_list()
    assert view.report["task"]["excluded_stays"]["no events"] == {"count": 1, "ids": [4]}


def test_stay_level_view_keeps_the_first_60_hours_and_one_label_per_stay():
    data = p19_like()
    view = STAY.view(data)
    assert view.labels.height == view.stays.height == 120
    assert view.events.get_column("time").min() == 0 and view.events.get_column("time").max() == 59
    n = view.events.group_by("stay_id").len().join(data.stays, on="stay_id")
    assert (n.get_column("len") == n.get_column("n_events").clip(upper_bound=60)).all()
    labels = dict(view.labels.select("stay_id", "label").iter_rows())
    assert all(labels[i] == float(i % 5 == 0) for i in labels)  # any hour positive, even after hour 60
    assert view.stays.get_column("n_events").dtype == pl.Int64
    # The prediction is made where the window or the record ends: at the stay's last event in the window.
    last = view.events.group_by("stay_id").agg(pl.col("time").max()).sort("stay_id")
    assert view.labels.get_column("prediction_time").to_list() == last.get_column("time").to_list()
    hours = dict(data.stays.select("stay_id", "n_hours").iter_rows())
    assert all(t == min(hours[i], 60) - 1 for i, t in view.labels.select("stay_id", "prediction_time").iter_rows())
    assert stay_level(data, hours=60).labels.sort("stay_id").equals(view.labels)
