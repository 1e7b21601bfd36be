"""benchmarks/p19.py --report: which runs make a budget complete, and the tables built from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "p19.py"


@pytest.fixture(scope="module")
def p19():
    spec = importlib.util.spec_from_file_location("p19_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(task, model, setting, split, budget, auroc, ap=0.1, utility=0.3):
    return {"task": task, "model": model, "setting": setting, "split": split, "seed": 0, "budget": budget,
            "auroc": auroc, "ap": ap, "utility": utility, "train_s": 10.0, "score_s": 1.0, "hours": 100}  # fmt: skip


def test_only_budgets_with_every_fold_are_complete(p19):
    five = [row("sepsis-online", "lightgbm", "kfold5", k, "b1", 0.8) for k in range(5)]
    four = [row("sepsis-online", "hymate", "kfold5", k, "b1-qt", 0.7) for k in range(4)]  # one fold missing
    a2b = [row("sepsis-online", "hymate", "a2b", 0, "b1-qt", 0.7)]
    stay = [row("sepsis-stay", "lightgbm", "splits5", k, "b2", 0.9, utility=None) for k in [0, 1, 2, 3, 3]]  # 4 distinct
    kept = p19.complete(five + four + a2b + stay)
    assert kept == five + a2b


def test_tables_give_mean_and_sd_per_model_setting_and_budget_in_a_stable_order(p19):
    rows = [row("sepsis-online", "lightgbm", "kfold5", k, "b1", a) for k, a in enumerate([0.80, 0.82, 0.84, 0.86, 0.88])]
    rows += [row("sepsis-online", "hymate", "a2b", 0, "b1-qt", 0.75)]
    rows += [row("sepsis-online", "hymate", "kfold5", k, "b1-qt", 0.7) for k in range(5)]
    rows += [row("sepsis-stay", "lightgbm", "splits5", k, "b2", a, ap=0.5, utility=None)
             for k, a in enumerate([0.90, 0.91, 0.92, 0.93, 0.94])]  # fmt: skip
    online, stay = p19.tables(rows)
    # kfold5 before a2b; at one setting, budgets sorted, then models
    assert [(line[0], line[1], line[2]) for line in online["rows"]] == [
        ("LightGBM", "kfold5", "b1"), ("HyMaTE", "kfold5", "b1-qt"), ("HyMaTE", "a2b", "b1-qt")]  # fmt: skip
    lightgbm = online["rows"][0]
    assert lightgbm[3] == "5" and lightgbm[5] == "0.8400 ± 0.0316"  # AUROC mean ± sample sd
    assert online["rows"][2][5] == "0.7500"  # one run: no spread
    assert lightgbm[-1] == "500"  # test hours summed over folds
    peers = len(p19.PEERS)
    assert [line[0] for line in stay["rows"][:peers]] == list(p19.PEERS)
    assert stay["rows"][peers][:4] == ["LightGBM (ours)", "b2", "92.0 ± 1.6", "50.0 ± 0.0"]  # in percent
    md = p19.markdown(stay)
    assert md.splitlines()[2].startswith("| model | budget | AUROC %") and "| MTM |  | 90.3 | 58.3 |" in md


def test_missing_folds_are_those_without_a_row_at_this_budget(p19):
    recorded = [row("sepsis-online", "hymate", "kfold5", 0, "b1-qt-h8", 0.7),
                row("sepsis-online", "hymate", "kfold5", 2, "b1-qt-h8", 0.7),
                row("sepsis-online", "hymate", "kfold5", 1, "b2-qt-h8", 0.7),  # another budget
                row("sepsis-online", "lightgbm", "kfold5", 1, "b1", 0.8)]  # another model
    assert p19.missing_folds(recorded, "sepsis-online", "hymate", "kfold5", [0, 1, 2, 3], 0, "b1-qt-h8") == [1, 3]
    assert p19.missing_folds(recorded, "sepsis-online", "hymate", "kfold5", [0, 1], 1, "b1-qt-h8") == [0, 1]  # seed
    assert p19.missing_folds(recorded, "sepsis-stay", "hymate", "splits5", [0], 0, "b1-qt-h8") == [0]


def test_budget_names_add_only_options_away_from_their_defaults(p19):
    # the names recorded in p19.json before --lr / --warmup-epochs existed must not change
    assert p19.budget_name(8000, 2000, 4, 0, 0.99) == "train8000-eval2000-ep4-seed0-ema0.99"
    assert p19.budget_name(None, None, 15, 0, 0.998) == "trainall-evalall-ep15-seed0"
    assert p19.budget_name(8000, 2000, 4, 0, 0.99, lr=0.003, warmup_epochs=0.25) == (
        "train8000-eval2000-ep4-seed0-ema0.99-lr0.003-wu0.25"
    )
    assert p19.budget_name(8000, 2000, 4, 0, 0.0) == "train8000-eval2000-ep4-seed0-ema0"  # EMA off is a budget too


# --- the runs: the one pipeline's rows, as p19.json keeps them ---------------------------------
def p19_like(n_stays: int = 120, seed: int = 0):
    """A tiny PhysioNet 2019 look-alike: hospital A (first half) and B, one HR event and one label row per
    hour, every 5th stay septic from 8 hours before its end."""
    import numpy as np
    import polars as pl

    from hymate.data.schema import EventData

    rng = np.random.default_rng(seed)
    events, labels, stays = [], [], []
    for stay in range(1, n_stays + 1):
        first, n_hours = int(rng.integers(1, 5)), int(rng.integers(10, 60))
        for hour in range(first, first + n_hours):
            events.append((stay, float(hour), "HR", float(rng.normal(80, 10) + 15 * (stay % 5 == 0))))
            labels.append((stay, float(hour), stay % 5 == 0 and hour >= first + n_hours - 8))
        stays.append((stay, "A" if stay <= n_stays // 2 else "B", n_hours, n_hours, first))
    return EventData(
        "physionet2019",
        pl.DataFrame(events, schema={"stay_id": pl.Int64, "time": pl.Float64, "variable": pl.String, "value": pl.Float64}, orient="row"),
        pl.DataFrame({"stay_id": list(range(1, n_stays + 1)), "age": rng.normal(60, 9, n_stays)}),
        pl.DataFrame(labels, schema={"stay_id": pl.Int64, "prediction_time": pl.Float64, "label": pl.Boolean}, orient="row"),
        pl.DataFrame(stays, schema={"stay_id": pl.Int64, "split_group": pl.String, "n_events": pl.Int64, "n_hours": pl.Int64,
                                    "first_hour": pl.Int64}, orient="row"),
    )  # fmt: skip


def test_result_rows_keep_the_recorded_keys_with_setting_from_protocol(p19):
    online = {"task": "physionet2019-sepsis-online", "label_type": "binary", "protocol": "a2b", "split": 0, "seed": 0,
              "model": "hymate", "auroc": 0.8, "ap": 0.1, "auprc_trapz": 0.09, "utility": 0.3, "threshold": 0.2,
              "train_s": 5.0, "score_s": 1.0, "wall_s": 7.0, "epochs": 2, "epoch_s": 2.5, "train_stays": 10,
              "test_stays": 4, "test_rows": 123, "peak_mb": 10.0, "params": 99}  # fmt: skip
    row = p19.result_row(online, "b1-qt-h8")
    assert list(row) == [*p19.ROW_KEYS, "budget"]
    assert (row["task"], row["setting"], row["hours"], row["utility"], row["budget"]) == ("sepsis-online", "a2b", 123, 0.3, "b1-qt-h8")
    stay = {k: v for k, v in online.items() if k not in ("utility", "threshold")}
    row = p19.result_row({**stay, "task": "physionet2019-sepsis-stay", "protocol": "splits5"}, "b2")
    assert (row["task"], row["setting"], row["hours"], row["utility"], row["threshold"]) == ("sepsis-stay", "splits5", None, None, None)


def test_training_settings_are_the_scripts_own_not_the_tasks_recipe(p19):
    from argparse import Namespace

    from hymate.tasks.registry import get_task

    args = Namespace(epochs=3, patience=5, batch_size=32, seed=0, lr=1e-3, warmup_epochs=1.0, ema_decay=0.0,
                     train_hours_per_stay=8)  # fmt: skip
    online, stay = get_task("physionet2019", "sepsis-online"), get_task("physionet2019", "sepsis-stay")
    config = p19.training(online, "hymate", args)
    assert (config.lr, config.warmup_epochs, config.ema_decay, config.max_epochs) == (1e-3, 1.0, None, 3)  # not 3e-3 etc.
    assert config.train_hours_per_stay == 8 and config.max_events is None
    assert p19.training(online, "hymate", Namespace(**{**vars(args), "train_hours_per_stay": 0})).train_hours_per_stay is None
    assert p19.training(stay, "hymate", args).train_hours_per_stay is None
    assert p19.training(stay, "hymate", Namespace(**{**vars(args), "ema_decay": 0.99})).ema_decay == 0.99


@pytest.mark.slow
def test_runs_write_rows_by_budget_and_a_second_call_runs_nothing(p19, tmp_path, monkeypatch, capsys):
    import json
    import sys

    import polars as pl

    data = p19_like()
    monkeypatch.setattr(p19, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(p19, "cache_dir", lambda *a, **k: tmp_path / "cache")
    monkeypatch.setattr(p19, "RESULTS", tmp_path / "results" / "p19.json")
    # logreg: a model without a variant (LightGBM's would do, but its OpenMP threads spin on a busy machine);
    # the online task has no logreg, so three runs.
    argv = ["p19.py", "--models", "hymate,logreg", "--settings", "kfold5", "--folds", "0", "--train-stays", "40",
            "--eval-stays", "20", "--epochs", "1", "--ema-decay", "0", "--out", str(tmp_path / "runs"), "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    p19.main()
    rows = json.loads(p19.RESULTS.read_text())["rows"]
    budget = "train40-eval20-ep1-seed0-ema0"
    assert {(r["task"], r["model"], r["setting"], r["split"], r["budget"]) for r in rows} == {
        ("sepsis-online", "hymate", "kfold5", 0, budget + "-qt-h8"), ("sepsis-stay", "hymate", "splits5", 0, budget + "-qt"),
        ("sepsis-stay", "logreg", "splits5", 0, budget)}  # fmt: skip
    assert all(list(r) == [*p19.ROW_KEYS, "budget"] for r in rows)
    for r in rows:  # eval stays: 20 of the online fold's 24 test stays; all 12 of the stay-level split's
        assert 0 <= r["auroc"] <= 1 and r["test_stays"] == (20 if r["task"] == "sepsis-online" else 12)
    # Run folders: <out>/<budget>/<task>[/<variant>]/<model>/<protocol>-split<k>-seed<s>
    online = tmp_path / "runs" / budget / "sepsis-online" / "qt-h8" / "hymate" / "kfold5-split0-seed0"
    (row,) = [r for r in rows if r["task"] == "sepsis-online" and r["model"] == "hymate"]
    assert row["hours"] == pl.read_parquet(online / "report" / "predictions.parquet").height > 20  # every test hour
    assert isinstance(row["utility"], float) and row["threshold"] is not None
    saved = json.loads((online / "checkpoint" / "config.json").read_text())
    assert saved["train"]["lr"] == 1e-3 and saved["train"]["ema_decay"] is None and saved["train"]["train_hours_per_stay"] == 8
    assert saved["model_options"]["query_time"] is True
    stay = [r for r in rows if r["task"] == "sepsis-stay"]
    assert all(r["utility"] is None and r["hours"] is None for r in stay)
    assert (tmp_path / "runs" / budget / "sepsis-stay" / "qt" / "hymate" / "splits5-split0-seed0" / "report").exists()
    assert (tmp_path / "runs" / budget / "sepsis-stay" / "logreg" / "splits5-split0-seed0" / "report").exists()

    capsys.readouterr()
    stamp = p19.RESULTS.stat().st_mtime_ns
    p19.main()  # every fold is in p19.json at this budget: nothing runs, nothing is lost
    assert capsys.readouterr().out.count("already in p19.json, skipped") == 3
    assert json.loads(p19.RESULTS.read_text())["rows"] == rows and p19.RESULTS.stat().st_mtime_ns >= stamp
