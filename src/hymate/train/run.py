"""One run end to end for every task and model (fit, select on validation, calibrate, choose a
decision threshold, test, report), and experiments of several runs with a summary across them.

Layout of a run folder::

    <out>/<protocol>-split<k>-seed<s>/
        checkpoint/         config.json + the model (see train.estimators): all `predict` needs
        lightning/          last.ckpt (resume) and best.ckpt (neural models)
        logs/               metrics.csv (training curves; neural models)
        report/             metrics.json (the result row, CIs, settings), predictions.parquet, summary.md, *.png

The result row is the same for every task and model: task, label_type, protocol, split, seed,
model, the label type's metrics (+ the decision metric), and costs (wall, train and scoring
seconds, epochs, peak memory, parameters, threads, stays per part). Its presence in
report/metrics.json marks the run done: `resume` never redoes it.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch

from hymate.data.schema import EventData
from hymate.errors import DataError, HymateError
from hymate.evaluate.metrics import METRICS_BY_TYPE, summarise_runs
from hymate.evaluate.report import METRIC_LABELS, meaning_lines, write_report
from hymate.evaluate.scores import (
    choose_threshold,
    decision_metrics,
    evaluate_rows,
    fit_calibration,
    prediction_frame,
    predictions,
)
from hymate.io import exclusive, write_atomic
from hymate.tasks.base import Task
from hymate.tasks.splits import Split
from hymate.train.estimators import make_estimator
from hymate.train.module import TrainConfig


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_folder(out: Path, split: Split, seed: int) -> Path:
    return Path(out) / f"{split.protocol}-split{split.index}-seed{seed}"


def run_lock(folder: Path) -> Path:
    """The lock of a run folder, `<out>/.locks/<run>.lock`: two processes on one run take turns."""
    return Path(folder).parent / ".locks" / f"{Path(folder).name}.lock"


def finished_row(folder: Path) -> dict | None:
    path = Path(folder) / "report" / "metrics.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["row"]
    except (ValueError, KeyError):
        return None  # an unreadable report is redone, not trusted


def claim_folder(folder: Path, identity: dict, resume: bool) -> None:
    """Record what a run folder holds (run.json), so a folder of another task, model or settings is
    never resumed or read back as this run's result: that is an error; without `resume` it is replaced."""
    identity = json.loads(json.dumps(identity, default=str))
    stored = folder / "run.json"
    if stored.exists():
        try:
            same = json.loads(stored.read_text()) == identity
        except ValueError:
            same = False
        if not same:
            if resume:
                raise HymateError(f"{folder} holds a run of other settings (see {stored}): use another --out, "
                                  "or --no-resume to replace it")  # fmt: skip
            shutil.rmtree(folder)
    elif not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(stored, json.dumps(identity, indent=1))


def check_validation(task: Task, view: EventData, split: Split) -> None:
    """Selection and calibration need both classes among the validation labels."""
    if task.label_type == "regression":
        return
    y = view.labels.filter(pl.col("stay_id").is_in(pl.Series(split.val, dtype=pl.Int64).implode())).get_column("label").drop_nulls()
    if y.n_unique() < 2:
        raise DataError(f"the validation stays of {split.name} ({len(split.val):,}) have labels of one class only: "
                        "use more validation stays (--eval-stays)")  # fmt: skip


def run_one(
    task: Task,
    view: EventData,
    split: Split,
    model_name: str,
    train: TrainConfig,
    out: Path,
    model_options: dict | None = None,
    progress: bool = True,
    resume: bool = True,
    n_boot: int | None = None,
) -> dict:
    """Train `model_name` on split.train, select on split.val, report on split.test; the result row.
    A second process on the same run waits for the first (`run_lock`), then finds its finished run."""
    folder = run_folder(out, split, train.seed)
    with exclusive(run_lock(folder), f"the run folder {folder}"):
        return _run_one(task, view, split, model_name, train, folder, model_options, progress, resume, n_boot)


