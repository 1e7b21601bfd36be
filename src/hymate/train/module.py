"""The Lightning module of every task, its training settings, and batched scoring.

One module for every label type and every number of prediction times per sample: the model
scores every prediction time of a batch (`score_times`), and the loss, the validation score and
the logged metrics follow the task's label type (binary: BCE with a positive-class weight;
multiclass: cross-entropy; regression: Huber, L1 or MSE on standardised targets).

With `TrainConfig.train_hours_per_stay = N`, a training step on a task with many prediction times
per stay scores only a sample of each stay's times (`subsample_times`: for binary labels every
positive and up to N random negative times, negatives reweighted so the loss is an unbiased
estimate of the all-times mean; otherwise N random times, reweighted the same way); the channel
transformer then runs on that many [V, d] token sets instead of one per time, which is most of
the cost. Validation and test score every prediction time.
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import asdict, dataclass

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch.nn import functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from hymate.data.augment import drop_variables
from hymate.data.batching import EventBatch, LengthBucketSampler
from hymate.data.samples import PredictionBatch, PredictionDataset, collate_samples
from hymate.errors import HymateError
from hymate.evaluate.scores import selection_score, uncalibrated

# The regression losses by name (TrainConfig.regression_loss), on standardised targets.
REGRESSION_LOSSES = {"huber": functools.partial(F.huber_loss, delta=1.0), "l1": F.l1_loss, "mse": F.mse_loss}


@dataclass
class TrainConfig:
    max_epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better validation score
    pos_weight: bool = True  # binary: weight positives by #neg/#pos (calibrated afterwards on validation)
    max_events: int | None = 880  # most recent events kept of a sample with one prediction time
    ema_decay: float | None = 0.998  # validate, select and ship an exponential moving average of the weights
    variable_dropout: float = 0.2  # per-sample probability of removing all of a variable's events
    seed: int = 0
    limit_train_batches: int | float | None = None  # for smoke runs
    # Tasks with many prediction times per stay: train on a sample of each stay's times per step
    # (see the module docstring; None: every time).
    train_hours_per_stay: int | None = None
    # Regression: the loss on standardised targets. "huber" (delta 1) is robust to long stays; "l1"
    # fits the conditional median, what an MAE-scored task asks for; "mse" the conditional mean.
    regression_loss: str = "huber"

    def __post_init__(self) -> None:  # a bad setting fails here, with its name, not as a NaN loss epochs later
        problems = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("max_epochs", self.max_epochs, self.max_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("warmup_epochs", self.warmup_epochs, math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, ">= 0"),
            ("ema_decay", self.ema_decay, self.ema_decay is None or 0 <= self.ema_decay < 1, "in [0, 1) (0 or None: off)"),
            ("variable_dropout", self.variable_dropout, 0 <= self.variable_dropout < 1, "in [0, 1)"),
            ("max_events", self.max_events, self.max_events is None or self.max_events >= 1, ">= 1 (or None)"),
            ("train_hours_per_stay", self.train_hours_per_stay,
             self.train_hours_per_stay is None or self.train_hours_per_stay >= 1, ">= 1 (or None: all)"),
            ("regression_loss", self.regression_loss, self.regression_loss in REGRESSION_LOSSES, f"one of {', '.join(REGRESSION_LOSSES)}"),
        ) if not ok]  # fmt: skip
        if problems:
            raise HymateError("training settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


def training_config(task, model: str, given: dict | None = None) -> TrainConfig:
    """TrainConfig for `model` on `task`: the options given, else the model's needs
    (`registry.VARIANT_TRAINING`), else the task's recipe, else TrainConfig's defaults."""
    from hymate.models.registry import VARIANT_TRAINING

    settings = {**task.recipe, **VARIANT_TRAINING.get(model, {}), **{k: v for k, v in (given or {}).items() if v is not None}}
    if settings.get("ema_decay") == 0:
        settings["ema_decay"] = None  # 0 means off
    if settings.get("train_hours_per_stay") == 0:
        settings["train_hours_per_stay"] = None  # 0 means every prediction time
    return TrainConfig(**settings)


@dataclass(frozen=True)
class Objective:
    """What the module optimises and how validation scores it (from the task and the training labels)."""

    label_type: str
    selection: str  # see evaluate.scores.selection_score
    pos_weight: float = 1.0  # binary
    target_mean: float = 0.0  # regression: targets are standardised with these
    target_sd: float = 1.0

    @property
    def target(self) -> dict:
        return {"mean": self.target_mean, "sd": self.target_sd}


def score_times(model: torch.nn.Module, events: EventBatch, prefix: torch.Tensor, time_mask: torch.Tensor,
                query_times: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Outputs [B, H, K] at every prediction time of the batch, each reading its first prefix[b, k] events.

    One prediction per sample that reads all its events is the plain forward; several go through the
    model's one-pass `forward_hourly` where it has one, else through one forward per time slot on the
    batch cut at that slot (exact, slower).
    """
    if prefix.shape[1] == 1 and bool((prefix[:, 0] >= events.lengths).all()):
        events.query_times = query_times[:, 0]
        return model(events).logits.unsqueeze(1)
    if hasattr(model, "forward_hourly") and not getattr(model.config, "channel_stats", False):
        return model.forward_hourly(events, prefix, time_mask, query_times)
    outs = []
    for k in range(prefix.shape[1]):
        slots = torch.arange(events.mask.shape[1]).unsqueeze(0)
        keep = slots < prefix[:, k].clamp(min=1).unsqueeze(1)  # a model without an hourly forward needs one event:
        real = slots < prefix[:, k].unsqueeze(1)  # a null one (variable 0, no value) when none is visible yet
        cut = EventBatch(events.times * real, events.variables * real, events.values * real, events.mask & keep,
                         events.statics, events.labels, events.stay_ids, query_times[:, k],
                         None if events.present is None else events.present & real)  # fmt: skip
        outs.append(model(cut).logits)
    return torch.stack(outs, dim=1)


