"""The one sample type of every task: a stay's events up to its prediction times, batched so that
every prediction time of a sample is scored in one pass.

A task's view (`hymate.tasks`) has a label table, one row per (stay, prediction time). Its input
rule is applied here and only here: a prediction at time t reads the stay's events with time <= t
(and, with a look-back, time > t - lookback) and the stay's statics.

- Without a look-back, a sample is a stay with all its prediction times (one for P12 mortality,
  every stay-hour for online sepsis); its events are those up to its last prediction time, and
  for each prediction time the number of events it may read (``prefix``: events are time-ordered,
  so that is a prefix). A model scores every prediction time of the sample in one pass
  (`HyMaTE.forward_hourly`); a stay-level task is the case with one prediction time.
- With a look-back, each prediction time is a sample of its own, with its own window of events.
- ``max_events`` keeps the most recent events of a sample with one prediction time. It is
  refused for a sample with several: cutting the oldest events of the whole sample would make
  what an early prediction reads depend on how long the stay lasts.

Events are stored once as flat arrays with per-sample offsets (CSR layout), so taking a sample
is a few slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from hymate.data.batching import EventBatch, capped_lengths, collate
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.errors import DataError


@dataclass
class PredictionBatch:
    events: EventBatch
    times: torch.Tensor  # [B, H] float64 prediction times in hours (0 at padding)
    labels: torch.Tensor  # [B, H] float32 (NaN where unlabelled or padding)
    prefix: torch.Tensor  # [B, H] int64 events visible at each prediction time (the sample's length at padding)
    time_mask: torch.Tensor  # [B, H] bool, True at real prediction times (a prefix of each row)
    query_times: torch.Tensor  # [B, H] float32 prediction times on the event clock (0 at padding)

    def __len__(self) -> int:
        return int(self.time_mask.sum())

    @property
    def stay_level(self) -> bool:
        """One prediction per sample that reads all of the sample's events: the plain forward gives it."""
        return self.times.shape[1] == 1 and bool((self.prefix[:, 0] == self.events.lengths).all())


