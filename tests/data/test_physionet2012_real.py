"""PhysioNet 2012 on the real files: counts checked against the published figures and hand counts."""

from __future__ import annotations

import csv
import io
import tarfile

import polars as pl
import pytest

from hymate.data import physionet2012
from hymate.data.store import load_dataset

pytestmark = pytest.mark.realdata

NO_TIME_SERIES = [140501, 140936, 141264, 142731, 142998, 143656, 145611, 147514, 150309, 150649, 155655, 156254]


def test_all_records_read_and_stays_without_time_series_excluded(p12):
    assert p12.report["records_read"] == 12_000
    assert p12.stays.height == 11_988
    assert p12.report["excluded_stays"]["no time series"]["ids"] == NO_TIME_SERIES
    assert p12.labels.height == 11_988
    assert p12.statics.height == 11_988
    assert set(p12.events.get_column("stay_id").unique().to_list()) == set(p12.stay_ids)


def test_deaths_per_set_match_the_published_counts(p12):
    per_set = p12.report["outcomes_per_set"]
    assert {s: v["deaths"] for s, v in per_set.items()} == {"a": 554, "b": 568, "c": 585}
    assert {s: v["records"] for s, v in per_set.items()} == {"a": 4000, "b": 4000, "c": 4000}


def test_every_line_is_accounted_for(p12):
    acc = p12.report["line_accounting"]
    # SOURCE.txt: 1,757,980 + 1,762,535 + 1,765,303 observation lines in sets a, b, c.
    assert acc["lines_read"] == 5_285_818
    parts = acc["events"] + acc["descriptor_lines"] + acc["record_id_lines"] + acc["skipped_lines"]
    assert parts + acc["lines_of_excluded_stays"] == acc["lines_read"]
    assert acc["events"] == p12.events.height


def test_the_plausibility_table_drops_only_impossible_lab_values(p12):
    # Issue 21's table (hymate.data.plausible) adds ranges for the labs; on the real data it drops
    # 7 values, each impossible: K 15.6-22.9 mmol/L, Mg 22.4-37.5 mg/dL, WBC 12,500 K/uL.
    skipped = {k: v["count"] for k, v in p12.report["skipped_lines"].items()}
    assert skipped["implausible K measurement (outside 0..15 mmol/L)"] == 3
    assert skipped["implausible Mg measurement (outside 0..22 mg/dL)"] == 3
    assert skipped["implausible WBC measurement (outside 0..1100 K/uL)"] == 1
    for lab in ("ALT", "AST", "ALP", "Bilirubin", "Platelets", "TroponinT"):  # widened: real extremes kept
        assert not any(k.startswith(f"implausible {lab} ") for k in skipped), lab
    assert p12.events.height == 5_205_660


def _hand_parse(text: str) -> tuple[dict, list[tuple[float, str, float]]]:
    """An obviously-correct, line-by-line reading of one record file with the documented rules."""
    statics, events, seen = {}, [], set()
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        t, name, value = row[0], row[1], float(row[2])
        hours = int(t.split(":")[0]) + int(t.split(":")[1]) / 60
        if name in physionet2012.DESCRIPTORS and name not in seen and hours == 0:
            seen.add(name)
            statics[name] = None if value == -1 else value
        elif name in physionet2012.TIME_SERIES_VARIABLES and value != -1:
            lo, hi = physionet2012.PLAUSIBLE_RANGES.get(name, (-float("inf"), float("inf")))
            if lo <= value <= hi and hours <= 48:
                events.append((hours, name, value))
    return statics, sorted(events, key=lambda e: (e[0], e[1]))


def test_records_match_a_hand_parse(p12, real_data):
    archive = real_data / "physionet2012" / "physionet-challenge-2012.tar.gz"
    picked = {"132539", "135361", "142998", "152871", "163037"}  # incl. one empty stay and one with '' lines
    with tarfile.open(archive) as tar:
        texts = {
            m.name.split("/")[-1][:-4]: tar.extractfile(m).read().decode()
            for m in tar
            if m.isfile() and m.name.split("/")[-1][:-4] in picked and "/set-" in m.name
        }
    assert set(texts) == picked
    for rid, text in texts.items():
        statics, events = _hand_parse(text)
        got = p12.events.filter(pl.col("stay_id") == int(rid)).sort("time", "variable", maintain_order=True)
        rounded = [(round(t, 9), name, value) for t, name, value in got.select("time", "variable", "value").rows()]
        assert rounded == [(round(t, 9), name, value) for t, name, value in events], rid
        if events:
            row = p12.statics.filter(pl.col("stay_id") == int(rid)).row(0, named=True)
            assert row["age"] == statics["Age"] and row["icu_type"] == statics["ICUType"]
            assert row["weight"] == statics["Weight"] and row["height"] == statics["Height"]


