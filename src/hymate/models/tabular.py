"""Tabular models on per-sample features: LightGBM and logistic regression, behind one fit / predict.

Both see the same features (per-stay summaries, `summary_features`, for tasks with one prediction
per stay; causal running features, `running_features`, for tasks with many), fitted on the
training stays. Hyper-parameters are chosen on the validation rows by the label type's ranking
score (binary AUROC + AP, multiclass macro AUROC, regression -MAE: see `evaluate.scores`);
LightGBM also stops adding trees when its validation metric (AUROC, multiclass log-loss, L2) has
not improved for `EARLY_STOPPING_ROUNDS` rounds. Outputs are raw scores [N, K] like a neural
model's: a logit (binary), K class scores (multiclass) or a value (regression; "logreg" then
means ridge regression on the same standardised features).

Threads: LightGBM runs on `num_threads` OpenMP threads (2 by default, the most this project's
machines give it). On a machine busy with other work, OpenMP's default spin-waiting makes two
threads burn 50x the CPU time of one (measured: 109 s against 2 s for one fit); set
``OMP_WAIT_POLICY=passive`` in the environment before the process starts, or use one thread.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from hymate.errors import HymateError
from hymate.evaluate.scores import DEFAULT_SELECTION, selection_score, uncalibrated

MODELS = ("lightgbm", "logreg")
TITLES = {"lightgbm": "LightGBM", "logreg": "Logistic regression"}
LIGHTGBM_GRID = {
    "num_leaves": [15, 31, 63],
    "learning_rate": [0.03, 0.1],
    "min_child_samples": [20, 50],
    "feature_fraction": [0.5, 0.8],
}
# Regression is selected by validation MAE: the grid also offers LightGBM's L1 objective (which
# fits medians) beside its L2 one (means), and lets the selection choose.
LIGHTGBM_REGRESSION_GRID = {**LIGHTGBM_GRID, "objective": ["regression", "regression_l1"]}
LOGREG_GRID = {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0], "class_weight": [None, "balanced"]}
RIDGE_GRID = {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]}
EARLY_STOPPING_ROUNDS = 50
MAX_ROUNDS = 2000
NUM_THREADS = 2  # the project's machines have 2 cores
_OBJECTIVE = {"binary": ("binary", "auc"), "multiclass": ("multiclass", "multi_logloss"), "regression": ("regression", "l2")}
_METRIC_OF = {"regression": "l2", "regression_l1": "l1"}  # early stopping follows the objective


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _score(label_type: str, y: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    """The grid's validation score (uncalibrated predictions: ranking and MAE do not need calibration)."""
    pred = uncalibrated(label_type, raw)
    return selection_score(DEFAULT_SELECTION[label_type], label_type, y, pred, np.arange(len(y)))


class TabularModel:
    """A fitted LightGBM booster or scikit-learn pipeline with `predict_raw(X) -> [N, K]`."""

    def __init__(self, name: str, label_type: str, estimator, chosen: dict | None = None, trials: list | None = None):
        self.name, self.label_type, self.estimator = name, label_type, estimator
        self.chosen, self.trials = chosen or {}, trials or []

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        if self.name == "lightgbm":
            out = self.estimator.predict(X, raw_score=True)
        elif self.label_type == "regression":
            out = self.estimator.predict(X)
        else:
            out = self.estimator.decision_function(X)
        out = np.asarray(out, dtype=np.float64)
        return out.reshape(len(X), -1)

    @property
    def n_params(self) -> int:
        if self.name == "lightgbm":
            return int(sum(t["num_leaves"] for t in self.estimator.dump_model()["tree_info"]))
        last = self.estimator[-1]
        return int(np.size(last.coef_) + np.size(last.intercept_))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if self.name == "lightgbm":
            self.estimator.save_model(folder / "lightgbm.txt")
        else:
            import joblib

            joblib.dump(self.estimator, folder / "logreg.joblib")

    @classmethod
    def load(cls, folder: Path, name: str, label_type: str) -> TabularModel:
        if name == "lightgbm":
            import lightgbm

            return cls(name, label_type, lightgbm.Booster(model_file=str(folder / "lightgbm.txt")))
        import joblib  # a checkpoint folder the user made: joblib unpickles, so load only your own

        return cls(name, label_type, joblib.load(folder / "logreg.joblib"))


