"""What a prediction task is: which dataset, which label, which window, how statics are typed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    description: str
    window_hours: float  # observations used: [0, window_hours] after admission
    categorical_statics: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ("strats", "splits5")
