"""PhysioNet/CinC 2019 sepsis tasks.

- ``sepsis-online`` (the challenge's task): a prediction at every labelled ICU hour (the reader's
  label rows, prediction_time = ICULOS) from the data up to that hour. Validation selects the
  epoch by the challenge's normalised utility and chooses the alarm threshold, which test then
  uses; hourly AUROC / AP are reported beside it. Time is scaled by one fixed clock
  (`CLOCK_HOURS`), never by a stay's own length, which would tell the model at hour 3 how long
  the stay will last. Protocols: ``kfold5`` (both hospitals) and ``a2b`` (train on A, test on B).
- ``sepsis-stay`` (the Raindrop protocol of the peer table): one label per stay (SepsisLabel 1 at
  any hour), from the stay's first `STAY_WINDOW_HOURS` released hours (times re-based to its
  first row), predicted where that window or the record ends, whichever is first: the
  prediction time is the time of the stay's last event in the window. Protocol ``splits5``.

Stays with no event at all (2 of 40,336) cannot be scored and are left out (counted).
The training recipes were measured on P19 (benchmarks/NOTES.md, "The learning rate, not the
budget"): P12's 1e-3 after a one-epoch warm-up left runs barely past a constant predictor.
"""

from __future__ import annotations

import polars as pl

from hymate.data import physionet2019
from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.tasks.base import Task, excluded

CLOCK_HOURS = 336.0  # the online task's time scale: t = 2 * hours / 336 - 1 (the longest ICULOS)
STAY_WINDOW_HOURS = 60.0
RECIPE = {"lr": 3e-3, "warmup_epochs": 0.25, "ema_decay": 0.99}
# The online LightGBM's grid: ~1.5 M training hours make the stay-level grid too costly.
ONLINE_GRID = {"num_leaves": [31, 63], "learning_rate": [0.05], "min_child_samples": [100], "feature_fraction": [0.7]}


def _with_events(data: EventData, view: EventData) -> EventData:
    empty = view.stays.filter(pl.col("n_events") == 0).get_column("stay_id")
    keep = ~pl.col("stay_id").is_in(empty.implode())
    report = excluded(view.report, "no events", empty.to_list())
    return EventData(view.name, view.events, view.statics.filter(keep), view.labels.filter(keep), view.stays.filter(keep), report)


def online(data: EventData) -> EventData:
    """Every hour of every stay: the reader's label rows, and for a stay without labels (new stays
    to score) its hours first_hour .. first_hour + n_hours - 1 with no label."""
    labelled = data.labels.select("stay_id", "prediction_time", pl.col("label").cast(pl.Float64))
    unlabelled = data.stays.join(labelled.select("stay_id").unique(), on="stay_id", how="anti")
    if unlabelled.height and not {"first_hour", "n_hours"} <= set(unlabelled.columns):
        raise DataError(f"{unlabelled.height} stays have no label rows and the stays table has no first_hour / n_hours "
                        "to place their hourly predictions")  # fmt: skip
    hours = unlabelled.select(
        "stay_id", pl.int_ranges("first_hour", pl.col("first_hour") + pl.col("n_hours")).alias("prediction_time")
    ).explode("prediction_time").drop_nulls("prediction_time")
    labels = pl.concat([labelled, hours.select("stay_id", pl.col("prediction_time").cast(pl.Float64),
                                              pl.lit(None, dtype=pl.Float64).alias("label"))])  # fmt: skip
    return _with_events(data, EventData(data.name, data.events, data.statics, labels, data.stays, data.report))


def stay_level(data: EventData, hours: float = STAY_WINDOW_HOURS) -> EventData:
    """One label per stay (any SepsisLabel) at the time of its last event in its first `hours`
    released hours (rows first .. first + hours - 1), times re-based to its first row."""
    if "first_hour" not in data.stays.columns:
        raise DataError("the stays table has no first_hour (the ICULOS of each stay's first row)")
    first = data.stays.select("stay_id", pl.col("first_hour").cast(pl.Float64).alias("_first"))
    events = (
        data.events.join(first, on="stay_id", how="inner")
        .with_columns((pl.col("time") - pl.col("_first")).alias("time"))
        .filter((pl.col("time") >= 0) & (pl.col("time") < hours))
        .drop("_first")
        .sort("stay_id", "time", "variable", maintain_order=True)
    )
    ends = events.group_by("stay_id").agg(pl.col("time").max().alias("prediction_time"), pl.len().cast(pl.Int64).alias("n_events"))
    known = physionet2019.stay_labels(data).select("stay_id", pl.col("label").cast(pl.Float64))
    labels = ends.select("stay_id", "prediction_time").join(known, on="stay_id", how="left")  # null: unknown
    stays = data.stays.drop("n_events").join(ends.select("stay_id", "n_events"), on="stay_id", how="left")
    stays = stays.with_columns(pl.col("n_events").fill_null(0))
    view = EventData(data.name, events, data.statics, labels.select("stay_id", "prediction_time", "label"),
                     stays.select("stay_id", "split_group", "n_events"), data.report)  # fmt: skip
    return _with_events(data, view)


TASKS = (
    Task("physionet2019-sepsis-online", "sepsis-online", physionet2019.NAME,
         "Sepsis 6 h ahead (SepsisLabel) at every ICU hour, from the data up to that hour", "binary", online,
         window_hours=CLOCK_HOURS, protocols=("kfold5", "a2b"),
         recipe={**RECIPE, "train_hours_per_stay": 8, "max_events": None}, model_defaults={"query_time": True},
         selection="utility", threshold_metric="utility", tabular_grid=ONLINE_GRID, positive_label="sepsis within 6 h",
         label_rule="SepsisLabel at every ICU hour (ICULOS); stays without events left out"),
    Task("physionet2019-sepsis-stay", "sepsis-stay", physionet2019.NAME,
         "Sepsis at any time of the stay (any SepsisLabel), from the first 60 hours", "binary", stay_level,
         window_hours=STAY_WINDOW_HOURS, protocols=("splits5", "kfold5"), recipe=RECIPE,
         model_defaults={"query_time": True}, positive_label="sepsis during the stay",
         label_rule="any SepsisLabel of the stay, at the end of its first 60 h or of its record"),
)  # fmt: skip
