"""The online task end to end on a small synthetic cohort through the one run loop: train,
threshold on validation, score every test hour in one pass per stay, resume; and the training
step's subsample of each stay's prediction times."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from hymate.data.normalize import Normalizer
from hymate.data.samples import PredictionDataset, collate_samples
from hymate.errors import HymateError
from hymate.models.hymate import HyMaTE, HyMaTEConfig
from hymate.tasks.registry import get_task
from hymate.tasks.splits import make_splits, subsample
from hymate.train.module import TrainConfig, subsample_times, training_config
from hymate.train.run import run_one
from tests.models.test_hymate_hourly import hourly_data
from tests.tasks.test_sepsis import p19_like

ONLINE = get_task("physionet2019", "sepsis-online")
TINY = {"d_model": 8, "n_heads": 2, "d_state": 4, "n_mamba_layers": 1}
TINY_GRID = {"num_leaves": [7], "learning_rate": [0.1], "min_child_samples": [5], "feature_fraction": [1.0]}


def tiny_training() -> TrainConfig:
    """The online task's recipe (every event, 8 sampled hours per stay and step), one short epoch."""
    config = training_config(ONLINE, "hymate", {"max_epochs": 1, "batch_size": 8, "ema_decay": 0})
    assert config.max_events is None and config.train_hours_per_stay == 8 and config.ema_decay is None
    return config


def test_hymate_and_lightgbm_online_runs_write_a_row_and_resume(tmp_path):
    view = ONLINE.view(p19_like(n_stays=80))
    split = subsample(make_splits(view, ONLINE, "kfold5")[0], 40, None)
    config = tiny_training()
    row = run_one(ONLINE, view, split, "hymate", config, tmp_path / "hymate", TINY, progress=False, n_boot=20)
    folder = tmp_path / "hymate" / "kfold5-split0-seed0"
    predictions = pl.read_parquet(folder / "report" / "predictions.parquet")
    test_hours = view.labels.filter(pl.col("stay_id").is_in(pl.Series(split.test).implode()))
    assert predictions.height == row["test_rows"] == test_hours.height  # every test hour scored
    assert predictions.select("stay_id", "prediction_time").equals(test_hours.select("stay_id", "prediction_time"))
    assert {"utility", "auroc", "ap", "threshold", "train_s", "score_s", "wall_s", "epochs"} <= set(row)
    assert np.isfinite(row["auroc"]) and np.isfinite(row["utility"]) and 0 <= row["threshold"] <= 1
    assert row["task"] == ONLINE.name and row["label_type"] == "binary" and row["protocol"] == "kfold5"
    assert row["model"] == "hymate" and row["split"] == 0 and row["seed"] == 0
    assert (predictions.get_column("alarm") == (predictions.get_column("probability") >= row["threshold"])).all()
    (folder / "checkpoint" / "model.safetensors").unlink()  # a finished run is read back, not redone
    assert run_one(ONLINE, view, split, "hymate", config, tmp_path / "hymate", TINY, progress=False) == row
    # The folder holds this run: other model options are another run, never read back as this one's.
    with pytest.raises(HymateError, match="holds a run of other settings"):
        run_one(ONLINE, view, split, "hymate", config, tmp_path / "hymate", {}, progress=False)
    lgb_task = replace(ONLINE, tabular_grid=TINY_GRID)  # the task's own grid is sized for 1.5 M hours
    lgb = run_one(lgb_task, view, split, "lightgbm", config, tmp_path / "lightgbm", progress=False, n_boot=20)
    report = json.loads((tmp_path / "lightgbm" / "kfold5-split0-seed0" / "report" / "metrics.json").read_text())
    assert lgb["test_rows"] == row["test_rows"] and report["row"] == lgb and lgb["model"] == "lightgbm"
    assert set(row) - {"epochs", "best_epoch", "epoch_s"} <= set(lgb) and "utility" in lgb


