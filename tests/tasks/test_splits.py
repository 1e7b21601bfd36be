"""Split files: identical across runs with one seed, disjoint, checksummed, protocol-faithful."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from hymate.errors import DataError
from hymate.tasks.splits import Split, make_splits

pytestmark = pytest.mark.realdata


def test_split_files_are_identical_across_runs_with_the_same_seed(p12, tmp_path):
    for protocol in ("strats", "splits5"):
        first = [s.save(tmp_path / "one") for s in make_splits(p12, protocol, seed=7)]
        second = [s.save(tmp_path / "two") for s in make_splits(p12, protocol, seed=7)]
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
        other = make_splits(p12, protocol, seed=8)
        assert other[0].sha256 != Split.load(first[0]).sha256


def test_parts_are_disjoint_and_cover_every_labelled_stay(p12):
    everyone = set(p12.labels.get_column("stay_id").to_list())
    for split in make_splits(p12, "strats", 0) + make_splits(p12, "splits5", 0):
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert not (train & val or train & test or val & test)
        assert train | val | test == everyone


def test_strats_protocol_tests_on_set_a(p12):
    (split,) = make_splits(p12, "strats", 0)
    set_a = set(p12.stays.filter(pl.col("split_group") == "a").get_column("stay_id").to_list())
    assert set(split.test) == set_a and len(set_a) == 3997
    assert len(split.val) / (len(split.train) + len(split.val)) == pytest.approx(0.2, abs=0.001)


def test_splits5_are_stratified_80_10_10_and_differ(p12):
    splits = make_splits(p12, "splits5", 0)
    labels = dict(p12.labels.select("stay_id", "label").iter_rows())
    rate = np.mean(list(labels.values()))
    for s in splits:
        assert len(s.test) == len(s.val) == 1199 and len(s.train) == 9590
        for part in (s.train, s.val, s.test):
            assert np.mean([labels[i] for i in part]) == pytest.approx(rate, abs=0.005)
    assert len({s.test for s in splits}) == 5


def test_edited_split_file_fails_its_checksum(p12, tmp_path):
    path = make_splits(p12, "strats", 0)[0].save(tmp_path)
    raw = json.loads(path.read_text())
    raw["test"] = raw["test"][1:]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="fails its checksum"):
        Split.load(path)
