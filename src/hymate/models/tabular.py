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


class LinearModel:
    """A fitted logistic (or ridge) regression pipeline as plain arrays, saved as safetensors (a
    pickle would run whatever bytes a checkpoint holds): median imputation with missing indicators,
    standardisation, then a linear layer. It computes what the scikit-learn pipeline computes, in
    the same order of operations."""

    ARRAYS = ("medians", "indicators", "mean", "scale", "coef", "intercept", "classes")

    def __init__(self, medians, indicators, mean, scale, coef, intercept, classes) -> None:
        self.medians = np.asarray(medians, dtype=np.float64)  # [F]; NaN: all missing in training (column dropped)
        self.indicators = np.asarray(indicators, dtype=np.int64)  # columns with a missing indicator, appended
        self.mean, self.scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)  # [F']
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)  # [K, F'] (ridge: K = 1)
        self.intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)  # [K]
        self.classes = np.asarray(classes, dtype=np.float64)  # LogisticRegression.classes_; empty for ridge

    @classmethod
    def from_pipeline(cls, pipe) -> LinearModel:
        imputer, scaler, last = pipe[0], pipe[1], pipe[-1]
        indicators = imputer.indicator_.features_ if imputer.indicator_ is not None else []
        return cls(imputer.statistics_, indicators, scaler.mean_, scaler.scale_, np.atleast_2d(last.coef_),
                   np.atleast_1d(last.intercept_), getattr(last, "classes_", []))  # fmt: skip

    @property
    def n_features(self) -> int:
        return len(self.medians)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64)  # a copy: imputed in place
        missing = np.isnan(X)
        keep = ~np.isnan(self.medians)
        X = X[:, keep]
        rows, cols = np.nonzero(missing[:, keep])
        X[rows, cols] = self.medians[keep][cols]
        X = np.hstack((X, missing[:, self.indicators]))
        X -= self.mean
        X /= self.scale
        return X

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw scores [N, K]: logits (binary K = 1), class scores, or ridge values."""
        return self.transform(X) @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [N, C], as LogisticRegression.predict_proba."""
        from scipy.special import expit, softmax

        scores = self.decision_function(X)
        if scores.shape[1] == 1:
            p = expit(scores[:, 0])
            return np.column_stack((1 - p, p))
        return softmax(scores, axis=1)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(getattr(self, k)) for k in self.ARRAYS}, str(path))

    @classmethod
    def load(cls, path: Path, n_features: int) -> LinearModel:
        """The model in `path`, checked against `n_features` (the features.json beside it)."""
        from hymate.errors import CheckpointError
        from hymate.train.checkpoint_schema import read_weights

        arrays = {k: v.numpy() for k, v in read_weights(path).items()}
        absent = [k for k in cls.ARRAYS if k not in arrays]
        if absent:
            raise CheckpointError(f"{path}: missing arrays {', '.join(absent)}")
        model = cls(**{k: arrays[k] for k in cls.ARRAYS})
        width = int((~np.isnan(model.medians)).sum()) + len(model.indicators)
        shapes_fit = (model.coef.ndim == 2 and model.coef.shape[1] == width == len(model.mean) == len(model.scale)
                      and len(model.intercept) == model.coef.shape[0] and (model.indicators < n_features).all())  # fmt: skip
        if model.n_features != n_features or not shapes_fit:
            raise CheckpointError(f"{path}: arrays of shapes {({k: list(v.shape) for k, v in arrays.items()})} do not fit "
                                  f"{n_features} features")  # fmt: skip
        return model


class TabularModel:
    """A fitted LightGBM booster or a LinearModel with `predict_raw(X) -> [N, K]`."""

    def __init__(self, name: str, label_type: str, estimator, chosen: dict | None = None, trials: list | None = None):
        self.name, self.label_type, self.estimator = name, label_type, estimator
        self.chosen, self.trials = chosen or {}, trials or []

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        if self.name == "lightgbm":
            out = self.estimator.predict(X, raw_score=True)
        else:
            out = self.estimator.decision_function(X)
        out = np.asarray(out, dtype=np.float64)
        return out.reshape(len(X), -1)

    @property
    def n_params(self) -> int:
        if self.name == "lightgbm":
            return int(sum(t["num_leaves"] for t in self.estimator.dump_model()["tree_info"]))
        return int(np.size(self.estimator.coef) + np.size(self.estimator.intercept))

    def save(self, folder: Path) -> None:
        from hymate.io import atomic_path

        folder.mkdir(parents=True, exist_ok=True)
        name = "lightgbm.txt" if self.name == "lightgbm" else "logreg.safetensors"
        with atomic_path(folder / name) as tmp:
            self.estimator.save_model(tmp) if self.name == "lightgbm" else self.estimator.save(tmp)

    @classmethod
    def load(cls, folder: Path, name: str, label_type: str, n_features: int) -> TabularModel:
        """The model saved in `folder`, for `n_features` features; an unreadable one is a CheckpointError."""
        from hymate.errors import CheckpointError

        if name != "lightgbm":
            if (folder / "logreg.joblib").exists() and not (folder / "logreg.safetensors").exists():
                raise CheckpointError(f"{folder / 'logreg.joblib'}: a pickled model of an older hymate, which this one "
                                      "does not unpickle (pickles run code): retrain it")  # fmt: skip
            return cls(name, label_type, LinearModel.load(folder / "logreg.safetensors", n_features))
        import lightgbm

        path = folder / "lightgbm.txt"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (an incomplete checkpoint)")
        try:
            booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as exc:
            raise CheckpointError(f"{path}: not a readable LightGBM model ({str(exc).splitlines()[0][:120]})") from None
        if booster.num_feature() != n_features:
            raise CheckpointError(f"{path}: a model of {booster.num_feature()} features, but features.json describes {n_features}")
        return cls(name, label_type, booster)


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
            model = TabularModel("logreg", label_type, LinearModel.from_pipeline(pipe))
            score = _score(label_type, y_va, model.predict_raw(X_va))
            trials.append({**point, **score})
            if best is None or score["score"] > best[1]["score"]:
                best = (model.estimator, trials[-1])
    return TabularModel("logreg", label_type, best[0], best[1], trials)