def _run_one(task, view, split, model_name, train, folder, model_options, progress, resume, n_boot) -> dict:
    start = time.perf_counter()
    # How long it trains may change on a resume (train an interrupted run further); what it learns from may not.
    settings = {k: v for k, v in train.to_dict().items() if k not in ("max_epochs", "patience", "limit_train_batches")}
    claim_folder(folder, {"task": task.name, "model": model_name, "split_sha256": split.sha256,
                          "train": settings, "model_options": model_options or {}}, resume)  # fmt: skip
    if resume and (row := finished_row(folder)) is not None:
        return row
    check_validation(task, view, split)
    L.seed_everything(train.seed, workers=True, verbose=False)
    estimator = make_estimator(model_name, task, train, model_options)
    fit = estimator.fit(view, split, folder, progress, resume)

    kind = task.label_type
    val_rows, val_raw, _ = estimator.raw(view, split.val, progress=progress)
    score_start = time.perf_counter()
    test_rows, test_raw, test_dropped = estimator.raw(view, split.test, progress=progress)
    score_s = time.perf_counter() - score_start
    target = getattr(estimator, "target", None)
    y_val, val_ids = _labelled(val_rows)
    calibration = fit_calibration(kind, _pick(val_raw, val_rows), y_val) if kind != "regression" else {"kind": "none"}
    p_val = predictions(kind, _pick(val_raw, val_rows), calibration, target)
    test_pred = predictions(kind, test_raw, calibration, target)
    keep = test_rows.get_column("label").is_not_null().to_numpy()
    y_test, test_ids = test_rows.get_column("label").to_numpy()[keep], test_rows.get_column("stay_id").to_numpy()[keep]
    boot = n_boot if n_boot is not None else (1000 if len(np.unique(test_ids)) == len(test_ids) else 200)
    metrics, ci = evaluate_rows(kind, y_test, test_pred[keep], test_ids, n_boot=boot, seed=train.seed)
    val_metrics, _ = evaluate_rows(kind, y_val, p_val, val_ids, n_boot=0)
    decision = None
    if task.threshold_metric:
        decision = choose_threshold(task.threshold_metric, val_ids, y_val, p_val)
        metrics.update(decision_metrics(decision, test_ids, y_test, test_pred[keep]))
    wall = time.perf_counter() - start + fit.earlier_s  # + the training time of earlier processes
    history = _history(folder)
    row = {
        "task": task.name, "label_type": kind, "protocol": split.protocol, "split": split.index, "seed": train.seed,
        "model": model_name, **{k: metrics[k] for k in METRICS_BY_TYPE[kind]},
        **({task.threshold_metric: metrics[task.threshold_metric], "threshold": decision["threshold"]} if decision else {}),
        "wall_s": round(wall, 1), "train_s": round(fit.train_s, 1), "score_s": round(score_s, 2),
        "epochs": fit.epochs, "best_epoch": _best_epoch(history),
        "epoch_s": round(fit.train_s / fit.epochs, 1) if fit.epochs else None,
        "peak_mb": round(peak_rss_mb(), 1), "params": estimator.n_params, "threads": torch.get_num_threads(),
        "resumed": fit.resumed, "train_stays": len(split.train), "val_stays": len(split.val),
        "test_stays": len(split.test), "test_rows": int(keep.sum()),
    }  # fmt: skip
    meta = {
        "task": task.name, "label_type": kind, "classes": list(task.classes), "positive_label": task.positive_label if kind == "binary" else None,
        "split": split.name,
        "split_sha256": split.sha256, "calibration": calibration, "decision": decision, "train": train.to_dict(),
        "model_options": getattr(estimator, "model_options", None), "val_metrics": val_metrics,
        "dropped_unknown_variable_events": {**getattr(estimator, "dropped", {}), "test": test_dropped},
        "vocabulary": _vocabulary(estimator),
        **(fit.extra or {}),
    }  # fmt: skip
    estimator.save(folder / "checkpoint", meta)  # atomic: all there or not there
    frame = prediction_frame(task, test_rows, test_raw, test_pred, decision)
    write_report(folder / "report", f"{model_name} on {task.name}, {split.name}", task, frame, metrics, ci,
                 {"row": row, **meta}, history)  # fmt: skip
    return row


