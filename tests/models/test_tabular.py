"""Summary features against a hand computation; the tabular models (`fit_tabular` / `TabularModel`)
on synthetic data of every label type; and tabular runs through `run_one` on a real P12 subset and
on a synthetic task with many predictions per stay."""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from hymate.data.schema import EventData
from hymate.errors import HymateError
from hymate.evaluate.metrics import METRICS_BY_TYPE, task_metrics
from hymate.evaluate.scores import DEFAULT_SELECTION, predictions, selection_score, uncalibrated
from hymate.models.summary_features import STATS, SummarySpec, summary_features
from hymate.models.tabular import LOGREG_GRID, RIDGE_GRID, TabularModel, fit_tabular, grid_points, lightgbm_params
from hymate.tasks.registry import get_task
from hymate.tasks.splits import make_splits, subsample
from hymate.train import estimators
from hymate.train.module import TrainConfig
from hymate.train.run import run_one
from tests.evaluate.test_report_meds import check_meds_predictions
from tests.models.test_hymate_hourly import hourly_data

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


# --- the models on synthetic features of every label type ---------------------------------
LGBM_GRID = {"num_leaves": [15], "learning_rate": [0.1], "min_child_samples": [20], "feature_fraction": [0.5, 0.8]}
N_CLASSES = {"binary": 1, "multiclass": 3, "regression": 1}


def synthetic_features(label_type: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Five features (with missing values), of which the first two carry the label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    signal = X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n)
    X[rng.random((n, 5)) < 0.1] = np.nan
    X[:, 0] = np.where(np.isnan(X[:, 0]), 0.0, X[:, 0])  # keep the main signal readable
    if label_type == "binary":
        return X, (signal > 0.3).astype(np.float64)
    if label_type == "multiclass":
        return X, np.digitize(signal, [-0.5, 0.5]).astype(np.float64)
    return X, 2.0 * signal + 10.0