def prefix_counts(event_pos: np.ndarray, event_times: np.ndarray, hour_pos: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """For every (sample position, time) row, how many events of that sample have time <= that time.

    Events and times are sorted by (position, time); positions are 0..n-1. One searchsorted over
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


class PredictionDataset(Dataset):
    """Samples of the given stays of a task's view (see the module docstring)."""

    def __init__(
        self,
        view: EventData,
        stay_ids,
        normalizer: Normalizer,
        max_events: int | None = None,
        lookback_hours: float | None = None,
        unknown_variables: str = "error",
    ) -> None:
        if max_events is not None and max_events < 1:
            raise DataError(f"max_events must be at least 1 (or None for no cap), got {max_events}")
        if lookback_hours is not None and not lookback_hours > 0:
            raise DataError(f"lookback_hours must be > 0 (or None), got {lookback_hours}")
        ids = np.asarray(stay_ids, dtype=np.int64)
        if len(ids) == 0:
            raise DataError("no stays given to the dataset")
        if len(np.unique(ids)) != len(ids):
            raise DataError("stay ids given to the dataset are not unique")
        absent = np.setdiff1d(ids, view.stays.get_column("stay_id").to_numpy())
        if len(absent):
            raise DataError(f"{len(absent)} stay ids are not in dataset {view.name}: {absent[:10].tolist()}")
        order = pl.DataFrame({"stay_id": ids, "_stay_pos": np.arange(len(ids))})
        labels = view.labels.join(order, on="stay_id").sort("_stay_pos", "prediction_time")
        no_times = np.setdiff1d(ids, labels.get_column("stay_id").unique().to_numpy())
        if len(no_times):
            raise DataError(f"{len(no_times)} stays have no prediction time (label row), e.g. {no_times[:5].tolist()}")
        # Samples: one per stay, or one per prediction time with a look-back.
        if lookback_hours is None:
            labels = labels.with_columns(pl.col("_stay_pos").alias("_pos"))
            windows = labels.group_by("_pos", "stay_id").agg(
                pl.lit(-np.inf).alias("_start"), pl.col("prediction_time").max().alias("_end"))
        else:
            labels = labels.with_columns(pl.int_range(pl.len()).alias("_pos"))
            windows = labels.select("_pos", "stay_id", (pl.col("prediction_time") - lookback_hours).alias("_start"),
                                    pl.col("prediction_time").alias("_end"))  # fmt: skip
        windows = windows.sort("_pos")
        per_sample = np.bincount(labels.get_column("_pos").to_numpy(), minlength=windows.height)
        if max_events is not None and (per_sample > 1).any():
            raise DataError("max_events caps samples with one prediction time; these samples have up to "
                            f"{int(per_sample.max())} (a stay's early predictions would read less the longer it lasts)")  # fmt: skip

        # The input rule: the events of each sample's window, nothing later.
        events = view.events.join(windows, on="stay_id", maintain_order="left").filter(
            (pl.col("time") <= pl.col("_end")) & (pl.col("time") > pl.col("_start")))
        known = pl.col("variable").is_in(pl.Series(normalizer.variables, dtype=pl.String).implode())
        self.dropped_unknown = int(events.filter(~known).height) if unknown_variables == "drop" else 0
        encoded = normalizer.encode_events(events.with_columns(pl.col("_pos").alias("stay_id")), unknown=unknown_variables)
        encoded = encoded.rename({"stay_id": "_pos"}).sort("_pos", "time", "var_idx", maintain_order=True)
        event_pos = encoded.get_column("_pos").to_numpy()
        counts = np.bincount(event_pos, minlength=windows.height)
        empty = counts == 0
        if empty.any():
            where = windows.filter(pl.Series(empty)).get_column("stay_id").unique().to_list()
            raise DataError(f"{int(empty.sum())} samples have no events in their window, e.g. stays {where[:5]}")
        self.times = encoded.get_column("t").to_numpy()
        self.variables = encoded.get_column("var_idx").to_numpy().astype(np.int64)
        self.values = encoded.get_column("z").to_numpy()
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.max_events = max_events

        self.stay_ids = windows.get_column("stay_id").to_numpy()  # per sample
        statics = windows.select("_pos", "stay_id").join(view.statics, on="stay_id", how="left").sort("_pos")
        self.statics = normalizer.encode_statics(statics)
        sample_pos = labels.get_column("_pos").to_numpy()
        self.time_offsets = np.concatenate([[0], np.cumsum(per_sample)])
        self.pred_times = labels.get_column("prediction_time").to_numpy().astype(np.float64)
        self.query_times = normalizer.scale_time(self.pred_times)  # on the clock of the event times
        self.labels = labels.get_column("label").cast(pl.Float32).fill_null(float("nan")).to_numpy()
        self.prefix = prefix_counts(event_pos, encoded.get_column("time").to_numpy(), sample_pos, self.pred_times)

    def __len__(self) -> int:
        return len(self.stay_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Events per sample after the cap (what the model reads)."""
        return capped_lengths(self.offsets, self.max_events)

    @property
    def n_times(self) -> np.ndarray:
        return np.diff(self.time_offsets)

    @property
    def row_stay_ids(self) -> np.ndarray:
        """The stay of every prediction row, in dataset order."""
        return np.repeat(self.stay_ids, self.n_times)

    def __getitem__(self, i: int) -> dict:
        start, end = self.offsets[i], self.offsets[i + 1]
        a, b = self.time_offsets[i], self.time_offsets[i + 1]
        prefix = self.prefix[a:b]
        if self.max_events is not None and end - start > self.max_events:  # one prediction time (checked above)
            start = end - self.max_events
            prefix = np.minimum(prefix, self.max_events)
        return {
            "times": self.times[start:end], "variables": self.variables[start:end], "values": self.values[start:end],
            "statics": self.statics[i], "label": self.labels[b - 1], "stay_id": self.stay_ids[i],
            "pred_times": self.pred_times[a:b], "labels": self.labels[a:b], "prefix": prefix,
            "query_times": self.query_times[a:b],
        }  # fmt: skip


def collate_samples(items: list[dict]) -> PredictionBatch:
    events = collate(items)
    n = [len(item["pred_times"]) for item in items]
    B, H = len(items), max(n)
    times = np.zeros((B, H), dtype=np.float64)
    labels = np.full((B, H), np.nan, dtype=np.float32)
    query_times = np.zeros((B, H), dtype=np.float32)
    prefix = np.repeat(events.lengths.numpy()[:, None], H, axis=1).astype(np.int64)  # padding: the whole sample
    for row, (item, k) in enumerate(zip(items, n, strict=True)):
        times[row, :k] = item["pred_times"]
        labels[row, :k] = item["labels"]
        prefix[row, :k] = item["prefix"]
        query_times[row, :k] = item["query_times"]
    time_mask = np.arange(H)[None, :] < np.array(n)[:, None]
    return PredictionBatch(events, torch.from_numpy(times), torch.from_numpy(labels), torch.from_numpy(prefix),
                           torch.from_numpy(time_mask), torch.from_numpy(query_times))  # fmt: skip


def at_last_prediction(view: EventData, lookback_hours: float | None = None) -> EventData:
    """One prediction per stay, at its last prediction time: the view with each stay's events cut
    by the input rule at that time and its label there. For a task with one prediction per stay
    this is the view itself (events after the prediction time removed)."""
    last = view.labels.sort("stay_id", "prediction_time").group_by("stay_id", maintain_order=True).last()
    window = last.select("stay_id", pl.col("prediction_time").alias("_end"))
    events = view.events.join(window, on="stay_id", maintain_order="left").filter(pl.col("time") <= pl.col("_end"))
    if lookback_hours is not None:
        events = events.filter(pl.col("time") > pl.col("_end") - lookback_hours)
    return EventData(view.name, events.drop("_end"), view.statics, last.select("stay_id", "prediction_time", "label"),
                     view.stays, view.report)  # fmt: skip
