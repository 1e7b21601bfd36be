"""Split files: identical across runs with one seed, disjoint, checksummed, protocol-faithful, and
drawn exactly as before the protocols became data (same ids per part)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from hymate.data import physionet2019
from hymate.data.store import load_dataset
from hymate.errors import DataError
from hymate.tasks.registry import get_task
from hymate.tasks.splits import Split, make_splits
from tests.conftest import p19_test_cache

pytestmark = pytest.mark.realdata

MORTALITY = get_task("physionet2012", "mortality")
ONLINE = get_task("physionet2019", "sepsis-online")


@pytest.fixture(scope="module")
def mortality(p12):
    return MORTALITY.view(p12)


@pytest.fixture(scope="module")
def p19(real_data):
    """The real P19 preparation, cached where tests/data/test_physionet2019_real.py caches it."""
    return load_dataset("physionet2019", real_data, p19_test_cache(), progress=False)


def test_split_files_are_identical_across_runs_with_the_same_seed(mortality, tmp_path):
    for protocol in ("strats", "splits5"):
        first = [s.save(tmp_path / "one") for s in make_splits(mortality, MORTALITY, protocol, seed=7)]
        second = [s.save(tmp_path / "two") for s in make_splits(mortality, MORTALITY, protocol, seed=7)]
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
        other = make_splits(mortality, MORTALITY, protocol, seed=8)
        assert other[0].sha256 != Split.load(first[0]).sha256


def test_parts_are_disjoint_and_cover_every_labelled_stay(mortality):
    everyone = set(mortality.labels.filter(pl.col("label").is_not_null()).get_column("stay_id").to_list())
    assert len(everyone) == 11988
    for split in make_splits(mortality, MORTALITY, "strats", 0) + make_splits(mortality, MORTALITY, "splits5", 0):
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert not (train & val or train & test or val & test)
        assert train | val | test == everyone


def test_strats_protocol_tests_on_set_a(mortality):
    (split,) = make_splits(mortality, MORTALITY, "strats", 0)
    set_a = set(mortality.stays.filter(pl.col("split_group") == "a").get_column("stay_id").to_list())
    assert set(split.test) == set_a and len(set_a) == 3997
    assert len(split.val) / (len(split.train) + len(split.val)) == pytest.approx(0.2, abs=0.001)


def test_splits5_are_stratified_80_10_10_and_differ(mortality):
    splits = make_splits(mortality, MORTALITY, "splits5", 0)
    labels = dict(mortality.labels.select("stay_id", "label").iter_rows())
    rate = np.mean(list(labels.values()))
    for s in splits:
        assert len(s.test) == len(s.val) == 1199 and len(s.train) == 9590
        for part in (s.train, s.val, s.test):
            assert np.mean([labels[i] for i in part]) == pytest.approx(rate, abs=0.005)
    assert len({s.test for s in splits}) == 5


def test_edited_split_file_fails_its_checksum(mortality, tmp_path):
    path = make_splits(mortality, MORTALITY, "strats", 0)[0].save(tmp_path)
    raw = json.loads(path.read_text())
    raw["test"] = raw["test"][1:]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="fails its checksum"):
        Split.load(path)


def test_split_file_of_other_stays_is_refused_with_what_to_do(mortality, tmp_path):
    import dataclasses

    path = make_splits(mortality, MORTALITY, "strats", 0)[0].save(tmp_path)
    assert Split.load(path, mortality).train
    fewer = dataclasses.replace(mortality, stays=mortality.stays.slice(1))  # e.g. a newer reader dropped a stay
    with pytest.raises(DataError, match="different set of stays .* delete it to draw the split again"):
        Split.load(path, fewer)


# --- the draws of the code before the refactor (HEAD~1: tasks/splits.py and tasks/sepsis.py) ---
def _parts(train, val, test) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(i) for i in np.sort(ids)) for ids in (train, val, test))


def old_p12_splits(data, protocol: str, seed: int) -> list[tuple]:
    """The old `make_splits(data, protocol, seed)` of P12: over stays with a label, by stay id."""
    labelled = data.stays.join(data.labels.select("stay_id", "label"), on="stay_id", how="inner").sort("stay_id")
    if protocol == "strats":
        test = labelled.filter(pl.col("split_group") == "a").get_column("stay_id").to_numpy()
        dev = labelled.filter(pl.col("split_group") != "a")
        train, val = train_test_split(dev.get_column("stay_id").to_numpy(), test_size=0.2,
                                      stratify=dev.get_column("label").to_numpy(), random_state=seed)  # fmt: skip
        return [_parts(train, val, test)]
    ids, y = labelled.get_column("stay_id").to_numpy(), labelled.get_column("label").to_numpy()
    out = []
    for k in range(5):
        rs = seed * 1000 + k
        rest, test, y_rest, _ = train_test_split(ids, y, test_size=0.1, stratify=y, random_state=rs)
        train, val = train_test_split(rest, test_size=1 / 9, stratify=y_rest, random_state=rs)
        out.append(_parts(train, val, test))
    return out


def old_online_splits(data, setting: str, seed: int) -> list[tuple]:
    """The old `online_splits(online_data(data), setting, seed)`: stays with events, stratified by sepsis at any hour."""
    keep = pl.col("stay_id").is_in(data.stays.filter(pl.col("n_events") > 0).get_column("stay_id").implode())
    stays, labels = data.stays.filter(keep), data.labels.filter(keep)
    per_stay = physionet2019.stay_labels(labels).join(stays.select("stay_id", "split_group"), on="stay_id")
    ids = per_stay.get_column("stay_id").to_numpy()
    y = per_stay.get_column("label").to_numpy().astype(np.int64)
    if setting == "a2b":
        a = per_stay.get_column("split_group").to_numpy() == "A"
        train, val = train_test_split(ids[a], test_size=0.1, stratify=y[a], random_state=seed)
        return [_parts(train, val, ids[~a])]
    out = []
    for k, (rest, test) in enumerate(StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(ids, y)):
        train, val = train_test_split(ids[rest], test_size=1 / 8, stratify=y[rest], random_state=seed * 1000 + k)
        out.append(_parts(train, val, ids[test]))
    return out


@pytest.mark.parametrize("protocol", ["strats", "splits5"])
@pytest.mark.parametrize("seed", [0, 3])
def test_mortality_draws_are_the_old_ones(p12, mortality, protocol, seed):
    new = [(s.train, s.val, s.test) for s in make_splits(mortality, MORTALITY, protocol, seed)]
    assert new == old_p12_splits(p12, protocol, seed)


@pytest.mark.parametrize("protocol", ["kfold5", "a2b"])
def test_sepsis_online_draws_are_the_old_ones(p19, protocol):
    view = ONLINE.view(p19)
    assert view.stays.height == 40_334  # the two stays without events are left out, as before
    for seed in (0, 1):
        new = [(s.train, s.val, s.test) for s in make_splits(view, ONLINE, protocol, seed)]
        assert new == old_online_splits(p19, protocol, seed)