def _labelled(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    keep = rows.get_column("label").is_not_null()
    return rows.filter(keep).get_column("label").to_numpy(), rows.filter(keep).get_column("stay_id").to_numpy()


def _pick(raw: np.ndarray, rows: pl.DataFrame) -> np.ndarray:
    return raw[rows.get_column("label").is_not_null().to_numpy()]


def run_experiment(
    task: Task,
    view: EventData,
    splits: list[Split],
    seeds: list[int],
    model_name: str,
    train: TrainConfig,
    out: Path,
    model_options: dict | None = None,
    progress: bool = True,
    resume: bool = True,
) -> list[dict]:
    """Every (split, seed) run, then `summary.json` and `summary.md` across them in `out`."""
    rows = [run_one(task, view, split, model_name, replace(train, seed=seed), out, model_options, progress, resume)
            for split in splits for seed in seeds]  # fmt: skip
    keys = (*METRICS_BY_TYPE[task.label_type], *((task.threshold_metric,) if task.threshold_metric else ()), "wall_s")
    summary = summarise_runs(rows, keys)
    write_atomic(Path(out) / "summary.json", json.dumps({"runs": rows, "summary": summary}, indent=1))
    write_atomic(Path(out) / "summary.md", summary_markdown(task, model_name, rows, summary, out))
    return rows


def summary_markdown(task: Task, model_name: str, rows: list[dict], summary: dict, out: Path) -> str:
    """The run folder's summary: one run as value and bootstrap CI (like its own report), several
    as mean ± sd across runs; the metrics' names and meanings as in the per-run reports."""
    folders = [f"{r['protocol']}-split{r['split']}-seed{r['seed']}" for r in rows]
    lines = [f"# {model_name} on {task.name} (test)", ""]
    if len(rows) == 1:
        report = Path(out) / folders[0] / "report" / "metrics.json"
        ci = json.loads(report.read_text()).get("ci95", {}) if report.exists() else {}
        lines += ["| metric | value | 95 % CI (bootstrap) |", "|---|---|---|"]
        for k, v in summary.items():
            lo, hi = ci.get(k, (None, None))
            band = f"{lo:.4f} to {hi:.4f}" if lo is not None else ""
            lines.append(f"| {METRIC_LABELS.get(k, k)} | {v['mean']:.1f} | |" if k == "wall_s" else
                         f"| {METRIC_LABELS.get(k, k)} | {v['mean']:.4f} | {band} |")  # fmt: skip
    else:
        lines += [f"| metric | mean ± sd across {len(rows)} runs |", "|---|---|"]
        lines += [f"| {METRIC_LABELS.get(k, k)} | {v['mean']:.1f} ± {v['sd']:.1f} |" if k == "wall_s" else
                  f"| {METRIC_LABELS.get(k, k)} | {v['mean']:.4f} ± {v['sd']:.4f} |" for k, v in summary.items()]  # fmt: skip
    lines += meaning_lines(summary)
    lines += ["", "Per-run reports (with CIs and plots): " + ", ".join(f"`{f}/report`" for f in folders)]
    return "\n".join(lines) + "\n"


def _history(folder: Path) -> pl.DataFrame | None:
    path = folder / "logs" / "metrics.csv"
    if not path.exists():
        return None
    frame = pl.read_csv(path, infer_schema_length=None)
    cols = [c for c in frame.columns if c == "epoch" or c == "train/loss" or c.startswith("val/")]
    return frame.select(cols).group_by("epoch").agg(pl.all().drop_nulls().first()).sort("epoch")


def _best_epoch(history: pl.DataFrame | None) -> int | None:
    if history is None or "val/score" not in history.columns:
        return None
    score = history.get_column("val/score").fill_null(-np.inf).to_numpy()
    return int(history.get_column("epoch")[int(np.argmax(score))])


def _vocabulary(estimator) -> dict | None:
    """What the model can tell apart: its codes, and the rare training codes folded into "other" tokens."""
    normalizer = getattr(estimator, "normalizer", None)
    if normalizer is None:
        return None
    return {"codes": normalizer.n_variables, "min_count": normalizer.min_count,
            "rare_codes_folded": normalizer.rare_codes, "rare_events_folded": normalizer.rare_events}  # fmt: skip