def subsample_times(batch: PredictionBatch, n_keep: int, generator: torch.Generator, binary: bool) -> tuple[PredictionBatch, torch.Tensor]:
    """Keep every positive time of each stay (binary labels) and up to `n_keep` of its other labelled
    times, drawn uniformly without replacement (unlabelled times carry no loss and are dropped).
    Returns the smaller batch (kept times in time order, so prefixes stay non-decreasing) and a
    weight per kept time: 1 for positives, #others / #kept others of the stay for the rest. Then
    sum(weight * loss) / sum(weight) is an unbiased estimate of the mean loss over all labelled times."""
    labelled = batch.time_mask & ~torch.isnan(batch.labels)
    positive = labelled & (batch.labels > 0.5) if binary else torch.zeros_like(labelled)
    negative = labelled & ~positive
    B, H = batch.labels.shape
    key = torch.rand(B, H, generator=generator)
    key = torch.where(positive, -1.0, torch.where(negative, key, 2.0))  # positives first, then the others at random
    rank = key.argsort(dim=1).argsort(dim=1)
    n_neg = negative.sum(dim=1)
    kept_neg = n_neg.clamp(max=n_keep)
    count = positive.sum(dim=1) + kept_neg
    chosen = rank < count.unsqueeze(1)
    width = max(1, int(count.max()))
    order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :width]  # chosen times, in time order
    mask = torch.arange(width).unsqueeze(0) < count.unsqueeze(1)
    weight = torch.where(negative, (n_neg / kept_neg.clamp(min=1)).unsqueeze(1).to(torch.float32), 1.0)

    def take(x: torch.Tensor, pad) -> torch.Tensor:
        return torch.where(mask, x.gather(1, order), torch.as_tensor(pad, dtype=x.dtype))

    small = PredictionBatch(
        batch.events, take(batch.times, 0.0), take(batch.labels, float("nan")),
        torch.where(mask, batch.prefix.gather(1, order), batch.events.lengths.unsqueeze(1)), mask,
        take(batch.query_times, 0.0),
    )  # fmt: skip
    return small, take(weight, 0.0)


class OutcomeModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, config: TrainConfig, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.objective = objective
        self.register_buffer("pos_weight", torch.tensor(float(objective.pos_weight)))
        self._val: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []

    def forward(self, batch):
        return self.model(batch)

    def _outputs(self, batch: PredictionBatch, train: bool):
        """Outputs [N, K], labels [N] and weights [N] (or None) of the labelled prediction times."""
        weight = None
        if train and self.config.train_hours_per_stay is not None and batch.times.shape[1] > 1:
            # Seeded by (seed, step): the same times on a rerun or a resume; own generator, so the
            # global stream (variable dropout) is drawn exactly as without subsampling.
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(self.global_step))
            batch, weight = subsample_times(batch, self.config.train_hours_per_stay, generator,
                                            self.objective.label_type == "binary")  # fmt: skip
        events, prefix = batch.events, batch.prefix
        if train:
            events, prefix = drop_variables(events, self.config.variable_dropout, prefix=prefix)
        out = score_times(self.model, events, prefix, batch.time_mask, batch.query_times)
        keep = batch.time_mask & ~torch.isnan(batch.labels)
        return out[keep], batch.labels[keep], None if weight is None else weight[keep], keep

    def _loss(self, out: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        kind = self.objective.label_type
        if kind == "binary":
            losses = F.binary_cross_entropy_with_logits(out[:, 0], labels, pos_weight=self.pos_weight, reduction="none")
        elif kind == "multiclass":
            losses = F.cross_entropy(out, labels.long(), reduction="none")
        else:
            target = (labels - self.objective.target_mean) / self.objective.target_sd
            losses = REGRESSION_LOSSES[self.config.regression_loss](out[:, 0], target, reduction="none")
        if weight is None:
            return losses.mean()
        return (losses * weight).sum() / weight.sum()

    def training_step(self, batch: PredictionBatch, batch_idx):
        out, labels, weight, _ = self._outputs(batch, train=True)
        loss = self._loss(out, labels, weight)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), prog_bar=True)
        return loss

    def validation_step(self, batch: PredictionBatch, batch_idx):
        out, labels, _, keep = self._outputs(batch, train=False)
        self.log("val/loss", self._loss(out, labels), on_epoch=True, batch_size=len(labels), prog_bar=True)
        ids = batch.events.stay_ids.unsqueeze(1).expand_as(keep)[keep]
        self._val.append((out.detach().float().cpu(), labels.cpu(), ids.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        out = torch.cat([v[0] for v in self._val]).numpy()
        labels = torch.cat([v[1] for v in self._val]).numpy()
        ids = np.concatenate([v[2] for v in self._val])
        self._val.clear()
        pred = uncalibrated(self.objective.label_type, out, self.objective.target)
        # Rows of a stay arrive together and in time order (one batch row per sample).
        scores = selection_score(self.objective.selection, self.objective.label_type, labels, pred, ids)
        if scores:  # empty when the (sanity-check) batch has one class only
            self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hymate_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A resumed run draws the variable dropout (and any other global draw) of the run it continues:
        # killed and resumed, it ends with the weights an uninterrupted run of the same seed ends with.
        if "hymate_rng" in checkpoint:
            set_rng_state(checkpoint["hymate_rng"])

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            # Norms, biases, embeddings and the SSM's A/D/dt parameters are not weight-decayed.
            plain = param.ndim < 2 or "embedding" in name or name.endswith(("A_log", "D"))
            (no_decay if plain else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.config.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.config.max_epochs))
        warmup = max(1, int(self.config.warmup_epochs * per_epoch))

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 5 % of the peak
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EMAWeights(WeightAveraging):
    """Exponential moving average of the weights, used for validation, checkpoints and the final model.

    On a few thousand stays the validation score of the raw weights jumps from step to step; the
    average is smoother, so selecting the best epoch on validation picks signal rather than noise.
    """

    def __init__(self, decay: float) -> None:
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class TrainingClock(Callback):
    """Training seconds summed over every process that worked on a run.

    Its state travels in the checkpoints, so a run resumed from last.ckpt reports the time of all
    its epochs (the unfinished epoch of an interrupted process is redone, and counted once).
    """

    def __init__(self) -> None:
        self.previous_s = 0.0
        self._start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        return self.previous_s + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.previous_s = float(state_dict.get("elapsed_s", 0.0))


def rng_state() -> dict:
    """The global random streams (torch CPU and CUDA, numpy, Python) as plain tensors, lists and
    ints: what Lightning's `weights_only` checkpoint load accepts."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }  # fmt: skip


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))


def make_loader(dataset: PredictionDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """Batches of `LengthBucketSampler`, whose order is a function of (seed, epoch) only: Lightning
    sets the epoch (see `LengthBucketSampler.sampler`), so a resumed epoch draws the batches it
    would have drawn. The loader's own generator keeps its iterators from drawing on the global
    stream (a resume creates iterators an uninterrupted run does not)."""
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


@torch.no_grad()
def predict_raw(model: torch.nn.Module, dataset: PredictionDataset, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Raw outputs [prediction rows, K] for every prediction time of `dataset`, in its row order."""
    from rich.progress import track

    model.eval()
    out = None
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=False)
    for indices in track(list(sampler), description="scoring", disable=not progress, transient=True):
        batch = collate_samples([dataset[i] for i in indices])
        scores = score_times(model, batch.events, batch.prefix, batch.time_mask, batch.query_times).float().numpy()
        if out is None:
            out = np.empty((len(dataset.pred_times), scores.shape[-1]), dtype=np.float32)
        for row, i in enumerate(indices):
            a, b = dataset.time_offsets[i], dataset.time_offsets[i + 1]
            out[a:b] = scores[row, : b - a]
    return out
