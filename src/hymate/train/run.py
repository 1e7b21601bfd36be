"""One training run end to end (fit, select on validation, calibrate, test, report), and
experiments of several runs (seeds x splits) with a summary across them.

Layout of a run folder::

    <out>/<protocol>-split<k>-seed<s>/
        checkpoint/         model.safetensors, config.json, normalizer.json  (for `hymate predict`)
        lightning/          last.ckpt (resume) and best.ckpt
        logs/               metrics.csv (training curves)
        report/             metrics.json, predictions.parquet, summary.md, *.png
"""

from __future__ import annotations

import csv
import json
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from hymate.data.batching import EventSequenceDataset
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.evaluate.calibration import apply_platt, fit_platt
from hymate.evaluate.metrics import METRICS, binary_metrics, bootstrap_ci, summarise_runs
from hymate.evaluate.report import write_report
from hymate.models.registry import TABULAR, build_model
from hymate.tasks.base import Task
from hymate.tasks.splits import Split
from hymate.train.checkpoint import save_checkpoint
from hymate.train.module import (
    BinaryOutcomeModule,
    EMAWeights,
    TrainConfig,
    TrainingClock,
    make_loader,
    predict_logits,
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(
    data: EventData,
    task: Task,
    split: Split,
    model_overrides: dict,
    train: TrainConfig,
    out: Path,
    progress: bool = True,
    resume: bool = False,
    n_boot: int = 1000,
    model_name: str = "hymate",
) -> dict:
    """Train `model_name` (see models.registry) on split.train, select on split.val, report on
    split.test. Returns the result row."""
    start = time.perf_counter()
    folder = out / f"{split.protocol}-split{split.index}-seed{train.seed}"
    done = folder / "report" / "metrics.json"
    if resume and done.exists():  # finished earlier: never redo a run
        return json.loads(done.read_text())["row"]
    L.seed_everything(train.seed, workers=True, verbose=False)

    normalizer = Normalizer.fit(data, split.train, task.window_hours, task.categorical_statics)
    datasets = {
        part: EventSequenceDataset(data, getattr(split, part), normalizer, max_events=train.max_events)
        for part in ("train", "val", "test")
    }
    y_train = datasets["train"].labels
    pos_weight = float((y_train == 0).sum() / max(1, (y_train == 1).sum())) if train.pos_weight else 1.0
    model = build_model(model_name, normalizer.n_variables, len(normalizer.static_names), model_overrides)
    module = BinaryOutcomeModule(model, train, pos_weight)

    fit = fit_and_select(
        module,
        make_loader(datasets["train"], train.batch_size, shuffle=True, seed=train.seed),
        make_loader(datasets["val"], 2 * train.batch_size, shuffle=False, seed=train.seed),
        train, folder, progress, resume,
    )  # fmt: skip
    model = module.model.cpu().eval()

    val_logits = predict_logits(model, datasets["val"])
    a, b = fit_platt(val_logits, datasets["val"].labels)
    test = datasets["test"]
    probs = apply_platt(predict_logits(model, test), a, b)
    metrics = binary_metrics(test.labels, probs)
    ci = bootstrap_ci(test.labels, probs, n_boot=n_boot, seed=train.seed)
    val_metrics = binary_metrics(datasets["val"].labels, apply_platt(val_logits, a, b))
    wall = time.perf_counter() - start + fit.earlier_s  # + the training time of earlier processes
    history = _history(folder)
    row = {
        "model": model_name, "protocol": split.protocol, "seed": train.seed, "split": split.index,
        **{k: metrics[k] for k in METRICS}, "wall_s": round(wall, 1), "peak_mb": round(peak_rss_mb(), 1),
        "epochs": fit.epochs, "best_epoch": _best_epoch(history), "train_s": round(fit.train_s, 1),
        "epoch_s": round(fit.train_s / max(1, fit.epochs), 1),
        "params": sum(p.numel() for p in model.parameters()), "resumed": fit.resumed,
        "threads": torch.get_num_threads(),  # the time columns mean little without it
    }  # fmt: skip
    meta = {
        "variant": model_name, "task": task.name, "split": split.name, "split_sha256": split.sha256,
        "calibration": {"a": a, "b": b}, "train": train.to_dict(), "val_metrics": val_metrics,
    }  # fmt: skip
    save_checkpoint(folder / "checkpoint", model, normalizer, meta)
    write_report(
        folder / "report", f"{model_name} on {task.name}, {split.name}", test.stay_ids, test.labels, probs,
        metrics, ci, {"row": row, **meta}, history,
    )  # fmt: skip
    return row


@dataclass
class FitResult:
    epochs: int
    train_s: float  # all epochs, also those of an interrupted earlier process
    earlier_s: float  # the part of train_s spent by earlier processes
    resumed: bool


def fit_and_select(
    module: L.LightningModule,
    train_loader,
    val_loader,
    train: TrainConfig,
    folder: Path,
    progress: bool,
    resume: bool,
    accelerator: str = "auto",
) -> FitResult:
    """Fit with early stopping on val/score (resuming from last.ckpt), then load the best
    checkpoint into `module`. One place for what every training run shares: checkpoints, EMA,
    the training clock and the training curves kept across a resume."""
    best = ModelCheckpoint(dirpath=folder / "lightning", filename="best", monitor="val/score", mode="max", save_last=True)
    clock = TrainingClock()
    callbacks = [EarlyStopping("val/score", mode="max", patience=train.patience), best, clock]
    if train.ema_decay:
        callbacks.append(EMAWeights(train.ema_decay))  # best.ckpt then holds the averaged weights
    trainer = L.Trainer(
        max_epochs=train.max_epochs,
        accelerator=accelerator,
        devices=1,
        gradient_clip_val=train.grad_clip,
        callbacks=callbacks,
        logger=CSVLogger(folder, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        limit_train_batches=train.limit_train_batches,
        use_distributed_sampler=False,
    )
    last = folder / "lightning" / "last.ckpt"
    resumed = resume and last.exists()
    earlier = _read_history_rows(folder) if resumed else []  # Lightning's CSV logger starts afresh
    trainer.fit(module, train_loader, val_loader, ckpt_path=last if resumed else None)
    if earlier:
        _prepend_history(folder, earlier)
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return FitResult(trainer.current_epoch, clock.elapsed_s, clock.previous_s, resumed)


def run_experiment(
    data: EventData,
    task: Task,
    splits: list[Split],
    seeds: list[int],
    model_overrides: dict,
    train: TrainConfig,
    out: Path,
    progress: bool = True,
    resume: bool = True,
    model_name: str = "hymate",
) -> list[dict]:
    """Every (split, seed) run, then `summary.json` and `summary.md` across them in `out`."""
    rows = []
    for split in splits:
        for seed in seeds:
            if model_name in TABULAR:  # summary statistics + LightGBM / logistic regression: no training loop
                from hymate.models.tabular import run_tabular

                rows.append(run_tabular(model_name, data, task, split, seed, out, resume=resume, model_subfolder=False))
                continue
            config = replace(train, seed=seed)
            rows.append(run_one(data, task, split, model_overrides, config, out, progress, resume, model_name=model_name))
    summary = summarise_runs(rows, (*METRICS, "wall_s"))
    (out / "summary.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))
    lines = [f"# {model_name} on {task.name}", "", "| metric | mean | sd | runs |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} | {v['sd']:.4f} | {v['n']} |" for k, v in summary.items()]
    lines += ["", "Per-run reports: " + ", ".join(f"`{r['protocol']}-split{r['split']}-seed{r['seed']}/report`" for r in rows)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


def _read_history_rows(folder: Path) -> list[dict]:
    path = folder / "logs" / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _prepend_history(folder: Path, earlier: list[dict]) -> None:
    """Put the epochs logged before a resume back in front of those logged after it."""
    later = _read_history_rows(folder)
    first_new = min((int(r["epoch"]) for r in later if r.get("epoch")), default=None)
    kept = [r for r in earlier if first_new is None or (r.get("epoch") and int(r["epoch"]) < first_new)]
    fields = list(dict.fromkeys(k for r in kept + later for k in r))
    with (folder / "logs" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + later)


def _history(folder: Path) -> pl.DataFrame | None:
    path = folder / "logs" / "metrics.csv"
    if not path.exists():
        return None
    frame = pl.read_csv(path, infer_schema_length=None)
    cols = [c for c in ("epoch", "train/loss", "val/loss", "val/auroc", "val/ap") if c in frame.columns]
    return frame.select(cols).group_by("epoch").agg(pl.all().drop_nulls().first()).sort("epoch")


def _best_epoch(history: pl.DataFrame | None) -> int | None:
    if history is None or "val/auroc" not in history.columns:
        return None
    score = history.get_column("val/auroc").fill_null(-1) + history.get_column("val/ap").fill_null(-1)
    return int(history.get_column("epoch")[int(np.argmax(score.to_numpy()))])
