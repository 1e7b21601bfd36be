"""Stays with a prediction at every labelled hour (the online task), batched for one pass per stay.

An item is a stay's time-sorted triplets (as `EventSequenceDataset` gives them, never capped:
dropping a stay's oldest events would make early hours depend on how long the stay lasts),
plus its prediction hours (the label rows' ``prediction_time``), their labels, and for each hour
the number of events with time <= that hour (``prefix``). The model reads events and prefix
counts only, so what it may see at an hour is fixed here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from hymate.data.batching import EventBatch, EventSequenceDataset, collate
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError


@dataclass
class HourlyBatch:
    events: EventBatch
    hours: torch.Tensor  # [B, H] float64 prediction hours (0 at padding)
    labels: torch.Tensor  # [B, H] float32 (NaN where unlabelled or padding)
    prefix: torch.Tensor  # [B, H] int64 events visible at each hour (the stay's length at padding)
    hour_mask: torch.Tensor  # [B, H] bool, True at real hours (a prefix of each row)
    query_times: torch.Tensor  # [B, H] float32 prediction hours on the event clock (`Normalizer.scale_time`; 0 at padding)

    def __len__(self) -> int:
        return int(self.hour_mask.sum())


def prefix_counts(event_pos: np.ndarray, event_times: np.ndarray, hour_pos: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """For every (stay position, hour) row, how many events of that stay have time <= hour.

    Events and hours are sorted by (position, time); positions are 0..n-1. One searchsorted over
    keys position * span + time, exact in float64 for hour-scale times.
    """
    if len(hours) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = min(event_times.min(initial=np.inf), hours.min())
    hi = max(event_times.max(initial=-np.inf), hours.max())
    span = float(hi - lo) + 1.0
    ev_key = event_pos * span + (event_times - lo)
    hr_key = hour_pos * span + (hours - lo)
    n_pos = int(max(event_pos.max(initial=-1), hour_pos.max(initial=-1))) + 1
    starts = np.searchsorted(event_pos, np.arange(n_pos), side="left")
    return np.searchsorted(ev_key, hr_key, side="right") - starts[hour_pos]


class HourlyDataset(Dataset):
    """One item per stay: its events (no cap), statics, prediction hours, hourly labels and prefix counts."""

    def __init__(self, data: EventData, stay_ids, normalizer: Normalizer, unknown_variables: str = "error") -> None:
        self.events = EventSequenceDataset(data, stay_ids, normalizer, max_events=None, unknown_variables=unknown_variables)
        ids = self.events.stay_ids
        order = pl.DataFrame({"stay_id": ids, "_pos": np.arange(len(ids))})
        labels = data.labels.join(order, on="stay_id").sort("_pos", "prediction_time")
        hour_pos = labels.get_column("_pos").to_numpy()
        counts = np.bincount(hour_pos, minlength=len(ids))
        if (counts == 0).any():
            raise DataError(f"{int((counts == 0).sum())} stays have no prediction hours (label rows), e.g. "
                            f"{ids[counts == 0][:5].tolist()}")  # fmt: skip
        self.hour_offsets = np.concatenate([[0], np.cumsum(counts)])
        self.hours = labels.get_column("prediction_time").to_numpy().astype(np.float64)
        self.query_times = normalizer.scale_time(self.hours)  # the hours on the clock of the event times
        self.hour_labels = labels.get_column("label").cast(pl.Float32).fill_null(float("nan")).to_numpy()
        # The raw event times, in the order the event dataset keeps them (by position, then time).
        events = data.events.select("stay_id", "time", "variable")
        if unknown_variables == "drop":
            events = events.filter(pl.col("variable").is_in(pl.Series(normalizer.variables).implode()))
        events = events.join(order, on="stay_id").sort("_pos", "time")
        event_pos = events.get_column("_pos").to_numpy()
        if len(event_pos) != len(self.events.times):
            raise DataError("event counts differ between the event table and the encoded dataset")
        self.prefix = prefix_counts(event_pos, events.get_column("time").to_numpy(), hour_pos, self.hours)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def stay_ids(self) -> np.ndarray:
        return self.events.stay_ids

    @property
    def lengths(self) -> np.ndarray:
        return self.events.lengths

    @property
    def n_hours(self) -> np.ndarray:
        return np.diff(self.hour_offsets)

    def __getitem__(self, i: int) -> dict:
        item = self.events[i]
        a, b = self.hour_offsets[i], self.hour_offsets[i + 1]
        return {**item, "hours": self.hours[a:b], "hour_labels": self.hour_labels[a:b], "prefix": self.prefix[a:b],
                "query_times": self.query_times[a:b]}  # fmt: skip


def collate_hourly(items: list[dict]) -> HourlyBatch:
    events = collate(items)
    n = [len(item["hours"]) for item in items]
    B, H = len(items), max(n)
    hours = np.zeros((B, H), dtype=np.float64)
    labels = np.full((B, H), np.nan, dtype=np.float32)
    query_times = np.zeros((B, H), dtype=np.float32)
    prefix = np.repeat(events.lengths.numpy()[:, None], H, axis=1).astype(np.int64)  # padding: the whole stay
    for row, (item, k) in enumerate(zip(items, n, strict=True)):
        hours[row, :k] = item["hours"]
        labels[row, :k] = item["hour_labels"]
        prefix[row, :k] = item["prefix"]
        query_times[row, :k] = item["query_times"]
    hour_mask = np.arange(H)[None, :] < np.array(n)[:, None]
    return HourlyBatch(events, torch.from_numpy(hours), torch.from_numpy(labels), torch.from_numpy(prefix),
                       torch.from_numpy(hour_mask), torch.from_numpy(query_times))  # fmt: skip
