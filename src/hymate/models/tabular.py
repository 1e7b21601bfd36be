"""Tabular baselines on per-stay summary features: LightGBM and logistic regression.

Both see the same features (`hymate.models.summary_features`: last, first, mean, min, max, sd,
count and time since last observation of every variable, plus statics), fitted on the training
stays. Hyper-parameters are chosen on the validation stays by AUROC + AP (the score HyMaTE's
early stopping uses); LightGBM also stops adding trees when validation AUROC has not improved for
`EARLY_STOPPING_ROUNDS` rounds. Platt scaling is then fitted on the validation predictions, and
test metrics get bootstrap CIs, as for HyMaTE (`hymate.train.run.run_one`), so the rows and
reports of both compare directly.

Run folder: ``<out>/<model>/<protocol>-split<k>-seed<s>/`` with ``model/`` (``lightgbm.txt``, a
LightGBM model text file, or ``logreg.joblib``; ``features.json``, the fitted feature map) and
``report/`` (metrics.json with the result row, chosen hyper-parameters and every grid point's
validation score; predictions.parquet; summary.md; plots).

Threads: LightGBM runs on `num_threads` OpenMP threads (2 by default, the most this project's
machines give it). On a machine busy with other work, OpenMP's default spin-waiting makes two
threads burn 50x the CPU time of one (measured: 109 s against 2 s for one fit); set
``OMP_WAIT_POLICY=passive`` in the environment before the process starts, or use one thread.
`train_s` is wall time; metrics.json also keeps the process CPU time of the fit (`train_cpu_s`).
"""

from __future__ import annotations

import itertools
import json
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError, HymateError
from hymate.evaluate.calibration import apply_platt, fit_platt
from hymate.evaluate.metrics import METRICS, binary_metrics, bootstrap_ci
from hymate.evaluate.report import write_report
from hymate.models.summary_features import SummarySpec
from hymate.tasks.base import Task
from hymate.tasks.splits import Split

MODELS = ("lightgbm", "logreg")
TITLES = {"lightgbm": "LightGBM", "logreg": "Logistic regression"}

LIGHTGBM_GRID = {
    "num_leaves": [15, 31, 63],
    "learning_rate": [0.03, 0.1],
    "min_child_samples": [20, 50],
    "feature_fraction": [0.5, 0.8],
}
LOGREG_GRID = {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0], "class_weight": [None, "balanced"]}
EARLY_STOPPING_ROUNDS = 50
MAX_ROUNDS = 2000
NUM_THREADS = 2  # the project's machines have 2 cores


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB). Same as run_one's."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _score(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    p = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))  # ranking metrics only: any monotone map will do
    m = binary_metrics(y, p)
    return {"auroc": m["auroc"], "ap": m["ap"], "score": m["auroc"] + m["ap"]}


# --- LightGBM -------------------------------------------------------------------------------
def lightgbm_params(point: dict, seed: int, num_threads: int = NUM_THREADS) -> dict:
    return {
        "objective": "binary", "metric": "auc", "verbosity": -1, "seed": seed,
        "deterministic": True, "force_row_wise": True, "num_threads": num_threads,
        "bagging_fraction": 0.8, "bagging_freq": 1,  # the seed moves bagging and feature sampling
        **point,
    }  # fmt: skip


def fit_lightgbm(X_tr, y_tr, X_va, y_va, seed: int, grid: dict | None = None, num_threads: int = NUM_THREADS):
    """Every grid point with early stopping on validation AUROC; returns (booster, chosen, trials)."""
    import lightgbm as lgb

    # One binned dataset for the whole grid (min_child_samples may change: no pre-filtering on it).
    dataset_params = {"verbosity": -1, "feature_pre_filter": False, "seed": seed}
    train_set = lgb.Dataset(X_tr, label=y_tr, params=dataset_params, free_raw_data=False).construct()
    val_set = lgb.Dataset(X_va, label=y_va, reference=train_set, params=dataset_params, free_raw_data=False).construct()
    best, trials = None, []
    for point in grid_points(grid or LIGHTGBM_GRID):
        params = lightgbm_params(point, seed, num_threads)
        booster = lgb.train(
            params, train_set, num_boost_round=MAX_ROUNDS, valid_sets=[val_set],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False)],
        )  # fmt: skip
        score = _score(y_va, booster.predict(X_va, num_iteration=booster.best_iteration, raw_score=True))
        trials.append({**point, "trees": booster.best_iteration, **score})
        if best is None or score["score"] > best[1]["score"]:
            best = (booster, trials[-1])
    return best[0], best[1], trials


# --- logistic regression --------------------------------------------------------------------
def logreg_pipeline(C: float, class_weight: str | None):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(C=C, class_weight=class_weight, max_iter=5000),  # L2 (the default), lbfgs
    )


def fit_logreg(X_tr, y_tr, X_va, y_va, grid: dict | None = None):
    """Every grid point (C x class weight); returns (pipeline, chosen, trials). Deterministic.

    BLAS runs on one thread: lbfgs makes many small matrix products, and two OpenBLAS threads on
    a busy 2-core machine made a fit 5-30x slower than one thread (and results may differ in the
    last bits between thread counts).
    """
    from threadpoolctl import threadpool_limits

    best, trials = None, []
    with threadpool_limits(limits=1, user_api="blas"):
        for point in grid_points(grid or LOGREG_GRID):
            pipe = logreg_pipeline(**point).fit(X_tr, y_tr)
            score = _score(y_va, pipe.decision_function(X_va))
            trials.append({**point, **score})
            if best is None or score["score"] > best[1]["score"]:
                best = (pipe, trials[-1])
    return best[0], best[1], trials