@pytest.mark.parametrize("label_type", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("name", ["lightgbm", "logreg"])
def test_fit_tabular_picks_the_best_grid_point_on_validation_and_round_trips(name, label_type, tmp_path):
    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = (synthetic_features(label_type, n, s) for n, s in
                                                 ((600, 0), (300, 1), (300, 2)))  # fmt: skip
    grid = LGBM_GRID if name == "lightgbm" else None
    model = fit_tabular(name, label_type, N_CLASSES[label_type], X_tr, y_tr, X_va, y_va, seed=0, grid=grid, num_threads=1)
    assert isinstance(model, TabularModel) and (model.name, model.label_type) == (name, label_type)
    K = 3 if label_type == "multiclass" else 1
    raw = model.predict_raw(X_te)
    assert raw.shape == (len(X_te), K) and raw.dtype == np.float64 and np.isfinite(raw).all()
    # Every grid point is tried; the one kept is the best by the label type's validation score ...
    default = RIDGE_GRID if label_type == "regression" else LOGREG_GRID
    assert len(model.trials) == len(grid_points(grid or default))
    assert model.chosen == max(model.trials, key=lambda t: t["score"])
    assert set(model.chosen) >= set(grid or default)
    # ... and what predicts is that model (for LightGBM: cut at the chosen number of trees).
    again = selection_score(DEFAULT_SELECTION[label_type], label_type, y_va, uncalibrated(label_type, model.predict_raw(X_va)),
                            np.arange(len(y_va)))  # fmt: skip
    assert again["score"] == pytest.approx(model.chosen["score"], rel=1e-9)
    if name == "lightgbm":
        assert model.estimator.num_trees() == model.chosen["trees"] * K
    # It learnt the signal.
    m = task_metrics(label_type, y_te, uncalibrated(label_type, raw, {"mean": 0.0, "sd": 1.0}))
    if label_type == "binary":
        assert m["auroc"] > 0.9, m
    elif label_type == "multiclass":
        assert m["macro_auroc"] > 0.85 and m["accuracy"] > 0.6, m
    else:
        assert m["r2"] > 0.7, m
    assert model.n_params > 0
    model.save(tmp_path / "m")
    loaded = TabularModel.load(tmp_path / "m", name, label_type, X_te.shape[1])
    np.testing.assert_array_equal(loaded.predict_raw(X_te), raw)
    assert loaded.n_params == model.n_params
    assert not list((tmp_path / "m").glob("*.joblib"))  # logistic regression is arrays, never a pickle


def test_lightgbm_seed_moves_the_fit_and_the_same_seed_repeats_it():
    (X_tr, y_tr), (X_va, y_va) = synthetic_features("binary", 600, 0), synthetic_features("binary", 300, 1)
    grid = {**LGBM_GRID, "feature_fraction": [0.5]}

    def raw(seed: int) -> np.ndarray:
        return fit_tabular("lightgbm", "binary", 1, X_tr, y_tr, X_va, y_va, seed, grid, num_threads=1).predict_raw(X_va)

    first = raw(0)
    np.testing.assert_array_equal(first, raw(0))
    assert not np.array_equal(first, raw(1))


def test_unknown_tabular_model_is_refused():
    X, y = synthetic_features("binary", 50, 0)
    with pytest.raises(HymateError, match="unknown tabular model"):
        fit_tabular("xgboost", "binary", 1, X, y, X, y, seed=0)


# --- runs through run_one -------------------------------------------------------------------
@pytest.fixture
def one_thread(monkeypatch):
    """LightGBM on one thread: run_one's default two OpenMP threads spin while they wait, which on a
    busy CI machine makes a 3 s fit take ~40 s (see models/tabular.py). The thread count is no
    part of what these tests check (LightGBM is deterministic by its settings)."""
    monkeypatch.setattr(estimators, "fit_tabular", functools.partial(fit_tabular, num_threads=1))


@pytest.fixture(scope="module")
def mortality(p12):
    task = get_task("physionet2012", "mortality")
    view = task.view(p12)
    return task, view, subsample(make_splits(view, task, "strats", 0)[0], n_train=2000, n_eval=1000, seed=0)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("model, grid", [("lightgbm", LGBM_GRID), ("logreg", None)])
def test_baseline_on_real_p12_reaches_auroc_and_writes_its_report(mortality, tmp_path, one_thread, model, grid):
    task, view, split = mortality
    if grid is not None:
        task = replace(task, tabular_grid=grid)
    row = run_one(task, view, split, model, TrainConfig(seed=0), tmp_path, progress=False, n_boot=50)
    assert row["auroc"] > 0.75, row
    folder = tmp_path / "strats-split0-seed0"
    for name in ("metrics.json", "predictions.parquet", "summary.md", "roc.png", "pr.png", "calibration.png"):
        assert (folder / "report" / name).exists(), name
    assert check_meds_predictions(folder / "report").height == len(split.test)
    for name in ("config.json", "features.json", "lightgbm.txt" if model == "lightgbm" else "logreg.safetensors"):
        assert (folder / "checkpoint" / name).exists(), name
    stored = json.loads((folder / "report" / "metrics.json").read_text())
    assert stored["row"] == row and set(stored["hyperparameters"]) >= set(grid or LOGREG_GRID)
    assert len(stored["grid_trials"]) == len(grid_points(grid or LOGREG_GRID))
    assert stored["dropped_unknown_variable_events"]["test"] == 0
    assert stored["dropped_unknown_variable_events"]["val"]["unknown_events"] == 0
    assert stored["calibration"]["kind"] == "platt" and stored["decision"] is None
    assert row["epochs"] is None and row["params"] > 0 and row["train_s"] > 0
    assert {"model", "protocol", "seed", "split", "wall_s", "peak_mb", *METRICS_BY_TYPE["binary"]} <= set(row)
    assert (row["model"], row["task"], row["label_type"]) == (model, task.name, "binary")
    assert row["test_rows"] == row["test_stays"] == len(split.test) and row["train_stays"] == len(split.train)
    # One prediction per test stay, at 48 h; the saved checkpoint scores them again exactly.
    frame = pl.read_parquet(folder / "report" / "predictions.parquet")
    assert frame.get_column("stay_id").to_list() == list(split.test)
    assert (frame.get_column("prediction_time") == 48.0).all()
    estimator, loaded_task, meta = estimators.load_checkpoint(folder / "checkpoint")
    assert isinstance(estimator, estimators.TabularEstimator) and loaded_task.name == task.name
    rows, raw, _ = estimator.raw(view, split.test)
    assert rows.get_column("stay_id").to_list() == list(split.test)
    np.testing.assert_allclose(raw[:, 0], frame.get_column("logit").to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(predictions("binary", raw, meta["calibration"]), frame.get_column("probability").to_numpy())
    # a finished run is read back, never refitted
    mtime = (folder / "report" / "metrics.json").stat().st_mtime_ns
    assert run_one(task, view, split, model, TrainConfig(seed=0), tmp_path, progress=False, resume=True) == row
    assert (folder / "report" / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.realdata
@pytest.mark.slow
def test_lightgbm_same_seed_gives_identical_predictions(mortality, tmp_path, one_thread):
    task, view, split = mortality
    task = replace(task, tabular_grid={**LGBM_GRID, "feature_fraction": [0.5]})
    small = subsample(split, n_train=1000, n_eval=500, seed=1)

    def predictions_of(seed: int, where: str) -> pl.DataFrame:
        run_one(task, view, small, "lightgbm", TrainConfig(seed=seed), tmp_path / where, progress=False, n_boot=10)
        return pl.read_parquet(tmp_path / where / f"strats-split0-seed{seed}" / "report" / "predictions.parquet")

    first = predictions_of(0, "a")
    assert first.equals(predictions_of(0, "b"))
    assert not first.equals(predictions_of(1, "c"))  # the seed does move feature sampling and bagging


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("short", ["los-days", "los-bands"])
def test_logreg_on_real_p12_length_of_stay_tasks_beats_a_constant(p12, tmp_path, short):
    """Regression (ridge) and multiclass runs: the label type's metrics, prediction columns and
    report figures, and better than predicting the training mean / class frequencies."""
    task = get_task("physionet2012", short)
    view = task.view(p12)
    split = subsample(make_splits(view, task, "strats", 0)[0], n_train=1500, n_eval=600, seed=0)
    row = run_one(task, view, split, "logreg", TrainConfig(seed=0), tmp_path, progress=False, n_boot=20)
    kind = task.label_type
    assert set(METRICS_BY_TYPE[kind]) <= set(row) and row["label_type"] == kind
    folder = tmp_path / "strats-split0-seed0" / "report"
    frame = pl.read_parquet(folder / "predictions.parquet")
    labels = view.labels.select("stay_id", "label")
    y_train = pl.DataFrame({"stay_id": split.train}).join(labels, on="stay_id").get_column("label").to_numpy()
    y_test = frame.get_column("label").to_numpy()
    assert frame.height == len(split.test) and np.isfinite(y_test).all()
    if kind == "regression":
        assert (folder / "predicted.png").exists() and "prediction" in frame.columns
        # Ridge fits the conditional mean: it beats the training mean (on this heavy-tailed target a
        # constant median has the lower MAE, so that is no fair bar for a squared-error fit).
        constant = task_metrics(kind, y_test, np.full(len(y_test), y_train.mean()))
        assert row["r2"] > 0.02 and row["rmse"] < constant["rmse"] and row["mae"] < constant["mae"], row
        assert json.loads((folder / "metrics.json").read_text())["hyperparameters"].keys() >= {"alpha"}
    else:
        assert (folder / "confusion.png").exists() and (folder / "reliability.png").exists()
        proba = frame.select(f"p_{k}" for k in range(len(task.classes))).to_numpy()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert frame.get_column("predicted_class").to_list() == proba.argmax(axis=1).tolist()
        prior = np.bincount(y_train.astype(int), minlength=len(task.classes)) / len(y_train)
        constant = task_metrics(kind, y_test, np.tile(prior, (len(y_test), 1)))
        assert row["macro_auroc"] > 0.6 and row["accuracy"] > constant["accuracy"], row


# --- a task with many predictions per stay: causal running features -------------------------
def online_view():
    """A synthetic P19-like view (every stay-hour a label row) under the online sepsis task's settings."""
    task = replace(get_task("physionet2019", "sepsis-online"), build=lambda data: data)
    return task, task.view(hourly_data(seed=0, n_stays=40))


def test_lightgbm_run_on_many_predictions_per_stay_scores_every_test_row(tmp_path, one_thread):
    task, view = online_view()
    task = replace(task, tabular_grid={"num_leaves": [7], "learning_rate": [0.1], "min_child_samples": [5],
                                       "feature_fraction": [1.0]})  # fmt: skip
    split = make_splits(view, task, "kfold5", 0)[0]
    row = run_one(task, view, split, "lightgbm", TrainConfig(seed=0), tmp_path, progress=False, n_boot=10)
    test_rows = view.labels.filter(pl.col("stay_id").is_in(pl.Series(split.test).implode()))
    assert row["test_rows"] == test_rows.height > len(split.test)  # every labelled test hour
    assert {"utility", "threshold", "auroc", "ap"} <= set(row)
    frame = pl.read_parquet(tmp_path / "kfold5-split0-seed0" / "report" / "predictions.parquet")
    assert frame.select("stay_id", "prediction_time", "label").equals(test_rows.sort("stay_id", "prediction_time"))
    assert "alarm" in frame.columns
    features = json.loads((tmp_path / "kfold5-split0-seed0" / "checkpoint" / "features.json").read_text())
    assert features["kind"] == "running" and features["variables"] == ["HR", "Lactate", "MAP", "Temp"]


def test_logreg_run_on_a_task_with_a_lightgbm_grid(tmp_path):
    task, view = online_view()
    assert task.tabular_grid is not None  # the online task's own LightGBM grid
    split = make_splits(view, task, "kfold5", 0)[0]
    row = run_one(task, view, split, "logreg", TrainConfig(seed=0), tmp_path, progress=False, n_boot=10)
    meta = json.loads((tmp_path / "kfold5-split0-seed0" / "report" / "metrics.json").read_text())
    assert len(meta["grid_trials"]) == len(grid_points(LOGREG_GRID)) and row["model"] == "logreg"


def test_lightgbm_regression_grid_offers_the_l1_objective_and_mae_picks_it_on_skewed_targets():
    from hymate.models.tabular import LIGHTGBM_REGRESSION_GRID

    assert LIGHTGBM_REGRESSION_GRID["objective"] == ["regression", "regression_l1"]
    rng = np.random.default_rng(0)

    def skewed(n):  # a median that follows x, and rare huge values (a long-stay tail)
        X = rng.normal(size=(n, 3))
        y = 5 + 2 * X[:, 0] + rng.normal(size=n) * 0.5
        return X, np.where(rng.random(n) < 0.15, y + rng.exponential(60, size=n), y)

    (X_tr, y_tr), (X_va, y_va) = skewed(800), skewed(400)
    grid = {**LGBM_GRID, "feature_fraction": [0.8], "objective": ["regression", "regression_l1"]}
    model = fit_tabular("lightgbm", "regression", 1, X_tr, y_tr, X_va, y_va, seed=0, grid=grid, num_threads=1)
    by_objective = {t["objective"]: t["score"] for t in model.trials}
    assert by_objective["regression_l1"] > by_objective["regression"]  # neg MAE: higher is better
    assert model.chosen["objective"] == "regression_l1"
    params = lightgbm_params({"objective": "regression_l1"}, 0, label_type="regression")
    assert (params["objective"], params["metric"]) == ("regression_l1", "l1")


@pytest.mark.parametrize("label_type", ["binary", "multiclass", "regression"])
def test_linear_model_computes_what_the_scikit_learn_pipeline_computes(label_type, tmp_path):
    from hymate.models.tabular import LinearModel, logreg_pipeline

    (X_tr, y_tr), (X_te, _) = synthetic_features(label_type, 400, 0), synthetic_features(label_type, 200, 1)
    X_tr, X_te = X_tr.copy(), X_te.copy()
    X_tr[::7, 1] = np.nan  # a column with missing values (an indicator) ...
    X_te[::3, 1] = X_te[::5, 0] = np.nan  # ... and missing values where training had none
    pipe = logreg_pipeline(label_type, **({"alpha": 1.0} if label_type == "regression" else {"C": 0.1})).fit(X_tr, y_tr)
    linear = LinearModel.from_pipeline(pipe)
    ref = pipe.predict(X_te) if label_type == "regression" else pipe.decision_function(X_te)
    np.testing.assert_allclose(linear.decision_function(X_te).reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)
    if label_type != "regression":
        np.testing.assert_allclose(linear.predict_proba(X_te), pipe.predict_proba(X_te), rtol=1e-12, atol=1e-12)
    linear.save(tmp_path / "logreg.safetensors")
    again = LinearModel.load(tmp_path / "logreg.safetensors", X_te.shape[1])
    np.testing.assert_array_equal(again.decision_function(X_te), linear.decision_function(X_te))  # bitwise


def test_a_pickled_logreg_checkpoint_is_refused_with_a_retrain_message(tmp_path):
    from hymate.errors import CheckpointError

    (tmp_path / "logreg.joblib").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match=r"logreg\.joblib.*retrain"):
        TabularModel.load(tmp_path, "logreg", "binary", 3)
