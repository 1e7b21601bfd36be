"""Everything preparation left out, as one list: what the screen shows is what report.json counts.

A reader's report keeps its losses under a few keys (stays excluded, lines or values skipped,
statics that changed within a stay, Outcomes rows without a record); a task adds the stays it
cannot label. `losses` flattens all of them into rows for the CLI's table; `unclassified_keys`
names any count in a report that is neither a loss listed here nor a known non-loss figure, so a
reader that starts counting a new kind of loss cannot leave it off the screen (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loss:
    kind: str  # "stays", "lines", "values", "statics", "outcome rows", "task stays"
    reason: str
    count: int
    example: str = ""


# Report keys holding losses: key -> kind of thing lost. Entries are {reason: {"count", ...}}.
_ENTRIES = {"excluded_stays": "stays", "skipped_lines": "lines", "skipped_values": "values", "static_changes": "statics"}
# Report keys holding a single count of lost things: key -> (kind, reason).
_COUNTS = {"outcome_rows_without_record": ("outcome rows", "an Outcomes row whose RecordID has no record file")}
# Counts in a report that are not losses (sizes, descriptions, accounting totals).
NOT_LOSSES = {
    "records_read", "stays", "events", "hourly_rows", "label_rows", "stays_without_labels",
    "stays_starting_after_hour_1", "stays_without_events", "stays_whose_label_returns_to_0",
    "rows_read", "valueless_events",  # MEDS and table readers: rows read, events without a value (kept)
}  # fmt: skip


def losses(report: dict) -> list[Loss]:
    rows: list[Loss] = []
    for key, kind in _ENTRIES.items():
        rows += _entries(kind, report.get(key) or {})
    for key, (kind, reason) in _COUNTS.items():
        if count := report.get(key) or 0:
            rows.append(Loss(kind, reason, int(count)))
    rows += _entries("task stays", (report.get("task") or {}).get("excluded_stays") or {})
    return rows


def _entries(kind: str, entries: dict) -> list[Loss]:
    out = []
    for reason, entry in entries.items():
        examples = entry.get("examples") or entry.get("ids") or []
        out.append(Loss(kind, reason, int(entry["count"]), ", ".join(map(str, examples[:3]))))
    return out


def summary(report: dict) -> str:
    """One line: 'left out: nothing', or the counts by kind."""
    by_kind: dict[str, int] = {}
    for loss in losses(report):
        by_kind[loss.kind] = by_kind.get(loss.kind, 0) + loss.count
    if not by_kind:
        return "left out: nothing"
    return "left out: " + ", ".join(f"{n:,} {kind}" for kind, n in by_kind.items())


def unclassified_keys(report: dict) -> list[str]:
    """Top-level integer counts of `report` that are neither losses nor known non-losses."""
    known = NOT_LOSSES | set(_ENTRIES) | set(_COUNTS)
    return sorted(k for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool) and k not in known)
