"""Training on a small real subset: the loss falls, checkpoints round-trip, predict scores new stays."""

from __future__ import annotations

import shutil
import tarfile
import time

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hymate.cli import app
from hymate.serve.predict import score
from hymate.tasks.registry import get_task
from hymate.tasks.splits import make_splits, subsample
from hymate.train.estimators import load_checkpoint
from hymate.train.module import TrainConfig
from hymate.train.run import run_one

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

TINY = {"d_model": 16, "n_mamba_layers": 1, "n_heads": 2, "d_state": 8}
MORTALITY = get_task("physionet2012", "mortality")


@pytest.fixture(scope="module")
def view(p12):
    return MORTALITY.view(p12)


@pytest.fixture(scope="module")
def tiny_run(view, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    split = subsample(make_splits(view, MORTALITY, "strats", 0)[0], n_train=500, n_eval=250, seed=0)
    config = TrainConfig(max_epochs=4, batch_size=32, lr=3e-3, patience=10, max_events=256, seed=0, ema_decay=0.95)
    row = run_one(MORTALITY, view, split, "hymate", config, out, TINY, progress=False, n_boot=50)
    return out / "strats-split0-seed0", split, row


def test_validation_loss_falls_and_a_report_is_written(tiny_run):
    folder, _, row = tiny_run
    history = pl.read_csv(folder / "logs" / "metrics.csv").filter(pl.col("val/loss").is_not_null())
    losses = history.sort("epoch").get_column("val/loss").to_list()
    assert len(losses) == 4
    assert min(losses[1:]) < losses[0]
    assert 0.5 < row["auroc"] <= 1.0
    assert (row["task"], row["label_type"], row["protocol"], row["model"]) == (MORTALITY.name, "binary", "strats", "hymate")
    for name in ("metrics.json", "predictions.parquet", "summary.md", "roc.png", "pr.png", "calibration.png", "training.png"):
        assert (folder / "report" / name).exists(), name


def test_checkpoint_round_trip_gives_identical_predictions(tiny_run, view):
    folder, split, _ = tiny_run
    estimator, task, meta = load_checkpoint(folder / "checkpoint")
    assert task == MORTALITY and meta["model"] == "hymate"
    first, _ = score(estimator, task, meta, view, split.test[:40])
    again, _ = score(*load_checkpoint(folder / "checkpoint"), view, split.test[:40])
    assert first.equals(again)
    stored = pl.read_parquet(folder / "report" / "predictions.parquet").filter(pl.col("stay_id").is_in(list(split.test[:40])))
    joined = first.join(stored, on="stay_id", suffix="_report")
    assert np.allclose(joined["probability"], joined["probability_report"], atol=1e-6)


def test_predict_scores_stays_it_never_saw(tiny_run, real_data, tmp_path):
    folder, split, _ = tiny_run
    unseen = [i for i in split.test[:12]]  # set-a records: never in training or validation
    target = tmp_path / "new" / "set-a"
    target.mkdir(parents=True)
    archive = real_data / "physionet2012" / "physionet-challenge-2012.tar.gz"
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(tuple(f"/set-a/{i}.txt" for i in unseen)):
                (target / member.name.split("/")[-1]).write_bytes(tar.extractfile(member).read())
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(app, ["predict", str(folder / "checkpoint"), "--data-dir", str(tmp_path / "new"),
                                      "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = pl.read_csv(out)
    assert sorted(pred["stay_id"].to_list()) == sorted(unseen)
    assert pred["probability"].is_between(0, 1).all() and pred["label"].is_null().all()
    assert pred["top_variables"].str.len_chars().min() > 0


def test_a_resumed_run_reports_the_time_of_all_its_epochs(view, tmp_path):
    """An interrupted run continues from last.ckpt; its time and epoch count cover both processes."""
    split = subsample(make_splits(view, MORTALITY, "strats", 0)[0], n_train=200, n_eval=100, seed=1)
    config = TrainConfig(max_epochs=3, batch_size=32, lr=3e-3, patience=10, max_events=128, seed=0, ema_decay=0)
    first = run_one(MORTALITY, view, split, "hymate", config, tmp_path, TINY, progress=False, n_boot=10)
    folder = tmp_path / "strats-split0-seed0"
    assert not first["resumed"] and first["epochs"] == 3
    # Pretend the first process trained for 1000 s: the resumed run must carry that time forward.
    last = folder / "lightning" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["callbacks"] if "TrainingClock" in k)
    assert 0 < ckpt["callbacks"][key]["elapsed_s"] <= first["train_s"]
    ckpt["callbacks"][key]["elapsed_s"] = 1000.0
    torch.save(ckpt, last)

    shutil.rmtree(folder / "report")  # as if the process had died before writing its report
    more = TrainConfig(**{**config.to_dict(), "max_epochs": 4})
    start = time.perf_counter()
    second = run_one(MORTALITY, view, split, "hymate", more, tmp_path, TINY, progress=False, n_boot=10, resume=True)
    took = time.perf_counter() - start
    assert second["resumed"] and second["epochs"] == 4
    assert 1000.0 < second["train_s"] < 1000.0 + took
    assert second["epoch_s"] == pytest.approx(second["train_s"] / 4, abs=0.1)
    # The training curves keep the epochs of both processes (Lightning's CSV logger restarts its file).
    history = pl.read_csv(folder / "logs" / "metrics.csv").filter(pl.col("val/loss").is_not_null())
    assert sorted(history["epoch"].to_list()) == [0, 1, 2, 3]
    assert second["wall_s"] >= second["train_s"]


def test_train_cli_recompute_context_option_reaches_the_model(real_data, real_cache, tmp_path):
    args = ["train", "physionet2012", "--model", "mamba", "--d-model", "16", "--mamba-layers", "1", "--epochs", "1",
            "--train-stays", "150", "--eval-stays", "150", "--max-events", "128", "--recompute-context",
            "--out", str(tmp_path), "--data-dir", str(real_data), "--cache-dir", str(real_cache), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    estimator, _, meta = load_checkpoint(tmp_path / "strats-split0-seed0" / "checkpoint")
    assert meta["model"] == "mamba" and meta["model_options"]["recompute_context"]
    assert estimator.model.config.recompute_context and not estimator.model.config.channel_attention
