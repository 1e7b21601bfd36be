"""Runs of the two sepsis tasks (PhysioNet 2019) by name: what `hymate train physionet2019 --task`
and `benchmarks/p19.py` call.

Every run returns one row ``{"task", "model", "setting", "split", "seed", "utility", "auroc",
"ap", "train_s", "score_s", ...}`` (utility is None for the stay-level task) and skips itself when
its folder already holds a finished result (`resume`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hymate.data.schema import EventData
from hymate.errors import HymateError
from hymate.tasks.sepsis import (
    ONLINE_SETTINGS,
    SEPSIS_ONLINE,
    SEPSIS_STAY,
    load_or_make_online_splits,
    online_data,
    stay_level_data,
)
from hymate.tasks.splits import Split, load_or_make_splits, subsample
from hymate.train.module import TrainConfig

ONLINE_MODELS = ("hymate", "mamba", "lightgbm")
STAY_MODELS = ("hymate", "mamba", "lightgbm", "logreg")
# The stay-level model also embeds where the record ends (the time of its last event in the 60 h
# window): on this protocol that time is itself a strong cue (benchmarks/NOTES.md), which a tree
# reads off its summary features and the attention poolings do not. Under any overrides given.
STAY_MODEL_DEFAULTS = {"query_time": True}
# The training recipe of `hymate train physionet2019` when none is given, measured on P19
# (benchmarks/NOTES.md, "The learning rate, not the budget"): P12's 1e-3 after a one-epoch warm-up
# left 1,000-step runs barely past a constant predictor; 3e-3 after a quarter epoch did not.
SEPSIS_TRAINING = {"lr": 3e-3, "warmup_epochs": 0.25, "ema_decay": 0.99}


def sepsis_splits(data: EventData, task: str, setting: str, seed: int, folder: Path) -> tuple[EventData, list[Split]]:
    """The task's view of the data and the setting's split files (drawn and saved on first use)."""
    if task == "sepsis-online":
        if setting not in ONLINE_SETTINGS:
            raise HymateError(f"unknown online setting {setting!r}; known: {', '.join(ONLINE_SETTINGS)}")
        view = online_data(data)
        return view, load_or_make_online_splits(view, setting, seed, folder)
    if task == "sepsis-stay":
        if setting != "splits5":
            raise HymateError(f"the stay-level task has one setting, splits5; got {setting!r}")
        view = stay_level_data(data)
        return view, load_or_make_splits(view, "splits5", seed, folder)
    raise HymateError(f"unknown sepsis task {task!r}; known: sepsis-online, sepsis-stay")


def run_sepsis(
    view: EventData,
    task: str,
    model: str,
    split: Split,
    train: TrainConfig,
    out: Path,
    model_overrides: dict | None = None,
    progress: bool = True,
    resume: bool = True,
) -> dict:
    """One run of `model` on one split of `task` (data as `sepsis_splits` returned it)."""
    overrides = model_overrides or {}
    if task == "sepsis-online":
        if model not in ONLINE_MODELS:
            raise HymateError(f"model {model!r} has no online mode; choose from {', '.join(ONLINE_MODELS)}")
        if model == "lightgbm":
            from hymate.models.online_tabular import run_lightgbm_online

            return run_lightgbm_online(view, split, train.seed, out / model, resume=resume)
        from hymate.train.online import run_online

        return run_online(view, SEPSIS_ONLINE, split, overrides, train, out / model, progress, resume, model)
    if model not in STAY_MODELS:
        raise HymateError(f"unknown stay-level model {model!r}; choose from {', '.join(STAY_MODELS)}")
    if model in ("lightgbm", "logreg"):
        from hymate.models.tabular import run_tabular

        row = run_tabular(model, view, SEPSIS_STAY, split, train.seed, out, resume=resume)
    else:
        from hymate.train.run import run_one

        options = {**STAY_MODEL_DEFAULTS, **overrides}
        row = run_one(view, SEPSIS_STAY, split, options, train, out / model, progress, resume, model_name=model)
    return {"task": task, "setting": split.protocol, "utility": None, **row}


def run_sepsis_experiment(
    data: EventData,
    task: str,
    models: list[str],
    setting: str,
    split_indices: list[int] | None,
    seeds: list[int],
    train: TrainConfig,
    out: Path,
    splits_folder: Path,
    train_stays: int | None = None,
    eval_stays: int | None = None,
    split_seed: int = 0,
    model_overrides: dict | None = None,
    progress: bool = True,
    resume: bool = True,
) -> list[dict]:
    view, splits = sepsis_splits(data, task, setting, split_seed, splits_folder)
    if split_indices is not None:
        splits = [s for s in splits if s.index in set(split_indices)]
    if train_stays or eval_stays:
        splits = [subsample(s, train_stays, eval_stays, split_seed) for s in splits]
    rows = []
    for model in models:
        for split in splits:
            for seed in seeds:
                config = replace(train, seed=seed)
                rows.append(run_sepsis(view, task, model, split, config, out, model_overrides, progress, resume))
    return rows


def train_command(console, task: str, setting: str, model: str, seeds: list[int], splits: list[int] | None, out: Path,
                  train: TrainConfig, overrides: dict, train_stays: int | None, eval_stays: int | None, split_seed: int,
                  resume: bool, data_dir: Path | None, cache: Path | None, progress: bool) -> list[dict]:  # fmt: skip
    """`hymate train physionet2019 --task sepsis-online|sepsis-stay`: run, then print one row per run."""
    from rich.table import Table

    from hymate.data.store import cache_dir, load_dataset

    if task not in ("sepsis-online", "sepsis-stay"):
        raise HymateError(f"unknown task {task!r} for physionet2019; known: sepsis-online, sepsis-stay")
    if setting == "strats":  # the CLI's default protocol: take the task's default setting
        setting = "kfold5" if task == "sepsis-online" else "splits5"
    data = load_dataset("physionet2019", data_dir, cache, progress=progress)
    rows = run_sepsis_experiment(data, task, [model], setting, splits, seeds, train, Path(out), cache_dir(cache) / "splits",
                                 train_stays, eval_stays, split_seed, overrides, progress, resume)  # fmt: skip
    table = Table("setting", "split", "seed", "utility", "AUROC", "AP", "train s", "score s", title=f"{model} on {task} (test)")
    fmt = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        table.add_row(r["setting"], str(r["split"]), str(r["seed"]), fmt(r.get("utility")), fmt(r["auroc"]), fmt(r["ap"]),
                      fmt(r.get("train_s"), ".0f"), fmt(r.get("score_s"), ".1f"))  # fmt: skip
    console.print(table)
    console.print(f"runs in {out}")
    return rows
