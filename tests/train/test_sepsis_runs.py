"""The stay-level sepsis run by name: its model defaults, and that a caller can turn them off."""

from __future__ import annotations

import numpy as np

from hymate.tasks.splits import subsample
from hymate.train.checkpoint import load_checkpoint
from hymate.train.module import TrainConfig
from hymate.train.sepsis import STAY_MODEL_DEFAULTS, run_sepsis, sepsis_splits
from tests.tasks.test_sepsis import p19_like

TINY = {"d_model": 8, "n_heads": 2, "d_state": 4, "n_mamba_layers": 1}


def test_stay_level_hymate_reads_where_the_record_ends_unless_told_not_to(tmp_path):
    view, splits = sepsis_splits(p19_like(n_stays=60), "sepsis-stay", "splits5", 0, tmp_path / "splits")
    split = subsample(splits[0], 30, None)
    config = TrainConfig(max_epochs=1, batch_size=8, ema_decay=None)
    assert STAY_MODEL_DEFAULTS == {"query_time": True}
    for overrides, expected in ((TINY, True), ({**TINY, "query_time": False}, False)):
        out = tmp_path / f"qt{expected}"
        row = run_sepsis(view, "sepsis-stay", "hymate", split, config, out, overrides, progress=False)
        assert row["task"] == "sepsis-stay" and row["utility"] is None and np.isfinite(row["auroc"])
        (checkpoint,) = out.glob("hymate/*/checkpoint")
        model, _, _ = load_checkpoint(checkpoint)
        assert model.config.query_time is expected and (model.query_embedding is not None) is expected
