"""A training run killed with SIGKILL mid-epoch and resumed ends where an uninterrupted run ends
(bitwise, on the CPU at one thread); an unreadable last.ckpt is set aside and training restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SRC = Path(__file__).resolve().parents[2] / "src"
RUN = "strats-split0-seed0"


def train_command(out: Path, data: Path, cache: Path, epochs: int = 3) -> list[str]:
    return [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--train-stays", "400", "--eval-stays", "100",
            "--epochs", str(epochs), "--d-model", "16", "--mamba-layers", "1", "--batch-size", "16", "--out", str(out),
            "--data-dir", str(data), "--cache-dir", str(cache)]  # fmt: skip


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def train(out: Path, data: Path, cache: Path, epochs: int = 3) -> subprocess.CompletedProcess:
    done = subprocess.run(train_command(out, data, cache, epochs), env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def result(out: Path) -> tuple[dict, bytes]:
    row = json.loads((out / RUN / "report" / "metrics.json").read_text())["row"]
    metrics = {k: v for k, v in row.items() if not k.endswith("_s") and k not in ("peak_mb", "resumed")}
    return metrics, (out / RUN / "checkpoint" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def cache(p12, real_cache) -> Path:
    return real_cache  # where the session prepared P12: the runs read it instead of preparing it again


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(real_data, cache, tmp_path):
    whole = tmp_path / "whole"
    train(whole, real_data, cache)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_command(killed, real_data, cache), env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:  # progress lines (stdout is no terminal): kill a few steps into the second epoch
        for line in proc.stdout:
            step = re.match(r"epoch 2/3 step (\d+)/(\d+)", line)
            if step and 2 <= int(step[1]) < int(step[2]) - 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = killed / RUN / "lightning" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the kill came after epoch 1's checkpoint, before epoch 2's
    assert not (killed / RUN / "report" / "metrics.json").exists()

    train(killed, real_data, cache)  # the same command resumes
    (metrics, weights), (resumed, resumed_weights) = result(whole), result(killed)
    assert resumed == metrics
    assert resumed_weights == weights
    assert json.loads((killed / RUN / "report" / "metrics.json").read_text())["row"]["resumed"] is True


def test_an_unreadable_last_ckpt_is_set_aside_and_training_restarts(real_data, cache, tmp_path):
    out = tmp_path / "run"
    lightning = out / RUN / "lightning"
    lightning.mkdir(parents=True)
    (lightning / "last.ckpt").write_bytes(b"PK\x03\x04 truncated by a kill")
    # (no run.json: the folder is claimed as it is, last.ckpt included)
    done = train(out, real_data, cache, epochs=1)
    assert f"{lightning / 'last.ckpt'} is unreadable" in done.stderr and "restarts from scratch" in done.stderr
    assert (lightning / "last.ckpt.corrupt").read_bytes() == b"PK\x03\x04 truncated by a kill"
    row = json.loads((out / RUN / "report" / "metrics.json").read_text())["row"]
    assert row["resumed"] is False and row["epochs"] == 1
    assert torch.load(lightning / "last.ckpt", weights_only=True)["epoch"] == 0  # a new, readable one