def test_a2b_drops_and_counts_variables_hospital_a_never_had(tmp_path):
    data = p19_like(n_stays=60)
    b_only = data.events.filter(pl.col("stay_id") > 30).with_columns(pl.lit("EtCO2").alias("variable"))
    data = type(data)(data.name, pl.concat([data.events, b_only]).sort("stay_id", "time", "variable"), data.statics,
                      data.labels, data.stays)  # fmt: skip
    view = ONLINE.view(data)
    (split,) = make_splits(view, ONLINE, "a2b")
    row = run_one(ONLINE, view, split, "hymate", tiny_training(), tmp_path, TINY, progress=False, n_boot=20)
    meta = json.loads((tmp_path / "a2b-split0-seed0" / "report" / "metrics.json").read_text())
    assert meta["dropped_unknown_variable_events"]["test"] == b_only.height and row["protocol"] == "a2b"
    assert meta["dropped_unknown_variable_events"]["val"] == 0  # validation is hospital A too



def _batch(seed: int, n_stays: int):
    data = hourly_data(seed=seed, n_stays=n_stays)
    norm = Normalizer.fit(data, data.stay_ids, 336.0)
    ds = PredictionDataset(data, data.stay_ids, norm)
    return norm, ds, collate_samples([ds[i] for i in range(len(ds))])


def test_subsample_times_keeps_positives_samples_negatives_and_scores_them_as_the_full_pass():
    norm, ds, batch = _batch(seed=2, n_stays=9)
    small, weight = subsample_times(batch, 3, torch.Generator().manual_seed(0), binary=True)
    again, _ = subsample_times(batch, 3, torch.Generator().manual_seed(0), binary=True)
    assert torch.equal(small.times, again.times)  # seeded
    labelled = batch.time_mask & ~torch.isnan(batch.labels)
    for b in range(len(ds)):
        full = {float(h): float(y) for h, y, k in zip(batch.times[b], batch.labels[b], labelled[b], strict=True) if k}
        kept = small.times[b][small.time_mask[b]].tolist()
        assert kept == sorted(kept) and all(full[h] == small.labels[b, i] for i, h in enumerate(kept))
        positives = {h for h, y in full.items() if y == 1}
        n_neg = len(full) - len(positives)
        assert positives <= set(kept) and len(kept) - len(positives) == min(3, n_neg)
        assert abs(float(weight[b].sum()) - len(full)) < 1e-4  # weights add up to the stay's labelled hours
    assert (small.prefix.diff(dim=1) >= 0).all() and small.time_mask.sum(1).max() < batch.time_mask.sum(1).max()
    torch.manual_seed(0)
    m = HyMaTE(HyMaTEConfig(n_variables=norm.n_variables, n_statics=len(norm.static_names), d_model=16, n_heads=2,
                            d_state=4, query_time=True)).eval()  # fmt: skip
    every = m.forward_hourly(batch.events, batch.prefix, batch.time_mask, batch.query_times)[..., 0].detach()
    some = m.forward_hourly(small.events, small.prefix, small.time_mask, small.query_times)[..., 0].detach()
    for b in range(len(ds)):
        at = {float(h): float(x) for h, x in zip(batch.times[b][batch.time_mask[b]], every[b][batch.time_mask[b]],
                                                  strict=True)}  # fmt: skip
        for h, x in zip(small.times[b][small.time_mask[b]].tolist(), some[b][small.time_mask[b]].tolist(), strict=True):
            assert abs(at[h] - x) < 1e-5


@pytest.mark.parametrize("n_keep", [1, 4])
def test_subsample_times_of_other_label_types_draws_n_times_of_any_label(n_keep):
    _, ds, batch = _batch(seed=3, n_stays=9)
    small, weight = subsample_times(batch, n_keep, torch.Generator().manual_seed(1), binary=False)
    labelled = (batch.time_mask & ~torch.isnan(batch.labels)).sum(1)
    assert torch.equal(small.time_mask.sum(1), labelled.clamp(max=n_keep))  # positives are not kept on purpose
    for b in range(len(ds)):
        w = weight[b][small.time_mask[b]]
        assert torch.allclose(w, torch.full_like(w, float(labelled[b]) / min(n_keep, int(labelled[b]))))
        assert abs(float(w.sum()) - float(labelled[b])) < 1e-4
