"""Summary features against a hand computation, and the tabular baselines on a real P12 subset."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import polars as pl
import pytest

from hymate.data.schema import EventData
from hymate.models.summary_features import STATS, SummarySpec, summary_features
from hymate.models.tabular import run_tabular
from hymate.tasks.mortality import P12_MORTALITY
from hymate.tasks.splits import make_splits, subsample

WINDOW = 48.0

# (stay, time, variable, value), sorted by (stay, time, variable) as EventData requires
EVENTS = [
    (1, -0.5, "HR", 99.0),  # before admission: outside the window
    (1, 0.0, "HR", 80.0),
    (1, 0.5, "Temp", 36.6),
    (1, 2.0, "HR", 90.0),
    (1, 2.0, "HR", 85.0),  # same time as the one above: the later row is "last"
    (1, 30.0, "Temp", 38.1),
    (1, 50.0, "HR", 70.0),  # after the window
    (2, 1.0, "Temp", 37.0),
    (2, 10.0, "Lactate", 2.5),  # a variable stay 2 has and stay 1 never had
    (2, 47.0, "Temp", 36.8),
    (3, 0.25, "HR", 120.0),
    (4, 5.0, "HR", 100.0),  # a later (test) stay
    (4, 6.0, "Urine", 300.0),  # a variable no training stay had
    (4, 7.0, "Urine", 250.0),
    (4, 8.0, "Temp", 37.5),
]
STATICS = {"stay_id": [1, 2, 3, 4, 5], "age": [54.0, None, 70.0, 61.0, 33.0], "icu_type": [1, 3, None, 2, 9]}


def make_data() -> EventData:
    events = pl.DataFrame(EVENTS, schema=["stay_id", "time", "variable", "value"], orient="row")
    stays = [1, 2, 3, 4, 5]  # stay 5 has no events at all
    return EventData(
        name="synthetic",
        events=events,
        statics=pl.DataFrame(STATICS, schema={"stay_id": pl.Int64, "age": pl.Float64, "icu_type": pl.Int8}),
        labels=pl.DataFrame(
            {"stay_id": stays, "prediction_time": [WINDOW] * 5, "label": [True, False, False, True, False]}
        ),
        stays=pl.DataFrame({"stay_id": stays, "split_group": ["a"] * 5, "n_events": [7, 3, 1, 4, 0]}),
    )


def by_hand(stay_ids, variables, categories) -> np.ndarray:
    """One row per stay from a plain loop over the events (the slow, obvious way)."""
    rows = []
    for stay in stay_ids:
        row = []
        for var in variables:
            obs = [(t, v) for s, t, x, v in EVENTS if s == stay and x == var and 0 <= t <= WINDOW]
            obs = sorted(obs, key=lambda o: o[0])  # stable: table order among equal times
            if not obs:
                row += [math.nan] * 6 + [0.0, math.nan]
                continue
            values = [v for _, v in obs]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            row += [values[-1], values[0], mean, min(values), max(values), sd, float(len(values)), WINDOW - obs[-1][0]]
        i = STATICS["stay_id"].index(stay)
        age = STATICS["age"][i]
        row.append(math.nan if age is None else age)
        row += [1.0 if STATICS["icu_type"][i] == c else 0.0 for c in categories]
        rows.append(row)
    return np.array(rows, dtype=float)


def test_summary_features_match_a_hand_computation(caplog):
    data = make_data()
    spec = SummarySpec.fit(data, [1, 2, 3], WINDOW, categorical=("icu_type",))
    assert spec.variables == ["HR", "Lactate", "Temp"]
    assert spec.static_categorical == {"icu_type": [1, 3]}  # stay 3's missing type is no category

    X_train, dropped = spec.transform(data, [3, 1, 2])  # rows follow the order asked for
    np.testing.assert_allclose(X_train, by_hand([3, 1, 2], spec.variables, [1, 3]), rtol=1e-12, equal_nan=True)
    assert dropped == {"unknown_events": 0, "unknown_variables": [], "outside_window_events": 2}
    assert X_train.shape[1] == len(spec.feature_names) == 3 * len(STATS) + 1 + 2
    names = spec.feature_names
    # stay 1 never had Lactate: NaN everywhere but a count of 0; its last HR is the later simultaneous row
    lactate = X_train[1, names.index("Lactate:last") : names.index("Lactate:since_last") + 1]
    assert np.isnan(lactate[[0, 1, 2, 3, 4, 5, 7]]).all() and lactate[6] == 0
    assert X_train[1, names.index("HR:last")] == 85.0 and X_train[1, names.index("HR:count")] == 3

    # test time: Urine was never seen in training -> dropped, counted and logged, not silently kept
    with caplog.at_level(logging.WARNING, logger="hymate.models.summary_features"):
        X_test, dropped = spec.transform(data, [5, 4])
    np.testing.assert_allclose(X_test, by_hand([5, 4], spec.variables, [1, 3]), rtol=1e-12, equal_nan=True)
    assert dropped == {"unknown_events": 2, "unknown_variables": ["Urine"], "outside_window_events": 0}
    assert "dropped 2 events of 1 variables" in caplog.text and "Urine" in caplog.text
    assert not any("Urine" in n for n in names)
    assert (X_test[:, names.index("icu_type=1") :] == 0).all()  # categories 2 and 9 were not in training
    assert X_test[0, names.index("HR:count")] == 0 and np.isnan(X_test[0, names.index("HR:mean")])  # no events


def test_summary_features_function_takes_the_vocabulary_of_the_stays_it_is_given():
    data = make_data()
    X, names = summary_features(data, [1, 3], None, WINDOW, categorical=("icu_type",))
    assert [n.split(":")[0] for n in names[: 2 * len(STATS) : len(STATS)]] == ["HR", "Temp"]
    np.testing.assert_allclose(X, by_hand([1, 3], ["HR", "Temp"], [1]), equal_nan=True)
    X2, names2 = summary_features(data, [4], ["HR", "Temp"], WINDOW, ("icu_type",), {"icu_type": [1, 3]})
    np.testing.assert_allclose(X2, by_hand([4], ["HR", "Temp"], [1, 3]), equal_nan=True)
    assert names2 == names[:-1] + ["icu_type=1", "icu_type=3"]


# --- the baselines on a real P12 subset ---------------------------------------------------
LGBM_GRID = {"num_leaves": [15], "learning_rate": [0.1], "min_child_samples": [20], "feature_fraction": [0.5, 0.8]}
LOGREG_GRID = {"C": [1e-3, 1e-2], "class_weight": [None, "balanced"]}


@pytest.fixture(scope="module")
def small_split(p12):
    return subsample(make_splits(p12, "strats", 0)[0], n_train=2000, n_eval=1000, seed=0)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("model, grid", [("lightgbm", LGBM_GRID), ("logreg", LOGREG_GRID)])
def test_baseline_on_real_p12_reaches_auroc_and_writes_its_report(p12, small_split, tmp_path, model, grid):
    row = run_tabular(model, p12, P12_MORTALITY, small_split, 0, tmp_path, n_boot=50, grid=grid, num_threads=1)
    assert row["auroc"] > 0.75, row
    folder = tmp_path / model / "strats-split0-seed0"
    for name in ("metrics.json", "predictions.parquet", "summary.md", "roc.png", "pr.png", "calibration.png"):
        assert (folder / "report" / name).exists(), name
    assert (folder / "model" / ("lightgbm.txt" if model == "lightgbm" else "logreg.joblib")).exists()
    stored = json.loads((folder / "report" / "metrics.json").read_text())
    assert stored["row"] == row and set(stored["hyperparameters"]) >= set(grid)
    assert len(stored["grid_trials"]) == (2 if model == "lightgbm" else 4)
    assert stored["features"]["dropped"]["test"]["unknown_events"] == 0
    assert row["epochs"] is None and row["params"] > 0 and row["train_s"] > 0
    assert {"model", "protocol", "seed", "split", "wall_s", "peak_mb", "brier", "ece"} <= set(row)
    # a finished run is read back, never refitted
    mtime = (folder / "report" / "metrics.json").stat().st_mtime_ns
    assert run_tabular(model, p12, P12_MORTALITY, small_split, 0, tmp_path, grid=grid, resume=True) == row
    assert (folder / "report" / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.realdata
@pytest.mark.slow
def test_lightgbm_same_seed_gives_identical_predictions(p12, small_split, tmp_path):
    grid = {**LGBM_GRID, "feature_fraction": [0.5]}
    small = subsample(small_split, n_train=1000, n_eval=500, seed=1)

    def predictions(seed: int, where: str) -> pl.DataFrame:
        run_tabular("lightgbm", p12, P12_MORTALITY, small, seed, tmp_path / where, n_boot=10, grid=grid, num_threads=1)
        return pl.read_parquet(
            tmp_path / where / "lightgbm" / f"strats-split0-seed{seed}" / "report" / "predictions.parquet"
        )

    first = predictions(0, "a")
    assert first.equals(predictions(0, "b"))
    assert not first.equals(predictions(1, "c"))  # the seed does move feature sampling and bagging
