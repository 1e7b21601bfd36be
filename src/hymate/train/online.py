"""Training and scoring for the online task: a logit at every labelled hour, one pass per stay.

The Lightning module is the stay-level one (`BinaryOutcomeModule`: optimiser, schedule, EMA,
positive weighting) with hourly steps: the loss is binary cross-entropy over every (stay, hour)
label row of the batch, positives weighted by #negative / #positive hours of the training stays
(~2 % of hours are positive). With `TrainConfig.train_hours_per_stay = N`, each training step
scores only a sample of each stay's hours (`subsample_hours`: every positive hour and up to N
random negative ones, negatives reweighted so the loss is an unbiased estimate of the all-hours
mean); the channel transformer then runs on that many [V, d] token sets instead of one per hour,
which is most of the cost. Validation and test score every hour. Validation computes hourly AUROC and AP and the challenge utility
at its best threshold; the epoch with the best validation utility is kept (early stopping on it).
The threshold is then chosen on validation and applied to test, whose hours are all scored in
one pass per stay (`predict_hourly`).

Run folder: ``<out>/<setting>-split<k>-seed<s>/`` with ``lightning/``, ``logs/metrics.csv``,
``checkpoint/`` (as `hymate train` writes it), ``predictions.parquet`` (test hours: stay_id,
hour, label, probability) and ``metrics.json`` (the result row; its presence marks the run done).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from hymate.data.batching import LengthBucketSampler
from hymate.data.hourly import HourlyBatch, HourlyDataset, collate_hourly
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.evaluate.metrics import binary_metrics
from hymate.evaluate.utility import best_threshold, utility_score
from hymate.models.hymate import HyMaTE, drop_variables
from hymate.models.registry import build_model
from hymate.tasks.base import Task
from hymate.tasks.splits import Split
from hymate.train.checkpoint import save_checkpoint
from hymate.train.module import BinaryOutcomeModule, TrainConfig
from hymate.train.run import fit_and_select, peak_rss_mb

ONLINE_MODEL_DEFAULTS = {"query_time": True}  # the online task's model options, under any overrides given


def subsample_hours(batch: HourlyBatch, n_negatives: int, generator: torch.Generator) -> tuple[HourlyBatch, torch.Tensor]:
    """Keep every positive hour of each stay and up to `n_negatives` of its negative hours, drawn
    uniformly without replacement (unlabelled hours are dropped: they carry no loss). Returns the
    smaller batch (kept hours in time order, so prefixes stay non-decreasing; padded as
    `collate_hourly` pads) and a weight per kept hour: 1 for positives, #negatives / #kept
    negatives of the stay for negatives. Then sum(weight * loss) / sum(weight) is an unbiased
    estimate of the mean loss over all the batch's labelled hours (sum(weight) is their number)."""
    labelled = batch.hour_mask & ~torch.isnan(batch.labels)
    positive = labelled & (batch.labels > 0.5)
    negative = labelled & ~positive
    B, H = batch.labels.shape
    key = torch.rand(B, H, generator=generator)
    key = torch.where(positive, -1.0, torch.where(negative, key, 2.0))  # positives first, then negatives at random
    rank = key.argsort(dim=1).argsort(dim=1)
    n_neg = negative.sum(dim=1)
    kept_neg = n_neg.clamp(max=n_negatives)
    count = positive.sum(dim=1) + kept_neg
    chosen = rank < count.unsqueeze(1)
    width = max(1, int(count.max()))
    order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :width]  # chosen hours, in time order
    mask = torch.arange(width).unsqueeze(0) < count.unsqueeze(1)
    weight = torch.where(negative, (n_neg / kept_neg.clamp(min=1)).unsqueeze(1).to(torch.float32), 1.0)

    def take(x: torch.Tensor, pad) -> torch.Tensor:
        return torch.where(mask, x.gather(1, order), torch.as_tensor(pad, dtype=x.dtype))

    small = HourlyBatch(
        batch.events, take(batch.hours, 0.0), take(batch.labels, float("nan")),
        torch.where(mask, batch.prefix.gather(1, order), batch.events.lengths.unsqueeze(1)), mask,
        take(batch.query_times, 0.0),
    )  # fmt: skip
    return small, take(weight, 0.0)