def test_events_are_time_ordered_within_each_stay(p12):
    unordered = p12.events.filter(pl.col("time").diff().over("stay_id") < 0).height
    assert unordered == 0
    assert p12.events.get_column("time").is_between(0, 48).all()
    assert sorted(p12.variables) == sorted(physionet2012.TIME_SERIES_VARIABLES)


def test_second_load_is_served_from_cache(p12, real_data, real_cache, monkeypatch):
    def no_parse(*args, **kwargs):
        raise AssertionError("the raw files were parsed again instead of reading the cache")

    monkeypatch.setattr(physionet2012, "read", no_parse)
    again = load_dataset("physionet2012", real_data, real_cache, progress=False)
    assert again.report["cache_key"] == p12.report["cache_key"]
    assert again.events.equals(p12.events) and again.statics.equals(p12.statics)
    assert again.labels.equals(p12.labels) and again.stays.equals(p12.stays)


def _hand_outcomes(real_data) -> dict[int, tuple[str, dict]]:
    """Outcomes-{a,b,c}.txt read with csv from the archive: RecordID -> (set, {column: int or None})."""
    archive = real_data / "physionet2012" / "physionet-challenge-2012.tar.gz"
    rows = {}
    with tarfile.open(archive) as tar:
        for m in tar:
            name = m.name.split("/")[-1]
            if m.isfile() and name.startswith("Outcomes-"):
                for row in csv.DictReader(io.StringIO(tar.extractfile(m).read().decode())):
                    values = {c: int(row[c]) if row[c].strip() else None for c in physionet2012.OUTCOME_VALUES}
                    rows[int(row["RecordID"])] = (name[len("Outcomes-")], values)
    return rows


def test_outcome_values_match_a_hand_count(p12, real_data):
    hand = _hand_outcomes(real_data)
    kept = {rid: v for rid, v in hand.items() if rid not in NO_TIME_SERIES}
    assert len(hand) == 12_000 and len(kept) == 11_988
    los = {s: [v["Length_of_stay"] for g, v in kept.values() if g == s] for s in "abc"}
    stays = p12.stays
    for s in "abc":
        got = stays.filter(pl.col("split_group") == s).get_column("length_of_stay")
        assert (got == -1).sum() == sum(v == -1 for v in los[s]), s
        assert (got < 0).sum() == sum(v is not None and v < 0 for v in los[s]), s
        assert got.null_count() == sum(v is None for v in los[s]) == 0, s
    assert [sum(v == -1 for v in los[s]) for s in "abc"] == [57, 48, 52]  # 167 in the files, 10 of them no-series stays
    set_a = stays.filter(pl.col("split_group") == "a").get_column("length_of_stay")
    assert set_a.sum() == sum(los["a"]) == 53_770  # -1 values included, as stored
    # Every value of every stay, as given.
    columns = list(physionet2012.OUTCOME_VALUES.values())
    got = {r[0]: r[1:] for r in stays.select("stay_id", *columns).iter_rows()}
    assert got == {rid: tuple(v.values()) for rid, (_, v) in kept.items()}
    # The report's summary counts the same.
    summary = p12.report["outcomes"]
    for column, name in physionet2012.OUTCOME_VALUES.items():
        values = [v[column] for _, v in kept.values()]
        known = [x for x in values if x is not None and x != -1]
        assert summary[name] == {
            "missing": sum(x is None for x in values),
            "minus_one": sum(x == -1 for x in values),
            "other_negative": sum(x < 0 for x in known),
            "min": min(known),
            "max": max(known),
        }, name
    assert summary["survival"]["other_negative"] == 1  # RecordID 146178: Survival -23
