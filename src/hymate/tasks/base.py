"""What a prediction task is: a label table plus the rule that says what a prediction may read.

A task turns a prepared dataset (`EventData`, what a reader produced) into its *view*: the same
four tables where ``labels`` is the task's label table, one row per prediction,

    stay_id (i64), prediction_time (f64 hours, on the clock of the event times), label (f64, null if unknown)

with ``label`` a 0/1 outcome (binary), a class index 0..K-1 (multiclass) or a number (regression).
This is the MEDS label schema (subject_id, prediction_time, boolean_value | integer_value |
float_value) with the value column chosen by the task's label type. A stay may have one
prediction (P12 mortality at 48 h) or many (online sepsis: one per stay-hour).

The input rule is the same for every task: a prediction at time t reads the stay's events with
time <= t (and, with `lookback_hours`, time > t - lookback), its statics, and nothing else.
`hymate.data.samples` applies it, in one place.

Everything else a task declares is data: which split protocols it supports, its training recipe
(defaults of `TrainConfig` measured for it), model options (e.g. the prediction time as an
input), how validation selects the epoch and hyper-parameters, and an optional decision metric
whose threshold is chosen on validation (the P19 utility).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from hymate.data.schema import EventData
from hymate.errors import DataError
from hymate.evaluate.scores import DEFAULT_SELECTION

LABEL_TYPES = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Task:
    name: str  # full name, e.g. "physionet2012-mortality"; `short` is what `--task` takes
    short: str
    dataset: str
    description: str
    label_type: str
    build: Callable[[EventData], EventData] = field(repr=False, compare=False)  # the task's view of the data
    window_hours: float = 48.0  # the clock: event and prediction times t are embedded as 2 t / window - 1
    classes: tuple[str, ...] = ()  # multiclass: the class names, index = label
    lookback_hours: float | None = None  # a prediction reads events with time > t - lookback only
    categorical_statics: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ("splits5", "kfold5")
    recipe: dict = field(default_factory=dict, compare=False)  # TrainConfig defaults for this task
    model_defaults: dict = field(default_factory=dict, compare=False)  # model options, under any given
    selection: str | None = None  # validation score (default by label type)
    threshold_metric: str | None = None  # a decision metric whose threshold is chosen on validation
    tabular_grid: dict | None = field(default=None, compare=False)  # LightGBM grid (default: the model's)
    positive_label: str = "positive"  # binary: what label 1 means, in words (reports, explanations)
    label_rule: str = ""  # one line: how the label is made and which stays are left out (for reports)
    min_code_count: int = 0  # codes rarer in training map to their prefix's "other" token (Normalizer.min_count)
    spec: dict | None = field(default=None, compare=False)  # a task built from a file (MEDS labels): how to rebuild it

    def __post_init__(self) -> None:
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"task {self.name}: label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        if (self.label_type == "multiclass") != bool(self.classes):
            raise ValueError(f"task {self.name}: a multiclass task names its classes (and only it)")

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.label_type == "multiclass" else 1

    @property
    def selection_metric(self) -> str:
        return self.selection or DEFAULT_SELECTION[self.label_type]

    def view(self, data: EventData) -> EventData:
        """The task's view of `data`, its label table checked (types, classes, order, duplicates)."""
        if data.name != self.dataset:
            raise DataError(f"task {self.name} needs {self.dataset} data, got {data.name}")
        view = self.build(data)
        labels = view.labels.with_columns(pl.col("label").cast(pl.Float64), pl.col("prediction_time").cast(pl.Float64))
        check_label_table(labels, self)
        labels = labels.sort("stay_id", "prediction_time")
        # A stay with no prediction time cannot be scored: it leaves the view (the build says why, in its report).
        keep = pl.col("stay_id").is_in(labels.get_column("stay_id").unique().implode())
        report = {**view.report, "task": {"name": self.name, "label_type": self.label_type, "rule": self.label_rule,
                                          **view.report.get("task", {})}}  # fmt: skip
        return EventData(name=view.name, events=view.events.filter(keep), statics=view.statics.filter(keep),
                         labels=labels, stays=view.stays.filter(keep), report=report)  # fmt: skip


def check_label_table(labels: pl.DataFrame, task: Task) -> None:
    """A clear error for a label table the pipeline cannot use."""
    for column in ("stay_id", "prediction_time", "label"):
        if column not in labels.columns:
            raise DataError(f"task {task.name}: label table lacks the column {column!r}")
    times = labels.get_column("prediction_time")
    if times.null_count() or not times.is_finite().all():
        raise DataError(f"task {task.name}: {times.null_count() + int((~times.is_finite()).sum())} prediction times are null or not finite")
    if labels.select(pl.struct("stay_id", "prediction_time").is_duplicated().any()).item():
        raise DataError(f"task {task.name}: a stay has two labels at the same prediction time")
    y = labels.get_column("label").drop_nulls()
    if len(y) and not y.is_finite().all():
        raise DataError(f"task {task.name}: labels must be finite numbers")
    if task.label_type == "binary" and len(y) and not y.is_in([0.0, 1.0]).all():
        raise DataError(f"task {task.name}: binary labels must be 0 or 1")
    if task.label_type == "multiclass" and len(y):
        bad = ~y.is_in([float(k) for k in range(len(task.classes))])
        if bad.any():
            raise DataError(f"task {task.name}: class labels must be 0..{len(task.classes) - 1}, got e.g. {y.filter(bad).head(3).to_list()}")


def excluded(report: dict, reason: str, ids: list[int]) -> dict:
    """`report` with stays left out of a task recorded under task.excluded_stays (nothing goes silently)."""
    task = dict(report.get("task", {}))
    task.setdefault("excluded_stays", {})[reason] = {"count": len(ids), "ids": sorted(ids)[:20]}
    return {**report, "task": task}
