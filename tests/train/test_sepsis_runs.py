"""The stay-level sepsis run through the one run loop: the task's model defaults (the prediction
time as an input), that a caller can turn them off, and that a model without the option is left alone."""

from __future__ import annotations

import numpy as np

from hymate.tasks.registry import get_task
from hymate.tasks.splits import load_or_make_splits, subsample
from hymate.train.estimators import NeuralEstimator, load_checkpoint
from hymate.train.module import TrainConfig
from hymate.train.run import run_one
from tests.tasks.test_sepsis import p19_like

TINY = {"d_model": 8, "n_heads": 2, "d_state": 4, "n_mamba_layers": 1}
STAY = get_task("physionet2019", "sepsis-stay")


def test_stay_level_hymate_reads_where_the_record_ends_unless_told_not_to(tmp_path):
    view = STAY.view(p19_like(n_stays=60))
    splits = load_or_make_splits(view, STAY, "splits5", 0, tmp_path / "splits")
    split = subsample(splits[0], 30, None)
    config = TrainConfig(max_epochs=1, batch_size=8, ema_decay=None)
    assert STAY.model_defaults == {"query_time": True}
    for overrides, expected in ((TINY, True), ({**TINY, "query_time": False}, False)):
        out = tmp_path / f"qt{expected}"
        row = run_one(STAY, view, split, "hymate", config, out, overrides, progress=False, n_boot=20)
        assert (
            row["task"] == STAY.name and "utility" not in row and "threshold" not in row and np.isfinite(row["auroc"])
        )
        assert row["test_rows"] == len(split.test)  # one prediction per stay
        (checkpoint,) = out.glob("*/checkpoint")
        estimator, task, _ = load_checkpoint(checkpoint)
        model = estimator.model
        assert task == STAY and model.config.query_time is expected and (model.query_embedding is not None) is expected


def test_task_model_defaults_apply_only_to_models_that_take_them():
    config = TrainConfig()
    assert NeuralEstimator("hymate", STAY, config).model_options == {"query_time": True}
    assert NeuralEstimator("strats", STAY, config).model_options == {}  # STraTS reads no prediction time
    assert NeuralEstimator("hymate", STAY, config, {"query_time": False}).model_options == {"query_time": False}
