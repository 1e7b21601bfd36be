"""Every model behind one interface: fit on a split's training stays (validation for selection),
then raw outputs for any stays of a task's view, and save / load as a checkpoint folder.

- `NeuralEstimator`: a sequence model (HyMaTE and the neural baselines) trained with Lightning
  (`fit_and_select`: early stopping on the task's validation score, resume from last.ckpt, EMA).
- `TabularEstimator`: LightGBM or logistic regression on summary features (one prediction per
  stay) or causal running features (many per stay).

`raw(view, ids)` returns the prediction rows (stay_id, prediction_time, label) and raw outputs
[rows, K]; calibration, decisions and metrics are the run's (`train.run`), the same for both.

A checkpoint folder holds ``config.json`` (kind, model, task, label type, calibration, decision
threshold, regression target scaling, training settings, versions) and the model: for a neural
one ``model.safetensors`` + ``normalizer.json`` (vocabulary, value / static statistics, clock);
for a tabular one ``lightgbm.txt`` or ``logreg.safetensors`` + ``features.json``. What a load
checks is in `checkpoint_schema`; a folder is written whole or not at all (`hymate.io.atomic_folder`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import save_file

import hymate
from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, at_last_prediction
from hymate.data.schema import EventData
from hymate.errors import CheckpointError, DataError, HymateError
from hymate.io import atomic_folder, atomic_path, write_atomic
from hymate.models.registry import ARCHITECTURES, TABULAR, VARIANTS, build_model, model_option_names
from hymate.models.running_features import RunningSpec
from hymate.models.summary_features import SummarySpec
from hymate.models.tabular import TabularModel, fit_tabular
from hymate.output import is_terminal
from hymate.tasks.base import Task
from hymate.tasks.splits import Split
from hymate.train.checkpoint_schema import (
    CALIBRATION_OF,
    FORMAT_VERSION,
    CheckpointConfig,
    build,
    check_format,
    check_weights,
    read_json,
    read_weights,
    validate,
)
from hymate.train.module import (
    EMAWeights,
    Objective,
    OutcomeModule,
    TrainConfig,
    TrainingClock,
    make_loader,
    predict_raw,
)
from hymate.train.progress import ProgressLines, quiet_lightning


@dataclass
class FitResult:
    epochs: int | None = None
    train_s: float = 0.0  # all epochs, also those of an interrupted earlier process
    earlier_s: float = 0.0  # the part of train_s spent by earlier processes
    resumed: bool = False
    extra: dict | None = None  # what the fit chose (tabular: hyper-parameters, grid trials)


def many_per_stay(view: EventData) -> bool:
    return view.labels.height > view.labels.get_column("stay_id").n_unique()


# --- neural -------------------------------------------------------------------------------
class NeuralEstimator:
    kind = "neural"

    def __init__(self, name: str, task: Task, train: TrainConfig, model_options: dict | None = None,
                 model: torch.nn.Module | None = None, normalizer: Normalizer | None = None,
                 target: dict | None = None) -> None:  # fmt: skip
        self.name, self.task, self.train = name, task, train
        # The task's model defaults apply where the model takes them (STraTS reads no prediction time).
        takes = model_option_names(name)
        self.model_options = {**{k: v for k, v in task.model_defaults.items() if k in takes}, **(model_options or {})}
        self.model, self.normalizer, self.target = model, normalizer, target

    def dataset(self, view: EventData, ids, unknown: str = "error") -> PredictionDataset:
        return PredictionDataset(view, ids, self.normalizer, max_events=self.train.max_events,
                                 lookback_hours=self.task.lookback_hours, unknown_variables=unknown)  # fmt: skip

    def fit(self, view: EventData, split: Split, folder: Path, progress: bool, resume: bool) -> FitResult:
        self.normalizer = Normalizer.fit(view, split.train, self.task.window_hours, self.task.categorical_statics,
                                         min_count=self.task.min_code_count)  # fmt: skip
        # Variables the training stays never had (EtCO2 is absent from P19 hospital A) cannot be used: dropped, counted.
        train_set = self.dataset(view, split.train)
        val_set = self.dataset(view, split.val, unknown="drop")
        self.dropped = {"val": val_set.dropped_unknown}
        y = train_set.labels[~np.isnan(train_set.labels)]
        if len(y) == 0:
            raise DataError("the training stays have no labels")
        kind = self.task.label_type
        pos_weight = 1.0
        if kind == "binary":
            if y.sum() == 0 or y.sum() == len(y):
                raise DataError("the training labels have one class only: nothing to learn")
            pos_weight = float((y == 0).sum() / (y == 1).sum()) if self.train.pos_weight else 1.0
        if kind == "regression":
            self.target = {"mean": float(y.mean()), "sd": float(y.std()) or 1.0}
        objective = Objective(kind, self.task.selection_metric, pos_weight, **({
            "target_mean": self.target["mean"], "target_sd": self.target["sd"]} if self.target else {}))  # fmt: skip
        options = {**self.model_options, "n_outputs": self.task.n_outputs}
        if "present_values" in model_option_names(self.name) and view.events.get_column("value").null_count():
            options["present_values"] = True  # events without a value (MEDS codes): embedded as "present"
        self.model = build_model(self.name, self.normalizer.n_variables, len(self.normalizer.static_names), options)
        module = OutcomeModule(self.model, self.train, objective)
        fit = fit_and_select(
            module,
            make_loader(train_set, self.train.batch_size, shuffle=True, seed=self.train.seed),
            make_loader(val_set, 2 * self.train.batch_size, shuffle=False, seed=self.train.seed),
            self.train, folder, progress, resume,
        )  # fmt: skip
        self.model = module.model.cpu().eval()
        return fit

    def raw(self, view: EventData, ids, progress: bool = False, unknown: str = "drop") -> tuple[pl.DataFrame, np.ndarray, int]:
        dataset = self.dataset(view, ids, unknown=unknown)
        out = predict_raw(self.model, dataset, progress=progress)
        rows = pl.DataFrame({"stay_id": dataset.row_stay_ids, "prediction_time": dataset.pred_times,
                             "label": pl.Series(dataset.labels).fill_nan(None)})  # fmt: skip
        return rows, out, dataset.dropped_unknown

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, folder: Path, meta: dict) -> None:
        arch = VARIANTS[self.name][0]
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        with atomic_folder(folder) as tmp:  # a killed save leaves the old checkpoint (or none), never half of one
            save_file(state, tmp / "model.safetensors")
            self.normalizer.save(tmp / "normalizer.json")
            _write_config(tmp, self.task, {"kind": self.kind, "model": self.name, "architecture": arch,
                                           "config": self.model.config.to_dict(), "target": self.target, **meta})  # fmt: skip

    @classmethod
    def load(cls, folder: Path, meta: CheckpointConfig, raw: dict, task: Task) -> NeuralEstimator:
        file = folder / "config.json"
        if meta.architecture not in ARCHITECTURES:
            raise CheckpointError(f"{file}: unknown architecture {meta.architecture!r} (known: {', '.join(ARCHITECTURES)})")
        if meta.model not in VARIANTS:
            raise CheckpointError(f"{file}: unknown model {meta.model!r} (known: {', '.join(VARIANTS)})")
        if task.label_type == "regression" and meta.target is None:
            raise CheckpointError(f"{file}: field 'target': missing (a regression model needs its target scaling)")
        model_cls, config_cls = ARCHITECTURES[meta.architecture]
        model = model_cls(build(config_cls, meta.config, file, "config"))
        state = read_weights(folder / "model.safetensors")
        check_weights(state, model, folder / "model.safetensors")
        model.load_state_dict(state)
        model.eval()
        train = build(TrainConfig, meta.train, file, "train")
        normalizer = build(Normalizer, read_json(folder / "normalizer.json"), folder / "normalizer.json")
        sizes = (normalizer.n_variables, len(normalizer.static_names))
        if sizes != (model.config.n_variables, model.config.n_statics):  # a normaliser of another checkpoint
            raise CheckpointError(f"{folder / 'normalizer.json'}: {sizes[0]} variables and {sizes[1]} statics, but the model "
                                  f"in config.json reads {model.config.n_variables} and {model.config.n_statics}")  # fmt: skip
        return cls(meta.model, task, train, model=model, normalizer=normalizer, target=raw.get("target"))


# --- tabular ------------------------------------------------------------------------------
class TabularEstimator:
    kind = "tabular"

    def __init__(self, name: str, task: Task, seed: int, model: TabularModel | None = None, features=None) -> None:
        self.name, self.task, self.seed, self.model, self.features = name, task, seed, model, features

    def _features(self, view: EventData, ids) -> tuple[np.ndarray, pl.DataFrame, dict]:
        if isinstance(self.features, RunningSpec):
            return self.features.transform(view, ids)
        X, dropped = self.features.transform(at_last_prediction(view, self.task.lookback_hours), ids)
        order = pl.DataFrame({"stay_id": np.asarray(ids, dtype=np.int64)})
        rows = order.join(view.labels, on="stay_id", how="left", maintain_order="left")
        return X, rows.select("stay_id", "prediction_time", "label"), dropped

    def fit(self, view: EventData, split: Split, folder: Path, progress: bool, resume: bool) -> FitResult:
        if many_per_stay(view):
            if self.task.lookback_hours is not None:
                raise HymateError("tabular models read causal running features, which have no look-back window yet")
            self.features = RunningSpec.fit(view, split.train)
        else:
            self.features = SummarySpec.fit(at_last_prediction(view, self.task.lookback_hours), split.train,
                                            self.task.window_hours, self.task.categorical_statics)  # fmt: skip
        (X_tr, rows_tr, _), (X_va, rows_va, dropped) = self._features(view, split.train), self._features(view, split.val)
        y_tr, y_va = _labels(rows_tr), _labels(rows_va)
        start, cpu = time.perf_counter(), time.process_time()
        self.model = fit_tabular(self.name, self.task.label_type, self.task.n_outputs, X_tr[y_tr.mask], y_tr.y,
                                 X_va[y_va.mask], y_va.y, self.seed,
                                 self.task.tabular_grid if self.name == "lightgbm" else None)  # fmt: skip
        train_s = time.perf_counter() - start
        self.dropped = {"val": dropped}
        extra = {"hyperparameters": self.model.chosen, "grid_trials": self.model.trials, "train_cpu_s": round(time.process_time() - cpu, 2),
                 "features": len(self.features.feature_names)}  # fmt: skip
        return FitResult(None, train_s, 0.0, False, extra)

    def raw(self, view: EventData, ids, progress: bool = False, unknown: str = "drop") -> tuple[pl.DataFrame, np.ndarray, int]:
        X, rows, dropped = self._features(view, ids)
        return rows, self.model.predict_raw(X), int(dropped.get("unknown_events", 0))

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def save(self, folder: Path, meta: dict) -> None:
        with atomic_folder(folder) as tmp:
            self.model.save(tmp)
            write_atomic(tmp / "features.json", self.features.to_json())
            _write_config(tmp, self.task, {"kind": self.kind, "model": self.name, "hyperparameters": self.model.chosen, **meta})

    @classmethod
    def load(cls, folder: Path, meta: CheckpointConfig, raw: dict, task: Task) -> TabularEstimator:
        if meta.model not in TABULAR:
            raise CheckpointError(f"{folder / 'config.json'}: unknown tabular model {meta.model!r} (known: {', '.join(TABULAR)})")
        file = folder / "features.json"
        part = read_json(file)
        if not isinstance(part, dict):
            raise CheckpointError(f"{file}: expected a JSON object, got {type(part).__name__}")
        kind = part.pop("kind", "summary")  # files from before running features had no kind
        if kind not in ("summary", "running"):
            raise CheckpointError(f"{file}: field 'kind': expected 'summary' or 'running', got {kind!r}")
        features = build(RunningSpec if kind == "running" else SummarySpec, part, file)
        train = build(TrainConfig, meta.train, folder / "config.json", "train")
        model = TabularModel.load(folder, meta.model, task.label_type, len(features.feature_names))
        return cls(meta.model, task, train.seed, model, features)


@dataclass
class _Labelled:
    y: np.ndarray
    mask: np.ndarray


def _labels(rows: pl.DataFrame) -> _Labelled:
    y = rows.get_column("label").cast(pl.Float64).to_numpy()
    mask = ~np.isnan(y)
    return _Labelled(y[mask], mask)


def make_estimator(name: str, task: Task, train: TrainConfig, model_options: dict | None = None):
    if name in TABULAR:
        return TabularEstimator(name, task, train.seed)
    if name in VARIANTS:
        return NeuralEstimator(name, task, train, model_options)
    raise HymateError(f"unknown model {name!r}; known: {', '.join((*VARIANTS, *TABULAR))}")


def _write_config(folder: Path, task: Task, config: dict) -> None:
    described = {"format_version": FORMAT_VERSION, "label_type": task.label_type,
                 **({"task_spec": task.spec} if task.spec else {})}  # fmt: skip
    versions = {"hymate_version": hymate.__version__, "torch_version": torch.__version__}
    write_atomic(folder / "config.json", json.dumps({**described, **config, **versions}, indent=1, default=str))


def load_checkpoint(folder: Path):
    """The estimator saved in a checkpoint folder, its task, and its config (see `checkpoint_schema`
    for what is checked). Every malformed part is one CheckpointError naming its file."""
    from hymate.tasks.registry import TASKS

    folder = Path(folder)
    file = folder / "config.json"
    if not file.exists():
        raise CheckpointError(f"{folder} is not a hymate checkpoint: missing config.json")
    raw = read_json(file)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(raw).__name__}")
    check_format(raw, file)
    known = dict(TASKS)
    if isinstance(raw.get("task_spec"), dict):  # a task built from a file (MEDS or table labels): rebuilt from its spec
        from hymate.tasks.registry import task_from_spec

        rebuilt = task_from_spec(raw["task_spec"], file)
        known[rebuilt.name] = rebuilt
    if raw.get("task") not in known:
        raise CheckpointError(f"checkpoint task {raw.get('task')!r} is unknown to this version of hymate "
                              f"(known: {', '.join(known)})")  # fmt: skip
    if raw.get("kind") not in ("neural", "tabular"):
        raise CheckpointError(f"checkpoint {folder} has an unknown kind {raw.get('kind')!r} (neural or tabular)")
    meta = validate(raw, CheckpointConfig, file)
    task = known[meta.task]
    _check_task(meta, task, file)
    cls = NeuralEstimator if meta.kind == "neural" else TabularEstimator
    return cls.load(folder, meta, raw, task), task, raw


def _check_task(meta: CheckpointConfig, task: Task, file: Path) -> None:
    """The task this hymate knows by the checkpoint's task name must be the one it was trained for."""
    if meta.label_type is not None and meta.label_type != task.label_type:
        raise CheckpointError(f"{file}: label type {meta.label_type!r}, but task {task.name} is {task.label_type} here")
    if meta.classes is not None and list(meta.classes) != list(task.classes):
        raise CheckpointError(f"{file}: classes {meta.classes}, but task {task.name} has {list(task.classes)} here")
    if meta.calibration is not None and meta.calibration.kind not in CALIBRATION_OF[task.label_type]:
        raise CheckpointError(f"{file}: field 'calibration.kind': {meta.calibration.kind!r} does not apply to "
                              f"{task.label_type} predictions (expected {' or '.join(CALIBRATION_OF[task.label_type])})")  # fmt: skip


