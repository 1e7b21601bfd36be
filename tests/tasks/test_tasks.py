"""Tasks as label tables: the P12 length-of-stay tasks on a hand-built cohort, protocol errors,
stratified splits for every label type, the registry, and label tables the pipeline refuses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from hymate.data.schema import EventData
from hymate.errors import DataError, HymateError
from hymate.tasks.registry import TASKS, get_task, tasks_of
from hymate.tasks.splits import PROTOCOLS, make_splits
from tests.tasks.test_sepsis import p19_like

MORTALITY = get_task("physionet2012", "mortality")
LOS_3D = get_task("physionet2012", "los-3d")
LOS_DAYS = get_task("physionet2012", "los-days")
LOS_BANDS = get_task("physionet2012", "los-bands")
LOS_TASKS = (LOS_3D, LOS_DAYS, LOS_BANDS)
ONLINE = get_task("physionet2019", "sepsis-online")
STAY = get_task("physionet2019", "sepsis-stay")

# Stays 1..8: the band boundaries and the two unknown lengths of stay (-1 and a missing value).
BOUNDARIES = {1: 2, 2: 3, 3: 7, 4: 8, 5: 14, 6: 15, 7: -1, 8: None}
UNKNOWN = [7, 8]


def p12_cohort(n_stays: int = 120, seed: int = 0, groups: str = "abc", los: dict | None = None) -> EventData:
    """A P12-shaped EventData built by hand: two events in the first 48 h, age and ICU type,
    in-hospital death as the reader's label, and the Outcomes' length_of_stay (Int64, -1 and null kept)."""
    rng = np.random.default_rng(seed)
    ids = list(range(1, n_stays + 1))
    los = {i: int(rng.integers(1, 31)) for i in ids} | (BOUNDARIES if los is None else los)
    events = pl.DataFrame({
        "stay_id": [i for i in ids for _ in range(2)], "time": [0.5, 30.0] * n_stays,
        "variable": ["HR", "Temp"] * n_stays, "value": rng.normal(80, 10, 2 * n_stays),
    })  # fmt: skip
    statics = pl.DataFrame({"stay_id": ids, "age": rng.normal(60, 10, n_stays), "icu_type": [1 + i % 4 for i in ids]})
    labels = pl.DataFrame({"stay_id": ids, "prediction_time": [48.0] * n_stays, "label": [i % 4 == 0 for i in ids]})
    stays = pl.DataFrame(
        {"stay_id": ids, "split_group": [groups[i % len(groups)] for i in ids], "n_events": [2] * n_stays,
         "length_of_stay": [los[i] for i in ids]},
        schema={"stay_id": pl.Int64, "split_group": pl.String, "n_events": pl.Int64, "length_of_stay": pl.Int64},
    )  # fmt: skip
    return EventData("physionet2012", events, statics, labels, stays)


def _labels(view: EventData) -> dict:
    return dict(view.labels.select("stay_id", "label").iter_rows())


# --- (1) the length-of-stay tasks ------------------------------------------------------------
def test_los_labels_at_the_band_boundaries():
    data = p12_cohort()
    expected = {
        LOS_3D.name: {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0},  # > 3 days
        LOS_DAYS.name: {1: 2.0, 2: 3.0, 3: 7.0, 4: 8.0, 5: 14.0, 6: 15.0},  # the value
        LOS_BANDS.name: {1: 0.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0, 6: 3.0},  # < 3, 3-7, 8-14, > 14
    }
    los = dict(data.stays.select("stay_id", "length_of_stay").iter_rows())
    for task in LOS_TASKS:
        view = task.view(data)
        labels = _labels(view)
        assert view.labels.schema["label"] == pl.Float64 and set(labels) == set(data.stay_ids)
        assert (view.labels.get_column("prediction_time") == 48.0).all()  # every stay predicted at 48 h
        assert {i: labels[i] for i in expected[task.name]} == expected[task.name]
        assert labels[7] is None and labels[8] is None  # unknown: a null label, the stay still scorable
        for i in set(labels) - set(UNKNOWN):  # and the rule holds for every other stay
            rule = {LOS_3D.name: float(los[i] > 3), LOS_DAYS.name: float(los[i]),
                    LOS_BANDS.name: float(0 if los[i] < 3 else 1 if los[i] <= 7 else 2 if los[i] <= 14 else 3)}  # fmt: skip
            assert labels[i] == rule[task.name]
    assert task.n_outputs == 4 and LOS_DAYS.n_outputs == LOS_3D.n_outputs == 1
    assert LOS_BANDS.classes == ("< 3 days", "3-7 days", "8-14 days", "> 14 days")


def test_unknown_los_is_counted_and_in_no_split():
    data = p12_cohort()
    for task in LOS_TASKS:
        view = task.view(data)
        excluded = view.report["task"]["excluded_stays"]
        ((reason, record),) = excluded.items()
        assert "-1" in reason and "missing" in reason and record == {"count": 2, "ids": UNKNOWN}
        assert view.report["task"]["name"] == task.name and view.report["task"]["label_type"] == task.label_type
        assert set(UNKNOWN) <= set(view.stay_ids)  # kept in the view (they can be scored) ...
        known = set(data.stay_ids) - set(UNKNOWN)
        for protocol in task.protocols:
            for split in make_splits(view, task, protocol, seed=0):
                parts = set(split.train) | set(split.val) | set(split.test)
                assert parts == known and not parts & set(UNKNOWN), (task.name, protocol)  # ... and in no split
    mortality = MORTALITY.view(data)  # mortality knows every outcome: those stays are in its splits
    assert "excluded_stays" not in mortality.report["task"]
    (split,) = make_splits(mortality, MORTALITY, "strats", 0)
    assert set(split.train) | set(split.val) | set(split.test) == set(data.stay_ids)


def test_los_tasks_are_registered_with_their_label_types():
    assert [t.short for t in tasks_of("physionet2012")] == ["mortality", "los-3d", "los-days", "los-bands"]
    assert [t.label_type for t in tasks_of("physionet2012")] == ["binary", "binary", "regression", "multiclass"]
    assert all(t.protocols == ("strats", "splits5", "kfold5") for t in tasks_of("physionet2012"))


# --- (2) protocol errors ----------------------------------------------------------------------
def test_strats_needs_sets_a_b_and_c():
    data = p12_cohort(groups="ab")
    for task in (MORTALITY, LOS_BANDS):
        with pytest.raises(DataError, match="the strats protocol needs source groups a, b, c; physionet2012 has a, b$"):
            make_splits(task.view(data), task, "strats", 0)
        assert len(make_splits(task.view(data), task, "splits5", 0)) == 5  # the generic protocols need no groups


def test_a2b_needs_hospitals_a_and_b():
    data = p19_like(n_stays=40)
    data = EventData(data.name, data.events, data.statics, data.labels,
                     data.stays.with_columns(pl.lit("A").alias("split_group")))  # fmt: skip
    with pytest.raises(DataError, match="the a2b protocol needs source groups A, B; physionet2019 has A$"):
        make_splits(ONLINE.view(data), ONLINE, "a2b", 0)


@pytest.mark.parametrize(("task", "protocol"), [(MORTALITY, "a2b"), (LOS_DAYS, "a2b"), (ONLINE, "splits5"),
                                                (ONLINE, "strats"), (STAY, "a2b")])  # fmt: skip
def test_a_protocol_the_task_does_not_list_is_refused(task, protocol):
    view = task.view(p12_cohort() if task.dataset == "physionet2012" else p19_like(n_stays=40))
    with pytest.raises(DataError, match=f"task {task.name} does not use the {protocol} protocol; its protocols: "
                                        f"{', '.join(task.protocols)}"):  # fmt: skip
        make_splits(view, task, protocol, 0)


def test_unknown_protocol_and_too_few_stays():
    view = MORTALITY.view(p12_cohort())
    with pytest.raises(DataError, match=f"unknown protocol 'splits10'; known: {', '.join(PROTOCOLS)}"):
        make_splits(view, MORTALITY, "splits10", 0)
    small = LOS_BANDS.view(p12_cohort(n_stays=8))  # six labelled stays
    with pytest.raises(DataError, match="too few labelled stays to draw splits5 splits for physionet2012-los-bands: 6"):
        make_splits(small, LOS_BANDS, "splits5", 0)
    one_in_a_class = p12_cohort(n_stays=60, los={i: 10 for i in range(1, 61)} | {1: 1})
    with pytest.raises(DataError, match="strata sizes \\[1, 59\\]"):
        make_splits(LOS_BANDS.view(one_in_a_class), LOS_BANDS, "kfold5", 0)


def test_a_view_of_the_wrong_dataset_is_refused():
    with pytest.raises(DataError, match="task physionet2012-mortality needs physionet2012 data, got physionet2019"):
        MORTALITY.view(p19_like(n_stays=10))


# --- (3) stratified splits for multiclass and regression labels -------------------------------
def _parts(split, protocol: str) -> dict:
    """The parts a protocol draws (strats takes set a as its test set as it is)."""
    parts = {"train": split.train, "val": split.val, "test": split.test}
    return {k: v for k, v in parts.items() if not (protocol == "strats" and k == "test")}


def _drawn(split) -> tuple[int, ...]:
    """The stays the parts were drawn from: all of them, or sets b + c for strats."""
    return split.train + split.val + (() if split.protocol == "strats" else split.test)


@pytest.mark.parametrize("protocol", ["strats", "splits5", "kfold5"])
def test_multiclass_splits_keep_the_class_proportions(protocol):
    view = LOS_BANDS.view(p12_cohort(n_stays=1500, seed=1))
    labels = {i: y for i, y in _labels(view).items() if y is not None}
    for split in make_splits(view, LOS_BANDS, protocol, 0):
        drawn = _drawn(split)
        overall = np.bincount([int(labels[i]) for i in drawn], minlength=4) / len(drawn)
        assert overall.min() > 0.05  # every band populated (< 3 days: 1 and 2 of 1..30)
        for name, ids in _parts(split, protocol).items():
            share = np.bincount([int(labels[i]) for i in ids], minlength=4) / len(ids)
            # stratified: within a stay or two of the exact proportion (a random draw of 150 is off by ~0.04)
            assert np.abs(share - overall).max() <= 2 / len(ids) + 0.002, (split.name, name, share, overall)


@pytest.mark.parametrize("protocol", ["strats", "splits5", "kfold5"])
def test_regression_splits_keep_the_value_distribution(protocol):
    view = LOS_DAYS.view(p12_cohort(n_stays=1500, seed=2))
    labels = {i: y for i, y in _labels(view).items() if y is not None}
    quartiles = np.quantile(np.array(list(labels.values())), [0.25, 0.5, 0.75])  # the strata of the draw
    for split in make_splits(view, LOS_DAYS, protocol, 0):
        values = np.array([labels[i] for i in _drawn(split)])
        overall = np.array([(values < q).mean() for q in quartiles])
        for name, ids in _parts(split, protocol).items():
            part = np.array([labels[i] for i in ids])
            share = np.array([(part < q).mean() for q in quartiles])  # the share below each overall quartile
            assert np.abs(share - overall).max() <= 3 / len(ids) + 0.002, (split.name, name, share, overall)
            assert abs(part.mean() - values.mean()) < 1.0


# --- (4) the registry ---------------------------------------------------------------------------
def test_get_task_by_name_dataset_and_short_name():
    assert get_task("physionet2012") is MORTALITY and get_task("physionet2019") is ONLINE  # a dataset's default task
    assert (
        get_task("physionet2012-los-bands") is LOS_BANDS and get_task("physionet2012", "physionet2012-los-3d") is LOS_3D
    )
    assert set(TASKS) == {t.name for t in (*tasks_of("physionet2012"), *tasks_of("physionet2019"))}
    assert all(t.name == f"{t.dataset}-{t.short}" for t in TASKS.values())


def test_get_task_errors_name_what_is_known():
    with pytest.raises(HymateError, match="unknown dataset or task 'physionet2013'; datasets: meds, physionet2012, physionet2019, table; "
                                          "tasks: physionet2012-mortality, "):  # fmt: skip
        get_task("physionet2013")
    with pytest.raises(HymateError, match="unknown task 'sepsis-online' for physionet2012; known: mortality, los-3d, "
                                          "los-days, los-bands$"):  # fmt: skip
        get_task("physionet2012", "sepsis-online")
    with pytest.raises(
        HymateError, match="unknown task 'los-3d' for physionet2019; known: sepsis-online, sepsis-stay$"
    ):
        get_task("physionet2019", "los-3d")
    with pytest.raises(HymateError, match="unknown dataset or task"):
        get_task("mortality")  # a short name needs its dataset


# --- (5) label tables the pipeline refuses -------------------------------------------------------
def _with_labels(task, labels: pl.DataFrame):
    """`task` whose build gives the label table `labels` (stay_id, prediction_time, label)."""
    labels = labels.with_columns(pl.col("stay_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Float64))
    return replace(task, build=lambda data: EventData(data.name, data.events, data.statics, labels, data.stays))


GOOD = {"stay_id": [1, 2, 3], "prediction_time": [48.0, 48.0, 48.0], "label": [0.0, 1.0, 0.0]}


@pytest.mark.parametrize(("task", "change", "message"), [
    (MORTALITY, {"stay_id": [1, 1, 3]}, "a stay has two labels at the same prediction time"),
    (MORTALITY, {"prediction_time": [48.0, float("nan"), 48.0]}, "prediction times are null or not finite"),
    (MORTALITY, {"prediction_time": [48.0, None, 48.0]}, "1 prediction times are null or not finite"),
    (MORTALITY, {"prediction_time": [48.0, float("inf"), 48.0]}, "prediction times are null or not finite"),
    (MORTALITY, {"label": [0.0, 2.0, 1.0]}, "binary labels must be 0 or 1"),
    (MORTALITY, {"label": [0.0, 0.5, 1.0]}, "binary labels must be 0 or 1"),
    (LOS_BANDS, {"label": [0.0, 4.0, 1.0]}, "class labels must be 0..3, got e.g. \\[4.0\\]"),
    (LOS_BANDS, {"label": [-1.0, 3.0, 1.0]}, "class labels must be 0..3, got e.g. \\[-1.0\\]"),
    (LOS_BANDS, {"label": [0.0, 1.5, 1.0]}, "class labels must be 0..3, got e.g. \\[1.5\\]"),
    (LOS_DAYS, {"label": [3.0, float("nan"), 1.0]}, "labels must be finite numbers"),
    (LOS_DAYS, {"label": [3.0, float("inf"), 1.0]}, "labels must be finite numbers"),
])  # fmt: skip
def test_a_bad_label_table_fails_with_a_data_error_naming_the_problem(task, change, message):
    bad = _with_labels(task, pl.DataFrame({**GOOD, **change}))
    with pytest.raises(DataError, match=f"task {task.name}: .*{message}"):
        bad.view(p12_cohort(n_stays=10))


def test_a_nan_prediction_time_is_counted():
    bad = _with_labels(MORTALITY, pl.DataFrame({**GOOD, "prediction_time": [48.0, float("nan"), float("inf")]}))
    with pytest.raises(DataError, match="task physionet2012-mortality: 2 prediction times are null or not finite"):
        bad.view(p12_cohort(n_stays=10))


def test_a_good_label_table_is_sorted_typed_and_keeps_only_stays_with_a_prediction():
    labels = pl.DataFrame(
        {"stay_id": [3, 1, 1, 2], "prediction_time": [48.0, 30.0, 12.0, 48.0], "label": [None, 1, 0, 0]}
    )
    view = _with_labels(MORTALITY, labels).view(p12_cohort(n_stays=10))
    assert view.labels.rows() == [(1, 12.0, 0.0), (1, 30.0, 1.0), (2, 48.0, 0.0), (3, 48.0, None)]
    assert view.labels.schema["label"] == pl.Float64
    assert view.stay_ids == [1, 2, 3] and set(view.events.get_column("stay_id")) == set(
        view.statics.get_column("stay_id")
    ) == {1, 2, 3}


def test_file_backed_datasets_ask_for_their_label_file():
    for dataset in ("meds", "table"):
        with pytest.raises(HymateError, match="--task"):
            get_task(dataset)
