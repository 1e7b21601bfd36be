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