class HourlyOutcomeModule(BinaryOutcomeModule):
    """`BinaryOutcomeModule` with a loss over the labelled hours of every stay in the batch (all
    of them, or a reweighted sample with `train_hours_per_stay`)."""

    def __init__(self, model: HyMaTE, config: TrainConfig, pos_weight: float = 1.0) -> None:
        super().__init__(model, config, pos_weight)
        self._val_ids: list[np.ndarray] = []

    def _hourly(self, batch: HourlyBatch, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        weight = None
        if train and self.config.train_hours_per_stay is not None:
            # Seeded by (seed, step): the same hours on a rerun or a resume; own generator, so the
            # global stream (variable dropout) is drawn exactly as without subsampling.
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(self.global_step))
            batch, weight = subsample_hours(batch, self.config.train_hours_per_stay, generator)
        events, prefix = batch.events, batch.prefix
        if train:
            events, prefix = drop_variables(events, self.model.config.variable_dropout, prefix=prefix)
        logits = self.model.forward_hourly(events, prefix, batch.hour_mask, batch.query_times)[..., 0]
        keep = batch.hour_mask & ~torch.isnan(batch.labels)
        return logits[keep], batch.labels[keep], None if weight is None else weight[keep]

    def _weighted_loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is None:
            return self._loss(logits, labels)
        losses = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight, reduction="none")
        return (losses * weight).sum() / weight.sum()

    def training_step(self, batch: HourlyBatch, batch_idx):
        logits, labels, weight = self._hourly(batch, train=True)
        loss = self._weighted_loss(logits, labels, weight)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), prog_bar=True)
        return loss

    def validation_step(self, batch: HourlyBatch, batch_idx):
        logits, labels, _ = self._hourly(batch, train=False)
        self.log("val/loss", self._loss(logits, labels), on_epoch=True, batch_size=len(labels), prog_bar=True)
        keep = batch.hour_mask & ~torch.isnan(batch.labels)
        ids = batch.events.stay_ids.unsqueeze(1).expand_as(keep)[keep]
        self._val_logits.append(logits.detach().float().cpu())
        self._val_labels.append(labels.cpu())
        self._val_ids.append(ids.cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        logits, labels = torch.cat(self._val_logits).numpy(), torch.cat(self._val_labels).numpy()
        ids = np.concatenate(self._val_ids)
        self._val_logits.clear()
        self._val_labels.clear()
        self._val_ids.clear()
        if labels.min() == labels.max():
            return
        # Rows of a stay arrive together and in hour order (one batch row per stay).
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        m = binary_metrics(labels, p)
        _, utility = best_threshold(ids, labels, p)
        self.log_dict({"val/auroc": m["auroc"], "val/ap": m["ap"], "val/utility": utility.normalized,
                       "val/score": utility.normalized}, prog_bar=True)  # fmt: skip


def make_hourly_loader(dataset: HourlyDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_hourly, num_workers=0)


@torch.no_grad()
def predict_hourly(model: HyMaTE, dataset: HourlyDataset, batch_size: int = 64, progress: bool = False) -> pl.DataFrame:
    """A logit for every labelled hour of every stay: one forward pass per stay (batched by length).

    Returns stay_id, hour, label, logit, in the dataset's (stay, hour) order.
    """
    from rich.progress import track

    model.eval()
    logits = np.empty(len(dataset.hours), dtype=np.float32)
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=False)
    for indices in track(list(sampler), description="scoring hours", disable=not progress, transient=True):
        batch = collate_hourly([dataset[i] for i in indices])
        out = model.forward_hourly(batch.events, batch.prefix, batch.hour_mask, batch.query_times)[..., 0].float().numpy()
        for row, i in enumerate(indices):
            a, b = dataset.hour_offsets[i], dataset.hour_offsets[i + 1]
            logits[a:b] = out[row, : b - a]
    return pl.DataFrame({
        "stay_id": np.repeat(dataset.stay_ids, dataset.n_hours), "hour": dataset.hours,
        "label": dataset.hour_labels, "logit": logits,
    })  # fmt: skip


