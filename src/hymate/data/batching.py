"""Model-ready tensors: a Dataset of time-sorted triplets per stay, a padding collate, and a
length-bucketing sampler.

Events are stored once as flat arrays with per-stay offsets (CSR layout), so indexing a stay
is two slices and a batch of 16 costs microseconds. Stays longer than `max_events` keep their
most recent events (the end of the window matters most for an outcome at its end).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset, Sampler

from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError


@dataclass
class EventBatch:
    """A padded batch. L is the longest stay in the batch (after the event cap)."""

    times: torch.Tensor  # [B, L] float32, time scaled to [-1, 1]; 0 at padding
    variables: torch.Tensor  # [B, L] int64, 1..V; 0 at padding
    values: torch.Tensor  # [B, L] float32, normalised; 0 at padding
    mask: torch.Tensor  # [B, L] bool, True at real events (a prefix of each row)
    statics: torch.Tensor  # [B, S] float32
    labels: torch.Tensor  # [B] float32 (NaN where a stay has no label)
    stay_ids: torch.Tensor  # [B] int64
    query_times: torch.Tensor | None = None  # [B] prediction times on the event clock (HyMaTE query_time); optional
    present: torch.Tensor | None = None  # [B, L] bool, True at events without a value (value 0 there); None if none

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str) -> EventBatch:
        return EventBatch(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return self.labels.shape[0]


def capped_lengths(offsets: np.ndarray, max_events: int | None) -> np.ndarray:
    """Events per item of a CSR layout after keeping at most `max_events` (the most recent) of each."""
    raw = np.diff(offsets)
    return raw if max_events is None else np.minimum(raw, max_events)


class EventSequenceDataset(Dataset):
    """One item per stay: its time-sorted (time, variable, value) triplets, statics and label."""

    def __init__(
        self,
        data: EventData,
        stay_ids: list[int] | np.ndarray,
        normalizer: Normalizer,
        max_events: int | None = None,
        unknown_variables: str = "error",
    ) -> None:
        if max_events is not None and max_events < 1:
            raise DataError(f"max_events must be at least 1 (or None for no cap), got {max_events}")
        ids = np.asarray(stay_ids, dtype=np.int64)
        if len(ids) == 0:
            raise DataError("no stays given to the dataset")
        if len(np.unique(ids)) != len(ids):
            raise DataError("stay ids given to the dataset are not unique")
        known = data.stays.get_column("stay_id").to_numpy()
        absent = np.setdiff1d(ids, known)
        if len(absent):
            raise DataError(f"{len(absent)} stay ids are not in dataset {data.name}: {absent[:10].tolist()}")
        self.max_events = max_events
        self.stay_ids = ids
        order = pl.DataFrame({"stay_id": ids, "_pos": np.arange(len(ids))})

        events = data.events.filter(pl.col("stay_id").is_in(pl.Series(ids).implode()))
        encoded = normalizer.encode_events(events, unknown=unknown_variables).join(order, on="stay_id")
        # Sort by position in `stay_ids`, then time, then variable: the order the model reads.
        encoded = encoded.sort("_pos", "time", "var_idx", maintain_order=True)
        self.times = encoded.get_column("t").to_numpy()
        self.variables = encoded.get_column("var_idx").to_numpy().astype(np.int64)
        self.values = encoded.get_column("z").to_numpy()
        counts = np.bincount(encoded.get_column("_pos").to_numpy(), minlength=len(ids))
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        if (counts == 0).any():
            raise DataError(f"{int((counts == 0).sum())} stays have no events, e.g. {ids[counts == 0][:5].tolist()}")

        statics = order.join(data.statics, on="stay_id", how="left").sort("_pos")
        self.statics = normalizer.encode_statics(statics)
        labels = order.join(data.labels.select("stay_id", "label"), on="stay_id", how="left").sort("_pos")
        self.labels = labels.get_column("label").cast(pl.Float32).fill_null(float("nan")).to_numpy()

    def __len__(self) -> int:
        return len(self.stay_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Events per stay after the cap (what the model sees)."""
        return capped_lengths(self.offsets, self.max_events)

    def __getitem__(self, i: int) -> dict[str, np.ndarray | float | int]:
        start, end = self.offsets[i], self.offsets[i + 1]
        if self.max_events is not None:
            start = max(start, end - self.max_events)  # keep the most recent events
        return {
            "times": self.times[start:end],
            "variables": self.variables[start:end],
            "values": self.values[start:end],
            "statics": self.statics[i],
            "label": self.labels[i],
            "stay_id": self.stay_ids[i],
        }


def collate(items: list[dict]) -> EventBatch:
    """Right-pad a list of stays into an EventBatch."""
    lengths = [len(item["times"]) for item in items]
    batch, width = len(items), max(lengths)
    times = np.zeros((batch, width), dtype=np.float32)
    variables = np.zeros((batch, width), dtype=np.int64)
    values = np.zeros((batch, width), dtype=np.float32)
    mask = np.zeros((batch, width), dtype=bool)
    for row, (item, n) in enumerate(zip(items, lengths, strict=True)):
        times[row, :n] = item["times"]
        variables[row, :n] = item["variables"]
        values[row, :n] = item["values"]
        mask[row, :n] = True
    # An event without a value (a MEDS code with no numeric value) arrives as NaN: it is "present",
    # flagged for the models' embedding, and its value is 0 for every other computation.
    present = np.isnan(values)
    values[present] = 0.0
    return EventBatch(
        times=torch.from_numpy(times),
        variables=torch.from_numpy(variables),
        values=torch.from_numpy(values),
        mask=torch.from_numpy(mask),
        statics=torch.from_numpy(np.stack([item["statics"] for item in items])),
        labels=torch.tensor([item["label"] for item in items], dtype=torch.float32),
        stay_ids=torch.tensor([item["stay_id"] for item in items], dtype=torch.int64),
        present=torch.from_numpy(present) if present.any() else None,
    )


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length stays, in random order, reproducible from (seed, epoch).

    Each epoch shuffles all stays, cuts the order into pools of `batch_size * pool_batches`,
    sorts each pool by length and cuts it into batches, then shuffles the batches. Padding
    shrinks to a few percent while batches stay random. Call `set_epoch` each epoch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = batch_size * pool_batches
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> LengthBucketSampler:
        """Itself: Lightning calls `set_epoch` on a loader's `sampler` and `batch_sampler.sampler`,
        never on the batch sampler itself; without this every epoch would draw epoch 0's batches."""
        return self

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        pools = [min(self.pool, len(self.lengths) - s) for s in range(0, len(self.lengths), self.pool)]
        if self.drop_last:
            return sum(n // self.batch_size for n in pools)
        return sum(-(-n // self.batch_size) for n in pools)
