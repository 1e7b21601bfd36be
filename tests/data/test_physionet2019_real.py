"""PhysioNet 2019 on the real files: counts checked against the published figures and a hand parse.

The preparation (all 40,336 stays) is cached in the checkout (``.hymate-cache/tests``, see
tests/conftest.py) in a folder keyed by the sha256 of the reader's source, so it runs once per
reader version and checkout; the cache key of `load_dataset` itself covers the data files.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hymate.data import physionet2019
from hymate.data.physionet2019 import PLAUSIBLE_RANGES, STATICS, TIME_SERIES_VARIABLES, stay_labels
from hymate.data.store import load_dataset
from hymate.evaluate.utility import utility_score
from tests.conftest import p19_test_cache

pytestmark = pytest.mark.realdata

ARCHIVE = Path("physionet2019") / "physionet-challenge-2019-training.tar.gz"
NO_EVENTS = [108796, 115810]  # every vital and lab NaN in every hour


@pytest.fixture(scope="module")
def p19_cache() -> Path:
    return p19_test_cache()


@pytest.fixture(scope="module")
def p19(real_data, p19_cache):
    return load_dataset("physionet2019", real_data, p19_cache, progress=False)


def test_stays_rows_and_septic_counts_match_the_published_figures(p19):
    assert p19.report["per_set"] == {
        "A": {"stays": 20_336, "rows": 790_215, "septic_stays": 1_790, "positive_rows": 17_136},
        "B": {"stays": 20_000, "rows": 761_995, "septic_stays": 1_142, "positive_rows": 10_780},
    }
    assert p19.report["records_read"] == p19.stays.height == p19.statics.height == 40_336
    assert p19.labels.height == p19.report["hourly_rows"] == 1_552_210
    assert p19.stays.group_by("split_group").len().sort("split_group").rows() == [("A", 20_336), ("B", 20_000)]
    per_stay = stay_labels(p19)
    assert per_stay.height == 40_336 and per_stay.get_column("label").sum() == 2_932
    assert p19.stays.get_column("n_hours").sum() == 1_552_210


def test_every_value_is_accounted_for(p19):
    acc = p19.report["value_accounting"]
    assert acc["cells"] == 1_552_210 * 34
    assert acc["events"] + acc["missing_nan"] + acc["implausible_dropped"] == acc["cells"]
    assert acc["events"] == p19.events.height == p19.stays.get_column("n_events").sum()
    skipped = {k: v["count"] for k, v in p19.report["skipped_values"].items()}
    # The plausibility table (hymate.data.plausible) drops these 335 of 10.5 M values, each checked by
    # hand against the data: Temp 50, FiO2 4000 / -50 / 0.03, K 27.5, Hgb 32, BaseExcess 100.
    assert skipped == {
        "implausible Temp (outside 15..46 degC)": 2, "implausible FiO2 (outside 0.1..1 fraction)": 329,
        "implausible Potassium (outside 0..15 mmol/L)": 2, "implausible Hgb (outside 0..30 g/dL)": 1,
        "implausible BaseExcess (outside -50..50 mmol/L)": 1,
    }  # fmt: skip
    assert p19.report["excluded_stays"] == {} and p19.report["static_changes"] == {}
    assert p19.report["stays_without_events"] == len(NO_EVENTS)
    assert p19.stays.filter(pl.col("n_events") == 0).get_column("stay_id").to_list() == NO_EVENTS
    assert p19.report["stays_starting_after_hour_1"] == 8_793


def test_events_labels_and_statics_are_well_formed(p19):
    assert sorted(p19.variables) == sorted(TIME_SERIES_VARIABLES)
    assert p19.events.filter(pl.col("time").diff().over("stay_id") < 0).height == 0
    assert p19.events.get_column("time").min() >= 1 and not p19.events.get_column("value").is_nan().any()
    steps = p19.labels.select(pl.col("prediction_time").diff().over("stay_id").drop_nulls().unique())
    assert steps.to_series().to_list() == [1.0]  # one label per ICU hour, no gaps
    assert p19.statics.columns == ["stay_id", *STATICS.values()]
    assert p19.statics.get_column("gender").null_count() == 0
    assert p19.statics.get_column("hosp_adm_time").null_count() == 1  # p013777: HospAdmTime NaN


def _hand_parse(text: str) -> tuple[dict, list, list]:
    """An obviously-correct, row-by-row reading of one .psv file with the documented rules."""
    reader = csv.DictReader(io.StringIO(text), delimiter="|")
    events, labels, statics = [], [], None
    for row in reader:
        hour = float(row["ICULOS"])
        if statics is None:
            statics = {name: None if row[name] == "NaN" else float(row[name]) for name in STATICS}
        labels.append((hour, row["SepsisLabel"] == "1"))
        for name in TIME_SERIES_VARIABLES:
            if row[name] != "NaN":
                value = float(row[name])
                lo, hi = PLAUSIBLE_RANGES.get(name, (-np.inf, np.inf))
                if lo <= value <= hi:
                    events.append((hour, name, value))
    return statics, sorted(events, key=lambda e: (e[0], e[1])), labels


def test_files_match_a_hand_parse(p19, real_data):
    picked = {
        "p000001": "A",  # first file
        "p004591": "A",  # starts at ICULOS 2
        "p000048": "A",  # FiO2 0.04 dropped as implausible
        "p013777": "A",  # HospAdmTime NaN
        "p103361": "B",  # septic from its first hour
        "p115139": "B",  # septic later
        "p108796": "B",  # no vitals or labs at all
        "p109268": "B",  # Temp 50 dropped
        "p117406": "B",  # the longest stay, 336 hours
    }
    texts = {}
    with tarfile.open(real_data / ARCHIVE) as tar:
        for member in tar:
            stem = member.name.rsplit("/", 1)[-1].removesuffix(".psv")
            if member.isfile() and stem in picked and f"training_set{picked[stem]}/" in member.name:
                texts[stem] = tar.extractfile(member).read().decode()
    assert set(texts) == set(picked)
    for stem, text in texts.items():
        sid = int(stem[1:])
        statics, events, labels = _hand_parse(text)
        got = p19.events.filter(pl.col("stay_id") == sid).select("time", "variable", "value").rows()
        assert got == events, stem
        hourly = p19.labels.filter(pl.col("stay_id") == sid).select("prediction_time", "label").rows()
        assert hourly == labels, stem
        row = p19.statics.filter(pl.col("stay_id") == sid).row(0, named=True)
        assert {k: row[v] for k, v in STATICS.items()} == statics, stem
        stay = p19.stays.filter(pl.col("stay_id") == sid).row(0, named=True)
        assert stay["split_group"] == picked[stem] and stay["n_hours"] == len(labels)


def test_utility_of_the_optimal_policy_and_of_inaction_on_the_real_labels(p19):
    labels = p19.labels  # sorted by stay, hour
    ids, y = labels.get_column("stay_id").to_numpy(), labels.get_column("label").to_numpy()
    # The optimal policy: 1 from 12 h before onset (6 h before the first positive label) to 3 h after.
    onset = labels.join(stay_labels(p19).select("stay_id", "onset_hour"), on="stay_id", how="left")
    d = (onset.get_column("prediction_time") - onset.get_column("onset_hour")).to_numpy()
    optimal = np.nan_to_num((d >= -12) & (d <= 3), nan=0).astype(int)
    score = utility_score(ids, y, optimal)
    assert score.normalized == pytest.approx(1.0) and score.septic_stays == 2_932
    assert utility_score(ids, y, np.zeros(len(y), int)).normalized == 0.0


def test_second_load_is_served_from_cache(p19, real_data, p19_cache, monkeypatch):
    def no_parse(*args, **kwargs):
        raise AssertionError("the raw files were parsed again instead of reading the cache")

    monkeypatch.setattr(physionet2019, "read", no_parse)
    again = load_dataset("physionet2019", real_data, p19_cache, progress=False)
    assert again.report["cache_key"] == p19.report["cache_key"]
    assert again.events.equals(p19.events) and again.labels.equals(p19.labels) and again.stays.equals(p19.stays)