def online_metrics(frame: pl.DataFrame, threshold: float) -> dict:
    """Utility at `threshold`, hourly AUROC and AP of a (stay_id, hour, label, probability) frame."""
    frame = frame.sort("stay_id", "hour")
    y = frame.get_column("label").to_numpy()
    p = frame.get_column("probability").to_numpy()
    ids = frame.get_column("stay_id").to_numpy()
    score = utility_score(ids, y, (p >= threshold).astype(np.int64))
    m = binary_metrics(y, p)
    return {"utility": score.normalized, "auroc": m["auroc"], "ap": m["ap"], "auprc_trapz": m["auprc_trapz"],
            "hours": len(y), "positive_hours": int(y.sum()), "stays": score.stays, "septic_stays": score.septic_stays}  # fmt: skip


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def run_online(
    data: EventData,
    task: Task,
    split: Split,
    model_overrides: dict,
    train: TrainConfig,
    out: Path,
    progress: bool = True,
    resume: bool = True,
    model_name: str = "hymate",
) -> dict:
    """Train on split.train (hourly loss; model options: `ONLINE_MODEL_DEFAULTS` under
    `model_overrides`), select the epoch and the threshold on split.val by
    utility, and score every hour of split.test in one pass per stay. Returns the result row."""
    start = time.perf_counter()
    folder = Path(out) / f"{split.protocol}-split{split.index}-seed{train.seed}"
    done = folder / "metrics.json"
    if resume and done.exists():
        return json.loads(done.read_text())["row"]
    L.seed_everything(train.seed, workers=True, verbose=False)
    normalizer = Normalizer.fit(data, split.train, task.window_hours, task.categorical_statics)
    # Variables the training stays never had (EtCO2 is absent from hospital A) cannot be used: drop, count.
    unknown = data.events.filter(~pl.col("variable").is_in(pl.Series(normalizer.variables).implode()))
    dropped = {part: unknown.filter(pl.col("stay_id").is_in(pl.Series(getattr(split, part)).implode())).height
               for part in ("val", "test")}  # fmt: skip
    datasets = {part: HourlyDataset(data, getattr(split, part), normalizer, unknown_variables="drop")
                for part in ("train", "val", "test")}  # fmt: skip
    y = datasets["train"].hour_labels
    if np.isnan(y).all() or np.nansum(y) == 0:
        raise DataError("the training stays have no positive hour: nothing to learn")
    pos_weight = float((y == 0).sum() / max(1, (y == 1).sum())) if train.pos_weight else 1.0
    overrides = {**ONLINE_MODEL_DEFAULTS, **model_overrides}
    model = build_model(model_name, normalizer.n_variables, len(normalizer.static_names), overrides)
    if not isinstance(model, HyMaTE):
        raise DataError(f"the online task needs a model with an hourly forward (hymate, mamba); got {model_name}")
    module = HourlyOutcomeModule(model, train, pos_weight)

    fit = fit_and_select(
        module,
        make_hourly_loader(datasets["train"], train.batch_size, shuffle=True, seed=train.seed),
        make_hourly_loader(datasets["val"], 2 * train.batch_size, shuffle=False, seed=train.seed),
        train, folder, progress, resume, accelerator="cpu",
    )  # fmt: skip
    model = module.model.cpu().eval()

    val = predict_hourly(model, datasets["val"], progress=progress)
    val = val.with_columns(probability=pl.Series(sigmoid(val["logit"].to_numpy())))
    threshold, val_utility = best_threshold(val["stay_id"].to_numpy(), val["label"].to_numpy(), val["probability"].to_numpy())
    score_start = time.perf_counter()
    test = predict_hourly(model, datasets["test"], progress=progress)
    score_s = time.perf_counter() - score_start
    test = test.with_columns(probability=pl.Series(sigmoid(test["logit"].to_numpy())))
    metrics = online_metrics(test, threshold)
    epochs, train_s = fit.epochs, fit.train_s
    row = {
        "task": "sepsis-online", "model": model_name, "setting": split.protocol, "split": split.index, "seed": train.seed,
        **metrics, "threshold": threshold, "val_utility": val_utility.normalized,
        "train_stays": len(split.train), "val_stays": len(split.val), "test_stays": len(split.test),
        "epochs": epochs, "train_s": round(train_s, 1), "epoch_s": round(train_s / max(1, epochs), 1),
        "score_s": round(score_s, 2), "wall_s": round(time.perf_counter() - start + fit.earlier_s, 1), "peak_mb": round(peak_rss_mb(), 1),
        "params": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    meta = {"task": task.name, "split": split.name, "split_sha256": split.sha256, "train": train.to_dict(),
            "variant": model_name, "threshold": threshold, "pos_weight": pos_weight,
            "dropped_unknown_variable_events": dropped}  # fmt: skip
    save_checkpoint(folder / "checkpoint", model, normalizer, meta)
    test.write_parquet(folder / "predictions.parquet")
    done.write_text(json.dumps({"row": row, **meta}, indent=1))
    return row


def run_online_experiment(data, task, splits, seeds, model_overrides, train, out, progress=True, resume=True,
                          model_name="hymate") -> list[dict]:  # fmt: skip
    return [
        run_online(data, task, split, model_overrides, replace(train, seed=seed), out, progress, resume, model_name)
        for split in splits
        for seed in seeds
    ]
