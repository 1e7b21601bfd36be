"""Every task by name. A new task joins by adding its declaration to a module listed here.

MEDS tasks and table tasks are not declared here: a label file is the task (`hymate.tasks.meds`,
`hymate.tasks.tables`), so `get_task("meds", PATH)` / `get_task("table", PATH)` builds it from the
file, and `task_from_spec` rebuilds it from a checkpoint's task spec.
"""

from __future__ import annotations

from hymate.data import meds, tables
from hymate.errors import HymateError
from hymate.tasks import meds as meds_tasks
from hymate.tasks import physionet2012, physionet2019
from hymate.tasks import tables as table_tasks
from hymate.tasks.base import Task

TASKS: dict[str, Task] = {t.name: t for t in (*physionet2012.TASKS, *physionet2019.TASKS)}
DEFAULT_TASK = {"physionet2012": "physionet2012-mortality", "physionet2019": "physionet2019-sepsis-online"}


def get_task(dataset_or_task: str, task: str | None = None) -> Task:
    """A task by full name, or by dataset and the task's short name (default: the dataset's first
    task); for MEDS, by the path of its label file or folder."""
    if task is None and dataset_or_task in TASKS:
        return TASKS[dataset_or_task]
    if dataset_or_task == meds.NAME:
        if task is None:
            raise HymateError("a MEDS dataset's task is a MEDS label file: pass --task PATH (a .parquet file or a folder of them)")
        return meds_tasks.label_task(task)
    if dataset_or_task == tables.NAME:
        if task is None:
            raise HymateError("a table dataset's task is its label table: pass --task PATH (a .csv or .parquet file, or a folder of them)")
        return table_tasks.label_task(task)
    datasets = sorted({t.dataset for t in TASKS.values()} | {meds.NAME, tables.NAME})
    if dataset_or_task not in datasets:
        raise HymateError(f"unknown dataset or task {dataset_or_task!r}; datasets: {', '.join(datasets)}; "
                          f"tasks: {', '.join(TASKS)}")  # fmt: skip
    if task is None:
        return TASKS[DEFAULT_TASK[dataset_or_task]]
    for t in TASKS.values():
        if t.dataset == dataset_or_task and task in (t.short, t.name):
            return t
    known = ", ".join(t.short for t in TASKS.values() if t.dataset == dataset_or_task)
    raise HymateError(f"unknown task {task!r} for {dataset_or_task}; known: {known}")


def task_from_spec(spec: dict, file=None) -> Task:
    """The task a checkpoint's task spec describes (a label file's task: MEDS, or a table's)."""
    if spec.get("dataset") == tables.NAME:
        return table_tasks.task_from_spec(spec, file)
    return meds_tasks.task_from_spec(spec, file)


def tasks_of(dataset: str) -> list[Task]:
    return [t for t in TASKS.values() if t.dataset == dataset]


def tasks_for_data(dataset: str, root) -> list[Task]:
    """The tasks `hymate prepare` makes split files for: the declared ones, or for a table
    dataset the label table its spec names (none without one)."""
    if dataset == tables.NAME:
        from hymate.data.store import locate

        labels = tables.load_spec(locate(dataset, root)).get("labels")
        return [table_tasks.label_task(labels)] if labels is not None else []
    return tasks_of(dataset)
