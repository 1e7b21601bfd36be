"""The online task end to end on a small synthetic cohort: train, threshold on validation, score
every test hour in one pass per stay, resume."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from hymate.models.online_tabular import run_lightgbm_online
from hymate.tasks.sepsis import SEPSIS_ONLINE, online_splits
from hymate.tasks.splits import subsample
from hymate.train.module import TrainConfig
from hymate.train.online import run_online, subsample_hours
from tests.tasks.test_sepsis import p19_like


def test_hymate_and_lightgbm_online_runs_write_a_row_and_resume(tmp_path):
    data = p19_like(n_stays=80)
    split = subsample(online_splits(data, "kfold5")[0], 40, None)
    config = TrainConfig(max_epochs=1, batch_size=8, ema_decay=None)
    row = run_online(data, SEPSIS_ONLINE, split, {"d_model": 8, "n_heads": 2, "d_state": 4, "n_mamba_layers": 1},
                     config, tmp_path / "hymate", progress=False)  # fmt: skip
    folder = tmp_path / "hymate" / "kfold5-split0-seed0"
    predictions = pl.read_parquet(folder / "predictions.parquet")
    test_hours = data.labels.filter(pl.col("stay_id").is_in(pl.Series(split.test).implode()))
    assert predictions.height == row["hours"] == test_hours.height  # every test hour scored
    assert {"utility", "auroc", "ap", "threshold", "train_s", "score_s"} <= set(row)
    assert np.isfinite(row["auroc"]) and row["task"] == "sepsis-online" and row["setting"] == "kfold5"
    (folder / "checkpoint" / "model.safetensors").unlink()  # a finished run is read back, not redone
    assert run_online(data, SEPSIS_ONLINE, split, {}, config, tmp_path / "hymate", progress=False) == row
    grid = {"num_leaves": [7], "learning_rate": [0.1], "min_child_samples": [5], "feature_fraction": [1.0]}
    lgb = run_lightgbm_online(data, split, 0, tmp_path / "lightgbm", grid=grid, num_threads=1)
    assert lgb["hours"] == row["hours"] and json.loads((tmp_path / "lightgbm" / "kfold5-split0-seed0" / "metrics.json").read_text())


def test_a2b_drops_and_counts_variables_hospital_a_never_had(tmp_path):
    data = p19_like(n_stays=60)
    b_only = data.events.filter(pl.col("stay_id") > 30).with_columns(pl.lit("EtCO2").alias("variable"))
    data = type(data)(data.name, pl.concat([data.events, b_only]).sort("stay_id", "time", "variable"), data.statics,
                      data.labels, data.stays)  # fmt: skip
    split = online_splits(data, "a2b")[0]
    config = TrainConfig(max_epochs=1, batch_size=8, ema_decay=None)
    row = run_online(data, SEPSIS_ONLINE, split, {"d_model": 8, "n_heads": 2, "d_state": 4, "n_mamba_layers": 1},
                     config, tmp_path, progress=False)  # fmt: skip
    meta = json.loads((tmp_path / "a2b-split0-seed0" / "metrics.json").read_text())
    assert meta["dropped_unknown_variable_events"]["test"] == b_only.height and row["setting"] == "a2b"


def test_subsample_hours_keeps_positives_samples_negatives_and_scores_them_as_the_full_pass():
    import torch

    from hymate.data.hourly import HourlyDataset, collate_hourly
    from hymate.data.normalize import Normalizer
    from hymate.models.hymate import HyMaTE, HyMaTEConfig
    from tests.models.test_hymate_hourly import hourly_data

    data = hourly_data(seed=2, n_stays=9)
    norm = Normalizer.fit(data, data.stay_ids, 336.0)
    ds = HourlyDataset(data, data.stay_ids, norm)
    batch = collate_hourly([ds[i] for i in range(len(ds))])
    small, weight = subsample_hours(batch, 3, torch.Generator().manual_seed(0))
    again, _ = subsample_hours(batch, 3, torch.Generator().manual_seed(0))
    assert torch.equal(small.hours, again.hours)  # seeded
    labelled = batch.hour_mask & ~torch.isnan(batch.labels)
    for b in range(len(ds)):
        full = {float(h): float(y) for h, y, k in zip(batch.hours[b], batch.labels[b], labelled[b], strict=True) if k}
        kept = small.hours[b][small.hour_mask[b]].tolist()
        assert kept == sorted(kept) and all(full[h] == small.labels[b, i] for i, h in enumerate(kept))
        positives = {h for h, y in full.items() if y == 1}
        n_neg = len(full) - len(positives)
        assert positives <= set(kept) and len(kept) - len(positives) == min(3, n_neg)
        assert abs(float(weight[b].sum()) - len(full)) < 1e-4  # weights add up to the stay's labelled hours
    assert (small.prefix.diff(dim=1) >= 0).all() and small.hour_mask.sum(1).max() < batch.hour_mask.sum(1).max()
    torch.manual_seed(0)
    m = HyMaTE(HyMaTEConfig(n_variables=norm.n_variables, n_statics=len(norm.static_names), d_model=16, n_heads=2,
                            d_state=4, query_time=True)).eval()  # fmt: skip
    every = m.forward_hourly(batch.events, batch.prefix, batch.hour_mask, batch.query_times)[..., 0].detach()
    some = m.forward_hourly(small.events, small.prefix, small.hour_mask, small.query_times)[..., 0].detach()
    for b in range(len(ds)):
        at = {float(h): float(x) for h, x in zip(batch.hours[b][batch.hour_mask[b]], every[b][batch.hour_mask[b]],
                                                  strict=True)}  # fmt: skip
        for h, x in zip(small.hours[b][small.hour_mask[b]].tolist(), some[b][small.hour_mask[b]].tolist(), strict=True):
            assert abs(at[h] - x) < 1e-5
