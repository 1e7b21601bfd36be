"""Sepsis (PhysioNet/CinC 2019): the online early-warning task and the stay-level task.

- Online (the challenge's task): a prediction at every labelled ICU hour from the data up to that
  hour (``physionet2019`` keeps one label row per hour, ``prediction_time`` = ICULOS). Scored by
  the challenge's normalised utility (threshold chosen on validation) plus AUROC / AUPRC over all
  hours. Time is scaled by one fixed clock (`CLOCK_HOURS`), never by a stay's own length, which
  would tell the model at hour 3 how long the stay will last. Settings:

  * ``kfold5``: five folds over the stays of both hospitals (each stay in one fold, so all its
    hours are together), stratified by sepsis at any hour; fold k is the test set, the other
    stays are split 8:1 into train/validation (stratified), i.e. ~70/10/20.
  * ``a2b``: train/validation on hospital system A (9:1, stratified), test on all of B (external
    validation).

- Stay-level (the Raindrop protocol of the peer table): one label per stay (SepsisLabel 1 at any
  hour of the stay), observations of the stay's first `STAY_WINDOW_HOURS` released hours (time
  re-based to the first row), five stratified 80/10/10 splits (``splits5``, as for P12).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedKFold, train_test_split

from hymate.data import physionet2019
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.tasks.base import Task
from hymate.tasks.splits import Split, _split, stays_fingerprint

CLOCK_HOURS = 336.0  # fixed time scale of the online task: t = 2 * hours / 336 - 1 (the longest ICULOS)
STAY_WINDOW_HOURS = 60.0
ONLINE_SETTINGS = ("kfold5", "a2b")

SEPSIS_ONLINE = Task(
    name="physionet2019-sepsis-online",
    dataset=physionet2019.NAME,
    description="Sepsis 6 h ahead (SepsisLabel) at every ICU hour, from the data up to that hour",
    window_hours=CLOCK_HOURS,
    protocols=ONLINE_SETTINGS,
)
SEPSIS_STAY = Task(
    name="physionet2019-sepsis-stay",
    dataset=physionet2019.NAME,
    description="Sepsis at any time of the stay (any SepsisLabel), from the first 60 hours",
    window_hours=STAY_WINDOW_HOURS,
    protocols=("splits5",),
)
TASKS = {"sepsis-online": SEPSIS_ONLINE, "sepsis-stay": SEPSIS_STAY}


def stay_level_data(data: EventData, hours: float = STAY_WINDOW_HOURS) -> EventData:
    """One label per stay and the events of its first `hours` released hours, times from 0.

    A stay's first row is its first label row (ICULOS may start above 1); events with
    time - first < hours are kept, i.e. the rows first .. first + hours - 1.
    """
    if data.name != physionet2019.NAME:
        raise DataError(f"the sepsis stay-level task needs {physionet2019.NAME} data, got {data.name}")
    first = data.labels.group_by("stay_id").agg(pl.col("prediction_time").min().alias("_first"))
    events = (
        data.events.join(first, on="stay_id", how="inner")
        .with_columns((pl.col("time") - pl.col("_first")).alias("time"))
        .filter((pl.col("time") >= 0) & (pl.col("time") < hours))
        .drop("_first")
        .sort("stay_id", "time", "variable", maintain_order=True)
    )
    labels = physionet2019.stay_labels(data).select(
        "stay_id", pl.lit(hours, dtype=pl.Float64).alias("prediction_time"), "label"
    )
    counts = events.group_by("stay_id").len("n_events").with_columns(pl.col("n_events").cast(pl.Int64))
    stays = data.stays.drop("n_events").join(counts, on="stay_id", how="left").with_columns(pl.col("n_events").fill_null(0))
    with_events = stays.filter(pl.col("n_events") > 0).get_column("stay_id")
    report = {**data.report, "stay_level": {"window_hours": hours, "stays_without_events": stays.height - len(with_events)}}
    keep = pl.col("stay_id").is_in(with_events.implode())
    return EventData(name=data.name, events=events, statics=data.statics.filter(keep), labels=labels.filter(keep),
                     stays=stays.filter(keep).select("stay_id", "split_group", "n_events"), report=report)  # fmt: skip


def online_data(data: EventData) -> EventData:
    """The stays the online task can score: those with at least one event (2 of 40,336 have none)."""
    keep = pl.col("stay_id").is_in(data.stays.filter(pl.col("n_events") > 0).get_column("stay_id").implode())
    return EventData(name=data.name, events=data.events, statics=data.statics.filter(keep),
                     labels=data.labels.filter(keep), stays=data.stays.filter(keep), report=data.report)  # fmt: skip


def online_splits(data: EventData, setting: str, seed: int = 0) -> list[Split]:
    """The splits of an online setting (five for kfold5, one for a2b), stratified by stay label."""
    if setting not in ONLINE_SETTINGS:
        raise DataError(f"unknown online setting {setting!r}; known: {', '.join(ONLINE_SETTINGS)}")
    per_stay = physionet2019.stay_labels(data).join(data.stays.select("stay_id", "split_group"), on="stay_id")
    ids = per_stay.get_column("stay_id").to_numpy()
    y = per_stay.get_column("label").to_numpy().astype(np.int64)
    fp = stays_fingerprint(data)
    if setting == "a2b":
        group = per_stay.get_column("split_group").to_numpy()
        if not {"A", "B"} <= set(group.tolist()):
            raise DataError(f"the a2b setting needs both hospital systems A and B; found {sorted(set(group.tolist()))}")
        a = group == "A"
        train, val = train_test_split(ids[a], test_size=0.1, stratify=y[a], random_state=seed)
        return [_split(data.name, "a2b", seed, 0, fp, train, val, ids[~a])]
    splits = []
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(ids, y)
    for k, (rest, test) in enumerate(folds):
        train, val = train_test_split(ids[rest], test_size=1 / 8, stratify=y[rest], random_state=seed * 1000 + k)
        splits.append(_split(data.name, "kfold5", seed, k, fp, train, val, ids[test]))
    return splits


def load_or_make_online_splits(data: EventData, setting: str, seed: int, folder: Path) -> list[Split]:
    """The setting's split files from `folder` (verified against a fresh draw), written first if absent."""
    loaded = []
    for split in online_splits(data, setting, seed):
        path = Path(folder) / f"{split.name}.json"
        if path.exists():
            stored = Split.load(path, data)
            if stored.sha256 != split.sha256:
                raise DataError(f"split file {path} differs from the split drawn with seed {seed}; remove it to redraw")
            loaded.append(stored)
        else:
            split.save(Path(folder))
            loaded.append(split)
    return loaded
