"""PhysioNet/CinC 2012 tasks: every prediction at 48 h of the ICU stay, from its first 48 h.

- ``mortality``: in-hospital death (Outcomes ``In-hospital_death``), binary. The challenge's task.
- ``los-3d``: length of stay > 3 days (Outcomes ``Length_of_stay``), binary (Raindrop's label).
- ``los-days``: length of stay in days, regression.
- ``los-bands``: length of stay in 4 bands, multiclass: < 3, 3-7, 8-14 (i.e. > 7 and <= 14), > 14 days.

Length of stay is whole days in the Outcomes files; deaths and survivors are both kept (a death's
length of stay ends at death). A stay whose Length_of_stay is missing or negative (the files use -1
for "unknown": 167 of the 12,000 records, all survivors) has no length-of-stay label: it is in no
split of the three LOS tasks (it can still be scored) and is counted in the view's report
(``task.excluded_stays``). Every stay gets its prediction at 48 h; an unknown label is null.
"""

from __future__ import annotations

import polars as pl

from hymate.data import physionet2012
from hymate.data.schema import EventData
from hymate.tasks.base import Task, excluded

AT = physionet2012.WINDOW_HOURS  # every P12 prediction is made at 48 h
COMMON = dict(dataset=physionet2012.NAME, window_hours=AT, categorical_statics=("icu_type",),
              protocols=("strats", "splits5", "kfold5"))  # fmt: skip
LOS_BANDS = ("< 3 days", "3-7 days", "8-14 days", "> 14 days")


def _at_48h(data: EventData, labels: pl.DataFrame) -> EventData:
    """One prediction per stay at 48 h with its label (null where unknown: new stays to score)."""
    rows = data.stays.select("stay_id", pl.lit(AT, dtype=pl.Float64).alias("prediction_time")).join(
        labels.select("stay_id", pl.col("label").cast(pl.Float64)), on="stay_id", how="left")
    return EventData(data.name, data.events, data.statics, rows, data.stays, data.report)


def _mortality(data: EventData) -> EventData:
    return _at_48h(data, data.labels)


def _los(value: pl.Expr):
    def build(data: EventData) -> EventData:
        known = (pl.col("length_of_stay").is_not_null()) & (pl.col("length_of_stay") >= 0)
        labels = data.stays.select("stay_id", pl.when(known).then(value).alias("label"))
        unknown = data.stays.filter(~known.fill_null(False)).get_column("stay_id").to_list()
        view = _at_48h(data, labels)
        view.report = excluded(data.report, "length of stay missing or -1 (unknown): no label, in no split", unknown)
        return view

    return build


LOS = pl.col("length_of_stay")
TASKS = (
    Task("physionet2012-mortality", "mortality", description="In-hospital death from the first 48 h of ICU data",
         label_type="binary", build=_mortality, positive_label="died in hospital", label_rule="Outcomes In-hospital_death, at 48 h", **COMMON),
    Task("physionet2012-los-3d", "los-3d", description="Length of stay > 3 days, from the first 48 h",
         label_type="binary", build=_los(LOS > 3), positive_label="stay > 3 days",
         label_rule="Length_of_stay > 3 days, at 48 h; stays with a missing or -1 length of stay left out", **COMMON),
    Task("physionet2012-los-days", "los-days", description="Length of stay in days, from the first 48 h",
         label_type="regression", build=_los(LOS),
         label_rule="Length_of_stay in days, at 48 h; stays with a missing or -1 length of stay left out", **COMMON),
    Task("physionet2012-los-bands", "los-bands", description="Length of stay in 4 bands, from the first 48 h",
         label_type="multiclass", classes=LOS_BANDS,
         build=_los(pl.when(LOS < 3).then(0).when(LOS <= 7).then(1).when(LOS <= 14).then(2).otherwise(3)),
         label_rule="Length_of_stay < 3 / 3-7 / 8-14 / > 14 days, at 48 h; missing or -1 left out", **COMMON),
)  # fmt: skip
