"""Training output in a log file (not a terminal): per-epoch progress lines with an ETA, and none
of Lightning's banners; and the progress line helpers on their own."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hymate.train.progress import ProgressLines, clock

BANNERS = ("GPU available", "TPU available", "HPU available", "💡 Tip", "litlogger",
           "Loading `train_dataloader`", "LeafSpec", "`Trainer.fit` stopped", "smaller than the logging interval")  # fmt: skip


@pytest.mark.realdata
@pytest.mark.slow
def test_train_into_a_file_prints_epoch_lines_with_eta_and_no_banners(real_data, real_cache, tmp_path):
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--train-stays", "120", "--eval-stays", "60",
           "--epochs", "2", "--d-model", "8", "--mamba-layers", "1", "--max-events", "128", "--out", str(tmp_path / "run"),
           "--data-dir", str(real_data), "--cache-dir", str(real_cache)]  # fmt: skip
    with log.open("w") as f:  # a file: what nohup, CI and a redirect give
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    text = log.read_text()
    assert done.returncode == 0, text
    steps = re.findall(r"^epoch 1/2 step \d+/4 \(\d+\.\d steps/s, \d+m\d\ds elapsed, epoch ETA \d+m\d\ds\) mean loss \d", text, re.M)
    assert len(steps) == 3, text  # 120 stays / batch 32 = 4 steps: a line after each but the last
    for epoch in (1, 2):
        assert re.search(rf"^epoch {epoch}/2 done in \d+m\d\ds \(run \d+m\d\ds, at most \d+m\d\ds left\): val .*auroc 0\.\d{{4}}",
                         text, re.M), text  # fmt: skip
    assert not [b for b in BANNERS if b in text], text


def test_progress_lines_count_steps_and_estimate_what_is_left():
    out = io.StringIO()
    lines = ProgressLines(every=2, stream=out)
    trainer = SimpleNamespace(num_training_batches=5, current_epoch=0, max_epochs=3, callback_metrics={"val/auroc": 0.8125})
    lines.on_train_start(trainer, None)
    lines.on_train_epoch_start(trainer, None)
    for i in range(5):
        lines.on_train_batch_end(trainer, None, {"loss": float(i)}, None, i)
    lines.on_train_epoch_end(trainer, None)
    got = out.getvalue().splitlines()
    assert [g.split(" (")[0] for g in got[:2]] == ["epoch 1/3 step 2/5", "epoch 1/3 step 4/5"]
    assert got[0].endswith("mean loss 0.5000") and got[1].endswith("mean loss 1.5000")
    assert got[2].startswith("epoch 1/3 done in 0m00s") and got[2].endswith("val auroc 0.8125") and len(got) == 3
    assert clock(3725) == "1h02m05s" and clock(59.6) == "1m00s"
    # the selection score says what it is (the module's objective names it)
    trainer.callback_metrics = {"val/auroc": 0.8, "val/ap": 0.4, "val/score": 1.2}
    lines.on_train_epoch_end(trainer, SimpleNamespace(objective=SimpleNamespace(selection="auroc+ap")))
    assert out.getvalue().splitlines()[-1].endswith("val ap 0.4000 auroc 0.8000 score (auroc+ap, what selects the epoch) 1.2000")


def test_banners_are_dropped_by_message_and_kept_under_verbose(monkeypatch):
    import logging

    from hymate.train import progress

    name = "lightning.pytorch.utilities.rank_zero"
    logger = logging.getLogger(name)
    monkeypatch.setattr(logger, "filters", [])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)

    monkeypatch.setenv("HYMATE_VERBOSE", "1")
    progress.quiet_lightning()
    assert logger.filter(record("GPU available: False, used: False"))  # --verbose: nothing dropped
    monkeypatch.delenv("HYMATE_VERBOSE")
    progress.quiet_lightning()
    progress.quiet_lightning()  # idempotent
    assert logger.filters == [progress._FILTER]
    assert not logger.filter(record("GPU available: False, used: False"))
    assert not logger.filter(record("💡 Tip: For seamless cloud logging ..."))
    assert logger.filter(record("Restoring states from the checkpoint path at x.ckpt"))  # other records pass


def test_the_scan_kernel_is_built_before_the_fit_for_models_with_mamba_blocks(monkeypatch):
    # built inside the first step, its minute would count in the first epoch's time, steps/s and ETA
    import torch

    from hymate.nn import scan
    from hymate.nn.mamba import MambaBlock, MambaConfig
    from hymate.train import estimators

    asked = []
    monkeypatch.setattr(scan, "resolve_backend", lambda backend, device: asked.append((backend, device.type)))
    estimators._build_scan_kernel(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert asked == []  # no Mamba block: nothing to build
    estimators._build_scan_kernel(torch.nn.Sequential(MambaBlock(MambaConfig(d_model=8))))
    assert asked == [("auto", "cpu")]
    estimators._build_scan_kernel(MambaBlock(MambaConfig(d_model=8, scan_backend="reference")))
    assert asked[-1] == ("reference", "cpu")  # the block's own backend: no build for a reference model