# --- one run --------------------------------------------------------------------------------
def stay_labels(data: EventData, stay_ids) -> np.ndarray:
    ids = pl.DataFrame({"stay_id": np.asarray(stay_ids, dtype=np.int64)})
    labels = data.labels.unique("stay_id", keep="first", maintain_order=True)
    joined = ids.join(labels, on="stay_id", how="left", maintain_order="left")
    if joined.get_column("label").null_count():
        raise DataError(f"{joined.get_column('label').null_count()} stays of the split have no label")
    return joined.get_column("label").to_numpy().astype(np.int64)


def run_tabular(
    model_name: str,
    data: EventData,
    task: Task,
    split: Split,
    seed: int,
    out: Path,
    n_boot: int = 1000,
    resume: bool = False,
    grid: dict | None = None,
    num_threads: int = NUM_THREADS,
    model_subfolder: bool = True,
) -> dict:
    """Fit on split.train, tune and calibrate on split.val, report on split.test; the result row.

    The row has run_one's keys (epochs and best_epoch are None) plus train_s (fitting and tuning
    time); `params` is the number of leaves over all trees (LightGBM) or of coefficients plus the
    intercept (logistic regression). The run folder is `<out>/<model>/<protocol>-split<k>-seed<s>`,
    or `<out>/<protocol>-split<k>-seed<s>` without `model_subfolder` (as `hymate train` lays out runs).
    """
    if model_name not in MODELS:
        raise HymateError(f"unknown tabular model {model_name!r}; known: {', '.join(MODELS)}")
    start = time.perf_counter()
    folder = (Path(out) / model_name if model_subfolder else Path(out)) / f"{split.protocol}-split{split.index}-seed{seed}"
    done = folder / "report" / "metrics.json"
    if resume and done.exists():  # finished earlier: never redo a run
        return json.loads(done.read_text())["row"]

    spec = SummarySpec.fit(data, split.train, task.window_hours, task.categorical_statics)
    X, y, dropped = {}, {}, {}
    for part in ("train", "val", "test"):
        X[part], dropped[part] = spec.transform(data, getattr(split, part))
        y[part] = stay_labels(data, getattr(split, part))

    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "features.json").write_text(spec.to_json())
    if model_name == "lightgbm":
        import lightgbm

        model, chosen, trials = fit_lightgbm(X["train"], y["train"], X["val"], y["val"], seed, grid, num_threads)
        train_s, train_cpu_s = time.perf_counter() - fit_start, time.process_time() - fit_cpu
        logits = {p: model.predict(X[p], num_iteration=model.best_iteration, raw_score=True) for p in ("val", "test")}
        model.save_model(folder / "model" / "lightgbm.txt", num_iteration=model.best_iteration)
        trees = model.dump_model(num_iteration=model.best_iteration)["tree_info"]
        n_params = int(sum(t["num_leaves"] for t in trees))
        versions = {"lightgbm": lightgbm.__version__}
    else:
        import joblib
        import sklearn

        model, chosen, trials = fit_logreg(X["train"], y["train"], X["val"], y["val"], grid)
        train_s, train_cpu_s = time.perf_counter() - fit_start, time.process_time() - fit_cpu
        logits = {p: model.decision_function(X[p]) for p in ("val", "test")}
        joblib.dump(model, folder / "model" / "logreg.joblib")
        clf = model[-1]
        n_params = int(clf.coef_.size + clf.intercept_.size)
        versions = {"scikit-learn": sklearn.__version__}

    a, b = fit_platt(logits["val"], y["val"])
    probs = apply_platt(logits["test"], a, b)
    metrics = binary_metrics(y["test"], probs)
    ci = bootstrap_ci(y["test"], probs, n_boot=n_boot, seed=seed)
    val_metrics = binary_metrics(y["val"], apply_platt(logits["val"], a, b))
    row = {
        "model": model_name, "protocol": split.protocol, "seed": seed, "split": split.index,
        **{k: metrics[k] for k in METRICS},
        "wall_s": round(time.perf_counter() - start, 1), "peak_mb": round(peak_rss_mb(), 1),
        "epochs": None, "best_epoch": None, "params": n_params, "train_s": round(train_s, 2),
        "threads": num_threads if model_name == "lightgbm" else 1,  # logreg: one BLAS thread (see fit_logreg)
    }  # fmt: skip
    meta = {
        "task": task.name, "split": split.name, "split_sha256": split.sha256,
        "stays": {p: len(getattr(split, p)) for p in ("train", "val", "test")},
        "train_cpu_s": round(train_cpu_s, 2), "hyperparameters": chosen, "grid": grid or (LIGHTGBM_GRID if model_name == "lightgbm" else LOGREG_GRID),
        "grid_trials": trials, "calibration": {"a": a, "b": b}, "val_metrics": val_metrics,
        "features": {"n": len(spec.feature_names), "variables": len(spec.variables), "dropped": dropped},
        "num_threads": num_threads if model_name == "lightgbm" else None, "versions": versions,
    }  # fmt: skip
    write_report(
        folder / "report", f"{TITLES[model_name]} on summary features, {task.name}, {split.name}",
        np.asarray(split.test, dtype=np.int64), y["test"], probs, metrics, ci, {"row": row, **meta}, None,
    )  # fmt: skip
    return row
