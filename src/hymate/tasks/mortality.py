"""In-hospital mortality from the first 48 h of an ICU stay (PhysioNet/CinC 2012)."""

from __future__ import annotations

from hymate.data import physionet2012
from hymate.tasks.base import Task

P12_MORTALITY = Task(
    name="physionet2012-mortality",
    dataset=physionet2012.NAME,
    description="In-hospital death (Outcomes 'In-hospital_death') from the first 48 h of ICU data",
    window_hours=physionet2012.WINDOW_HOURS,
    categorical_statics=("icu_type",),
)

TASKS = {P12_MORTALITY.dataset: P12_MORTALITY, P12_MORTALITY.name: P12_MORTALITY}
