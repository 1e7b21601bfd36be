"""The Lightning module for binary outcomes, its training settings, and batched inference."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch.nn import functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from hymate.data.batching import EventSequenceDataset, LengthBucketSampler, collate
from hymate.errors import HymateError
from hymate.evaluate.metrics import binary_metrics
from hymate.models.hymate import drop_variables


@dataclass
class TrainConfig:
    max_epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better validation AUROC + AP
    pos_weight: bool = True  # weight positives by #neg/#pos (calibrated afterwards on validation)
    max_events: int | None = 880  # most recent events kept per stay
    ema_decay: float | None = 0.998  # validate, select and ship an exponential moving average of the weights
    seed: int = 0
    limit_train_batches: int | float | None = None  # for smoke runs
    # Online (hourly) task only, ignored by the stay-level one: train on every positive hour and up
    # to this many random negative hours per stay and step (reweighted; None: every hour).
    train_hours_per_stay: int | None = 8

    def __post_init__(self) -> None:  # a bad setting fails here, with its name, not as a NaN loss epochs later
        problems = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("max_epochs", self.max_epochs, self.max_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("warmup_epochs", self.warmup_epochs, math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, ">= 0"),
            ("ema_decay", self.ema_decay, self.ema_decay is None or 0 <= self.ema_decay < 1, "in [0, 1) (0 or None: off)"),
        ) if not ok]  # fmt: skip
        if problems:
            raise HymateError("training settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


class BinaryOutcomeModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, config: TrainConfig, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, batch):
        return self.model(batch)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight)

    def training_step(self, batch, batch_idx):
        batch = drop_variables(batch, self.model.config.variable_dropout)
        logits = self.model(batch).logits[:, 0]
        loss = self._loss(logits, batch.labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch).logits[:, 0]
        self.log("val/loss", self._loss(logits, batch.labels), on_epoch=True, batch_size=len(batch), prog_bar=True)
        self._val_logits.append(logits.detach().float().cpu())
        self._val_labels.append(batch.labels.cpu())

    def on_validation_epoch_end(self) -> None:
        logits, labels = torch.cat(self._val_logits), torch.cat(self._val_labels)
        self._val_logits.clear()
        self._val_labels.clear()
        if labels.min() == labels.max():  # the sanity check may see one class only
            return
        m = binary_metrics(labels.numpy(), torch.sigmoid(logits).numpy())
        self.log_dict({"val/auroc": m["auroc"], "val/ap": m["ap"], "val/score": m["auroc"] + m["ap"]}, prog_bar=True)

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


def make_loader(dataset: EventSequenceDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, dataset: EventSequenceDataset, batch_size: int = 64) -> np.ndarray:
    """Logits for every stay of `dataset`, in dataset order (batched by length for speed)."""
    model.eval()
    out = np.empty(len(dataset), dtype=np.float32)
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=False)
    for indices in sampler:
        batch = collate([dataset[i] for i in indices])
        out[indices] = model(batch).logits[:, 0].float().numpy()
    return out
