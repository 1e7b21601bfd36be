"""Padded, time-sorted triplet batches; event cap keeps the most recent; bucketing cuts padding; and
the one sample type (`PredictionDataset`) gives the same items on a one-prediction-per-stay task."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from hymate.data import physionet2012
from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, collate_samples
from hymate.data.sources import Source
from hymate.errors import DataError
from hymate.tasks.registry import get_task
from tests.conftest import record_text, write_p12

FIRST = 200000


@pytest.fixture
def small(tmp_path):
    # Lines deliberately out of time order in the file: the dataset must sort them.
    lines = ["03:00,HR,90", "01:00,Temp,37", "00:30,HR,80", "02:00,Na,140", "01:00,HR,85"]
    write_p12(tmp_path, overrides={FIRST: record_text(FIRST, lines)})
    data = physionet2012.read(Source(tmp_path), progress=False)
    norm = Normalizer.fit(data, data.stay_ids, 48.0, categorical=("icu_type",))
    return data, norm


def test_items_are_time_sorted_triplets_with_statics_and_labels(small):
    data, norm = small
    ds = EventSequenceDataset(data, [FIRST, FIRST + 1], norm)
    item = ds[0]
    hours = (item["times"] + 1) / 2 * 48
    assert np.allclose(hours, [0.5, 1.0, 1.0, 2.0, 3.0])
    names = [norm.variables[v - 1] for v in item["variables"]]
    assert names == ["HR", "HR", "Temp", "Na", "HR"]  # ties at 01:00 broken by vocabulary index
    hr = norm.variables.index("HR")
    expected = (np.array([80, 85, 90]) - norm.value_mean[hr]) / norm.value_std[hr]
    assert np.allclose(item["values"][[0, 1, 4]], np.clip(expected, *(
        (np.array([norm.value_lo[hr], norm.value_hi[hr]]) - norm.value_mean[hr]) / norm.value_std[hr])), atol=1e-5)
    assert item["label"] == 1.0 and item["stay_id"] == FIRST
    assert item["statics"].shape == (len(norm.static_names),)


def test_collate_pads_on_the_right_with_a_prefix_mask(small):
    data, norm = small
    ds = EventSequenceDataset(data, [FIRST, FIRST + 1], norm)
    batch = collate([ds[0], ds[1]])
    assert batch.times.shape == (2, 5) and batch.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch.variables[1, 3:].tolist() == [0, 0] and batch.values[1, 3:].tolist() == [0.0, 0.0]
    assert batch.lengths.tolist() == [5, 3] and batch.stay_ids.tolist() == [FIRST, FIRST + 1]
    assert batch.labels.dtype == torch.float32 and batch.statics.shape[0] == 2


def test_event_cap_keeps_the_most_recent_events(small):
    data, norm = small
    ds = EventSequenceDataset(data, [FIRST], norm, max_events=2)
    hours = (ds[0]["times"] + 1) / 2 * 48
    assert np.allclose(hours, [2.0, 3.0]) and ds.lengths.tolist() == [2]
    with pytest.raises(DataError, match="max_events"):
        EventSequenceDataset(data, [FIRST], norm, max_events=0)


def test_dataset_rejects_unknown_stays(small):
    data, norm = small
    with pytest.raises(DataError, match="not in dataset"):
        EventSequenceDataset(data, [FIRST, 1], norm)
    with pytest.raises(DataError, match="no stays"):
        EventSequenceDataset(data, [], norm)


KEYS = ("times", "variables", "values", "statics", "label", "stay_id")


def assert_same_items(old: EventSequenceDataset, new: PredictionDataset) -> None:
    assert len(old) == len(new) and new.stay_ids.tolist() == old.stay_ids.tolist()
    np.testing.assert_array_equal(new.lengths, old.lengths)
    for i in range(len(old)):
        a, b = old[i], new[i]
        for key in KEYS:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{key} of item {i}")
            assert np.asarray(b[key]).dtype == np.asarray(a[key]).dtype, key
        assert b["prefix"].tolist() == [len(b["times"])] and b["pred_times"].tolist() == [48.0]


@pytest.mark.parametrize("max_events", [None, 2])
def test_one_prediction_per_stay_samples_equal_the_stay_level_items(small, max_events):
    """A task with one prediction per stay at the end of the window: each sample is the stay's
    item as the stay-level dataset gives it (same triplets, statics and label), and a batch of them
    is the plain stay-level forward's."""
    data, norm = small
    view = get_task("physionet2012", "mortality").view(data)
    ids = [FIRST + 2, FIRST, FIRST + 1]
    old = EventSequenceDataset(data, ids, norm, max_events=max_events)
    new = PredictionDataset(view, ids, norm, max_events=max_events)
    assert_same_items(old, new)
    batch = collate_samples([new[i] for i in range(len(new))])
    plain = collate([old[i] for i in range(len(old))])
    assert batch.stay_level and batch.times.shape == (3, 1)
    for key in ("times", "variables", "values", "mask", "statics", "labels", "stay_ids"):
        assert torch.equal(getattr(batch.events, key), getattr(plain, key)), key


def test_bucketing_is_reproducible_complete_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(200, 900, size=2000)
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(2000))
    assert batches == list(LengthBucketSampler(lengths, batch_size=16, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch

    def padding(bs):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in map(np.array, bs)) / lengths.sum()

    random_batches = [list(range(i, min(i + 16, 2000))) for i in range(0, 2000, 16)]
    assert padding(batches) < 0.05 < 0.5 < padding(random_batches)
    for n, drop_last in [(2000, True), (1999, True), (1999, False)]:
        s = LengthBucketSampler(lengths[:n], 16, drop_last=drop_last)
        assert len(s) == len(list(s))


@pytest.mark.realdata
def test_real_loader_end_to_end(p12):
    ids = p12.stays.filter(pl.col("split_group") == "b").get_column("stay_id").to_list()[:64]
    norm = Normalizer.fit(p12, ids, 48.0, categorical=("icu_type",))
    ds = EventSequenceDataset(p12, ids, norm, max_events=880)
    loader = DataLoader(ds, batch_sampler=LengthBucketSampler(ds.lengths, 16, seed=0), collate_fn=collate)
    length_of = dict(zip(ds.stay_ids.tolist(), ds.lengths.tolist(), strict=True))
    seen = 0
    for batch in loader:
        seen += len(batch)
        assert batch.lengths.tolist() == [length_of[i] for i in batch.stay_ids.tolist()]
        t = batch.times.masked_fill(~batch.mask, float("inf"))
        assert (t[:, 1:] >= t[:, :-1]).logical_or(~batch.mask[:, 1:]).all()
    assert seen == 64


@pytest.mark.realdata
def test_real_p12_samples_equal_the_stay_level_items(p12):
    ids = p12.stays.filter(pl.col("split_group") == "c").get_column("stay_id").to_list()[:300]
    norm = Normalizer.fit(p12, ids, 48.0, categorical=("icu_type",))
    view = get_task("physionet2012", "mortality").view(p12)
    assert_same_items(EventSequenceDataset(p12, ids, norm, max_events=200), PredictionDataset(view, ids, norm, max_events=200))