def fit_tabular(name: str, label_type: str, n_classes: int, X_tr, y_tr, X_va, y_va, seed: int,
                grid: dict | None = None, num_threads: int = NUM_THREADS) -> TabularModel:  # fmt: skip
    if name == "lightgbm":
        return fit_lightgbm(label_type, n_classes, X_tr, y_tr, X_va, y_va, seed, grid, num_threads)
    if name == "logreg":
        return fit_logreg(label_type, X_tr, y_tr, X_va, y_va, grid)
    raise HymateError(f"unknown tabular model {name!r}; known: {', '.join(MODELS)}")


def lightgbm_params(point: dict, seed: int, num_threads: int = NUM_THREADS, label_type: str = "binary",
                    n_classes: int = 2) -> dict:  # fmt: skip
    objective, metric = _OBJECTIVE[label_type]
    if "objective" in point:
        metric = _METRIC_OF.get(point["objective"], metric)
    return {
        "objective": objective, "metric": metric, "verbosity": -1, "seed": seed,
        "deterministic": True, "force_row_wise": True, "num_threads": num_threads,
        "bagging_fraction": 0.8, "bagging_freq": 1,  # the seed moves bagging and feature sampling
        **({"num_class": n_classes} if label_type == "multiclass" else {}),
        **point,
    }  # fmt: skip


def fit_lightgbm(label_type, n_classes, X_tr, y_tr, X_va, y_va, seed: int, grid: dict | None = None,
                 num_threads: int = NUM_THREADS) -> TabularModel:  # fmt: skip
    """Every grid point with early stopping on validation; the best by the validation score."""
    import lightgbm as lgb

    # One binned dataset for the whole grid (min_child_samples may change: no pre-filtering on it).
    dataset_params = {"verbosity": -1, "feature_pre_filter": False, "seed": seed}
    train_set = lgb.Dataset(X_tr, label=y_tr, params=dataset_params, free_raw_data=False).construct()
    val_set = lgb.Dataset(X_va, label=y_va, reference=train_set, params=dataset_params, free_raw_data=False).construct()
    best, trials = None, []
    default = LIGHTGBM_REGRESSION_GRID if label_type == "regression" else LIGHTGBM_GRID
    for point in grid_points(grid or default):
        params = lightgbm_params(point, seed, num_threads, label_type, n_classes)
        booster = lgb.train(
            params, train_set, num_boost_round=MAX_ROUNDS, valid_sets=[val_set],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False)],
        )  # fmt: skip
        raw = np.asarray(booster.predict(X_va, num_iteration=booster.best_iteration, raw_score=True)).reshape(len(X_va), -1)
        score = _score(label_type, y_va, raw)
        trials.append({**point, "trees": booster.best_iteration, **score})
        if best is None or score["score"] > best[1]["score"]:
            best = (booster, trials[-1])
    booster = best[0]
    # Keep the chosen number of trees only (what predict and the saved model use).
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    return TabularModel("lightgbm", label_type, booster, best[1], trials)


def logreg_pipeline(label_type: str, **point):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    last = Ridge(**point) if label_type == "regression" else LogisticRegression(**point, max_iter=5000)  # L2, lbfgs
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), last)


def fit_logreg(label_type, X_tr, y_tr, X_va, y_va, grid: dict | None = None) -> TabularModel:
    """Every grid point (C x class weight; ridge's alpha for regression). Deterministic.

    BLAS runs on one thread: lbfgs makes many small matrix products, and two OpenBLAS threads on
    a busy 2-core machine made a fit 5-30x slower than one thread (and results may differ in the
    last bits between thread counts).
    """
    from threadpoolctl import threadpool_limits

    best, trials = None, []
    default = RIDGE_GRID if label_type == "regression" else LOGREG_GRID
    with threadpool_limits(limits=1, user_api="blas"):
        for point in grid_points(grid or default):
            pipe = logreg_pipeline(label_type, **point).fit(X_tr, y_tr)
            model = TabularModel("logreg", label_type, pipe)
            score = _score(label_type, y_va, model.predict_raw(X_va))
            trials.append({**point, **score})
            if best is None or score["score"] > best[1]["score"]:
                best = (pipe, trials[-1])
    return TabularModel("logreg", label_type, best[0], best[1], trials)