# --- the Lightning fit shared by every neural model -----------------------------------------
def fit_and_select(module: L.LightningModule, train_loader, val_loader, train: TrainConfig, folder: Path,
                   progress: bool, resume: bool) -> FitResult:  # fmt: skip
    """Fit with early stopping on val/score (resuming from last.ckpt), then load the best
    checkpoint into `module`. One place for what every training run shares: checkpoints, EMA,
    the training clock and the training curves kept across a resume."""
    best = ModelCheckpoint(dirpath=folder / "lightning", filename="best", monitor="val/score", mode="max", save_last=True)
    clock = TrainingClock()
    callbacks = [EarlyStopping("val/score", mode="max", patience=train.patience), best, clock]
    if train.ema_decay:
        callbacks.append(EMAWeights(train.ema_decay))  # best.ckpt then holds the averaged weights
    _build_scan_kernel(module)
    bar = progress and is_terminal()  # a bar draws nothing in a log file: plain lines there
    if progress and not bar:
        callbacks.append(ProgressLines())
    quiet_lightning()
    trainer = L.Trainer(
        max_epochs=train.max_epochs, accelerator="cpu", devices=1, gradient_clip_val=train.grad_clip, plugins=[AtomicCheckpointIO()],
        callbacks=callbacks, logger=CSVLogger(folder, name="logs", version=""), enable_progress_bar=bar,
        enable_model_summary=False, deterministic=True, num_sanity_val_steps=0,
        limit_train_batches=train.limit_train_batches, use_distributed_sampler=False,
    )  # fmt: skip
    last = folder / "lightning" / "last.ckpt"
    resumed = resume and last.exists() and resumable(last)
    earlier = read_history_rows(folder) if resumed else []  # Lightning's CSV logger starts afresh
    trainer.fit(module, train_loader, val_loader, ckpt_path=last if resumed else None)
    if earlier:
        _prepend_history(folder, earlier)
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return FitResult(trainer.current_epoch, clock.elapsed_s, clock.previous_s, resumed)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoints written through a temporary file and a rename: a process killed while
    writing last.ckpt leaves the previous one, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def resumable(last: Path) -> bool:
    """Whether a run can resume from `last` (Lightning's last.ckpt).

    The rule for one that cannot be read (truncated, garbage, not a checkpoint): warn, naming the
    file, set it aside as ``last.ckpt.corrupt`` (with the abandoned run's other Lightning
    checkpoints removed) and train from scratch. A resume never stops at a file it cannot use,
    and never silently deletes it either.
    """
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
            raise ValueError("not a Lightning checkpoint")
        return True
    except Exception as exc:  # whatever torch.load raises on bytes it cannot read
        corrupt = last.with_name(last.name + ".corrupt")
        os.replace(last, corrupt)
        for stale in last.parent.glob("*.ckpt"):
            stale.unlink()
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        print(f"hymate: warning: {last} is unreadable ({reason}); moved to {corrupt.name}, training restarts from scratch",
              file=sys.stderr, flush=True)  # fmt: skip
        return False


def _build_scan_kernel(module: torch.nn.Module) -> None:
    """Build (or load) the CPU scan kernel before the fit, where it would otherwise build inside
    the first step: the first epoch's time, steps/s and ETA would then count the build."""
    from hymate.nn.mamba import MambaBlock
    from hymate.nn.scan import resolve_backend

    for backend in {m.config.scan_backend for m in module.modules() if isinstance(m, MambaBlock)}:
        resolve_backend(backend, torch.device("cpu"))


def read_history_rows(folder: Path) -> list[dict]:
    path = folder / "logs" / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _prepend_history(folder: Path, earlier: list[dict]) -> None:
    """Put the epochs logged before a resume back in front of those logged after it."""
    later = read_history_rows(folder)
    first_new = min((int(r["epoch"]) for r in later if r.get("epoch")), default=None)
    kept = [r for r in earlier if first_new is None or (r.get("epoch") and int(r["epoch"]) < first_new)]
    fields = list(dict.fromkeys(k for r in kept + later for k in r))
    with (folder / "logs" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + later)
