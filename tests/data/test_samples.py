"""`PredictionDataset`: the input rule (a prediction at t reads the events with time <= t, and with a
look-back only those after t - lookback), one sample per stay or per prediction time, the event cap,
and the padded `PredictionBatch`; all against counts worked out by hand on a tiny view."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, at_last_prediction, collate_samples, prefix_counts
from hymate.data.schema import EventData
from hymate.errors import DataError

WINDOW = 24.0
# (stay, time, variable, value), sorted by (stay, time, variable) as EventData requires.
EVENTS = [
    (1, 0.5, "HR", 80.0),
    (1, 1.0, "HR", 85.0),
    (1, 1.0, "Temp", 37.0),
    (1, 2.5, "HR", 90.0),
    (1, 4.0, "Na", 140.0),
    (1, 5.0, "Temp", 38.0),  # at stay 1's last prediction time: read by it
    (1, 6.0, "HR", 120.0),  # after it: read by nothing
    (2, 0.0, "HR", 60.0),
    (2, 2.0, "Temp", 36.5),
    (2, 7.0, "Na", 135.0),  # after stay 2's last prediction time
    (3, 1.5, "HR", 100.0),
]
# (stay, prediction time, label)
LABELS = [(1, 1.0, 0.0), (1, 3.0, 0.0), (1, 5.0, 1.0), (2, 0.0, 0.0), (2, 2.0, None), (2, 3.0, 1.0),
          (3, 0.5, 0.0), (3, 2.0, 1.0)]  # fmt: skip
# By hand: the events of each stay with time <= each prediction time.
PREFIX = {1: [3, 4, 6], 2: [1, 2, 2], 3: [0, 1]}
LAST = {1: 5.0, 2: 3.0, 3: 2.0}


def view(events=EVENTS, labels=LABELS) -> EventData:
    ev = pl.DataFrame(events, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String,
                                      "value": pl.Float64}, orient="row").sort("stay_id", "time", "variable")  # fmt: skip
    lab = pl.DataFrame(labels, schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Float64},
                       orient="row")  # fmt: skip
    ids = sorted({row[0] for row in labels} | {row[0] for row in events})
    stays = pl.DataFrame({"stay_id": ids, "split_group": ["a"] * len(ids)}).join(
        ev.group_by("stay_id").len("n_events").with_columns(pl.col("n_events").cast(pl.Int64)), on="stay_id", how="left"
    ).with_columns(pl.col("n_events").fill_null(0))  # fmt: skip
    statics = pl.DataFrame({"stay_id": ids, "age": [50.0 + 10 * i for i in range(len(ids))]})
    return EventData("synthetic", ev, statics, lab, stays)


@pytest.fixture
def norm() -> Normalizer:
    return Normalizer.fit(view(), [1, 2, 3], WINDOW)


def events_of(stay: int, upto: float, after: float = -np.inf, events=EVENTS) -> list[tuple]:
    return [e for e in events if e[0] == stay and after < e[1] <= upto]


def test_a_sample_is_a_stay_with_all_its_prediction_times_and_hand_counted_prefixes(norm):
    ds = PredictionDataset(view(), [2, 1, 3], norm)
    assert len(ds) == 3 and ds.stay_ids.tolist() == [2, 1, 3]  # in the order asked for
    assert ds.n_times.tolist() == [3, 3, 2] and ds.row_stay_ids.tolist() == [2, 2, 2, 1, 1, 1, 3, 3]
    for i, stay in enumerate([2, 1, 3]):
        item = ds[i]
        times = [t for s, t, _ in LABELS if s == stay]
        assert item["pred_times"].tolist() == times
        assert item["prefix"].tolist() == PREFIX[stay]
        assert item["prefix"].tolist() == [len(events_of(stay, t)) for t in times]
        # The sample holds the stay's events up to its last prediction time, nothing later.
        mine = events_of(stay, LAST[stay])
        assert len(item["times"]) == len(mine) == max(PREFIX[stay]) and ds.lengths[i] == len(mine)
        np.testing.assert_allclose(item["times"], norm.scale_time(np.array([e[1] for e in mine])), rtol=1e-6)
        assert [norm.variables[v - 1] for v in item["variables"]] == [e[2] for e in mine]
        for (_, _, var, value), z in zip(mine, item["values"], strict=True):
            k = norm.variables.index(var)
            lo, hi = norm.value_lo[k], norm.value_hi[k]
            assert z == pytest.approx((min(max(value, lo), hi) - norm.value_mean[k]) / norm.value_std[k], abs=1e-5)
        labels = [np.nan if y is None else y for s, _, y in LABELS if s == stay]
        np.testing.assert_array_equal(item["labels"], np.array(labels, dtype=np.float32))
        assert item["label"] == labels[-1] and item["stay_id"] == stay
        np.testing.assert_allclose(item["query_times"], norm.scale_time(np.array(times)), rtol=1e-6)
        assert item["statics"].shape == (len(norm.static_names),)
    # A prediction time before the stay's first event reads nothing (prefix 0) but is still a row.
    assert ds[2]["prefix"][0] == 0


def test_events_after_the_last_prediction_time_change_nothing_in_the_item(norm):
    before = PredictionDataset(view(), [1, 2, 3], norm)
    later = [(s, t, v, x * 3 + 1 if t > LAST[s] else x) for s, t, v, x in EVENTS]  # other values after the last time
    later += [(1, 5.5, "Na", 150.0), (1, 9.0, "HR", 70.0), (2, 3.5, "Temp", 39.0), (3, 2.0001, "Na", 1.0)]  # more events
    after = PredictionDataset(view(later), [1, 2, 3], norm)
    for i in range(3):
        a, b = before[i], after[i]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # ... while an event at a prediction time (<= t, inclusive) or earlier does count.
    at = PredictionDataset(view([*EVENTS, (3, 2.0, "Temp", 37.0)]), [3], norm)[0]
    assert at["prefix"].tolist() == [0, 2] and len(at["times"]) == 2
    moved = PredictionDataset(view([e if e != (1, 2.5, "HR", 90.0) else (1, 2.5, "HR", 95.0) for e in EVENTS]), [1], norm)
    assert not np.array_equal(moved[0]["values"], before[0]["values"])


def test_prefix_counts_on_its_own():
    event_pos = np.array([0, 0, 0, 1, 1, 2])
    event_times = np.array([-1.0, 0.5, 2.0, 0.0, 0.0, 10.0])
    hour_pos = np.array([0, 0, 0, 1, 1, 2, 2])
    hours = np.array([-2.0, 0.5, 1.9, -0.1, 0.0, 9.99, 11.0])
    assert prefix_counts(event_pos, event_times, hour_pos, hours).tolist() == [0, 2, 2, 0, 2, 0, 1]
    # A sample with no events before a later one still counts from its own start.
    assert prefix_counts(np.array([1, 1]), np.array([0.0, 1.0]), np.array([0, 1]), np.array([5.0, 0.5])).tolist() == [0, 1]
    assert prefix_counts(event_pos, event_times, np.zeros(0, np.int64), np.zeros(0)).tolist() == []


def test_with_a_lookback_each_prediction_time_is_a_sample_reading_only_its_window(norm):
    lookback = 2.0
    ds = PredictionDataset(view(), [1, 2], norm, lookback_hours=lookback)
    rows = [(s, t, y) for s, t, y in LABELS if s in (1, 2)]
    assert len(ds) == len(rows) and (ds.n_times == 1).all()
    assert ds.stay_ids.tolist() == [s for s, _, _ in rows] and ds.row_stay_ids.tolist() == ds.stay_ids.tolist()
    # By hand, events in (t - 2, t]: stay 1 at 1, 3, 5 -> {0.5, 1, 1}, {2.5}, {4, 5}; stay 2 at 0, 2, 3 -> {0}, {2}, {2}
    assert ds.lengths.tolist() == [3, 1, 2, 1, 1, 1]
    for i, (stay, t, y) in enumerate(rows):
        item = ds[i]
        mine = events_of(stay, t, after=t - lookback)
        assert item["pred_times"].tolist() == [t] and item["stay_id"] == stay
        assert item["prefix"].tolist() == [len(mine)] == [len(item["times"])]  # reads all of its sample
        np.testing.assert_allclose(item["times"], norm.scale_time(np.array([e[1] for e in mine])), rtol=1e-6)
        assert [norm.variables[v - 1] for v in item["variables"]] == [e[2] for e in mine]
        assert np.array_equal(item["labels"], [np.nan if y is None else y], equal_nan=True)
    # The event at exactly t - lookback is outside the window (stay 1 at t = 3 does not read 1.0).
    assert ds[1]["times"].tolist() == pytest.approx(norm.scale_time(np.array([2.5])).tolist())
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch.stay_level and batch.times.shape == (len(ds), 1)
    # A window with no event at all cannot be a sample: stay 3 at t = 0.5 reads (-1.5, 0.5].
    with pytest.raises(DataError, match="no events in their window"):
        PredictionDataset(view(), [3], norm, lookback_hours=lookback)
    with pytest.raises(DataError, match="lookback_hours"):
        PredictionDataset(view(), [1], norm, lookback_hours=0.0)


def test_max_events_is_refused_for_samples_with_several_prediction_times(norm):
    with pytest.raises(DataError, match="max_events"):
        PredictionDataset(view(), [1, 2], norm, max_events=3)
    with pytest.raises(DataError, match="max_events"):
        PredictionDataset(view(), [1], norm, max_events=0)
    # With one prediction time per sample it keeps the most recent events (and the prefix follows).
    one = [(s, t, y) for s, t, y in LABELS if (s, t) in ((1, 5.0), (2, 3.0))]
    ds = PredictionDataset(view(labels=one), [1, 2], norm, max_events=2)
    assert ds.lengths.tolist() == [2, 2]
    np.testing.assert_allclose(ds[0]["times"], norm.scale_time(np.array([4.0, 5.0])), rtol=1e-6)
    assert ds[0]["prefix"].tolist() == [2] and ds[1]["prefix"].tolist() == [2]
    ds = PredictionDataset(view(), [1, 2], norm, lookback_hours=2.0, max_events=1)  # a look-back: one time each
    assert ds.lengths.tolist() == [1, 1, 1, 1, 1, 1] and ds[0]["prefix"].tolist() == [1]
    np.testing.assert_allclose(ds[0]["times"], norm.scale_time(np.array([1.0])), rtol=1e-6)


def test_collate_pads_times_and_labels_and_points_padded_prefixes_at_the_whole_sample(norm):
    ds = PredictionDataset(view(), [1, 3], norm)
    batch = collate_samples([ds[0], ds[1]])
    assert batch.events.lengths.tolist() == [6, 1] and batch.events.stay_ids.tolist() == [1, 3]
    assert batch.time_mask.tolist() == [[True, True, True], [True, True, False]] and len(batch) == 5
    assert batch.prefix.tolist() == [[3, 4, 6], [0, 1, 1]]  # padding: the sample's length (non-decreasing)
    assert batch.times.dtype == torch.float64 and batch.times.tolist() == [[1.0, 3.0, 5.0], [0.5, 2.0, 0.0]]
    assert batch.labels[0].tolist() == [0.0, 0.0, 1.0] and batch.labels[1, :2].tolist() == [0.0, 1.0]
    assert torch.isnan(batch.labels[1, 2]) and batch.query_times[1, 2] == 0
    assert batch.events.labels.tolist() == [1.0, 1.0]  # the label at each sample's last prediction time
    assert not batch.stay_level


def test_refused_inputs(norm):
    with pytest.raises(DataError, match="not in dataset"):
        PredictionDataset(view(), [1, 99], norm)
    with pytest.raises(DataError, match="no stays"):
        PredictionDataset(view(), [], norm)
    with pytest.raises(DataError, match="not unique"):
        PredictionDataset(view(), [1, 1], norm)
    unlabelled = view(labels=[row for row in LABELS if row[0] != 2])
    with pytest.raises(DataError, match="no prediction time"):
        PredictionDataset(unlabelled, [1, 2], norm)
    # A variable the normaliser never saw: an error by default, dropped and counted on request.
    extra = view([*EVENTS, (1, 4.5, "EtCO2", 30.0), (2, 9.0, "EtCO2", 31.0)])
    with pytest.raises(DataError):
        PredictionDataset(extra, [1, 2], norm)
    dropped = PredictionDataset(extra, [1, 2], norm, unknown_variables="drop")
    assert dropped.dropped_unknown == 1  # stay 2's is after its last prediction time: never read
    assert dropped[0]["prefix"].tolist() == PREFIX[1]


def test_at_last_prediction_keeps_one_row_per_stay_and_cuts_its_events():
    cut = at_last_prediction(view())
    assert cut.labels.sort("stay_id").rows() == [(1, 5.0, 1.0), (2, 3.0, 1.0), (3, 2.0, 1.0)]
    assert cut.events.sort("stay_id", "time", "variable").rows() == sorted(
        e for e in EVENTS if e[1] <= LAST[e[0]])  # fmt: skip
    windowed = at_last_prediction(view(), lookback_hours=2.0)
    assert sorted(windowed.events.rows()) == sorted(e for e in EVENTS if LAST[e[0]] - 2.0 < e[1] <= LAST[e[0]])
