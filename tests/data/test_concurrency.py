"""Two processes on one cache or run folder take turns; a killed writer leaves nothing a reader trusts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hymate
from hymate.data import physionet2012
from hymate.data.store import load_dataset
from tests.conftest import write_p12

SRC = str(Path(hymate.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}
WAITED = "waiting for another hymate process"


def _together(*commands: list[str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start every command at once; wait for all."""
    procs = [subprocess.Popen([sys.executable, "-m", "hymate.cli", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for c in commands]  # fmt: skip
    done = []
    for cmd, p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return done


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.realdata
def test_two_prepares_on_one_cache_prepare_once_and_both_get_the_data(real_data, tmp_path):
    cache = tmp_path / "cache"
    args = ["prepare", "physionet2012", "--data-dir", str(real_data), "--cache-dir", str(cache), "-q"]
    first, second = _together(args, args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert [WAITED in r.stderr for r in (first, second)].count(True) == 1, first.stderr + second.stderr
    entries = [p.name for p in (cache / "prepared").iterdir()]
    assert len(entries) == 1 and not entries[0].startswith("."), entries
    summary = [re.search(r"records read -> .* label rows", r.stdout).group(0) for r in (first, second)]
    assert summary[0] == summary[1]  # the waiting process loaded what the first one prepared
    assert _leftovers(cache) == []
    again = load_dataset("physionet2012", real_data, cache, progress=False)
    assert f"{again.stays.height:,} stays" in summary[0]


KILLED_MID_SAVE = """
import os, signal, sys
from hymate.data import schema
from hymate.data.store import load_dataset

def save_then_die(self, folder):
    self.events.write_parquet(folder / "events.parquet")
    os.kill(os.getpid(), signal.SIGKILL)

schema.EventData.save = save_then_die
load_dataset("physionet2012", sys.argv[1], sys.argv[2], progress=False)
"""


def test_a_preparation_killed_mid_save_leaves_nothing_a_later_load_trusts(tmp_path, monkeypatch):
    write_p12(tmp_path / "raw")
    cache = tmp_path / "cache"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path / "raw"), str(cache)], env=ENV, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    prepared = cache / "prepared"
    assert [p.name for p in prepared.iterdir() if not p.name.startswith(".")] == []  # no entry to trust
    (temporary,) = _leftovers(cache)  # the half-written folder, under a temporary name
    entry = prepared / temporary.name[1:].rsplit(".", 2)[0]

    calls = []
    real_read = physionet2012.read
    monkeypatch.setattr(physionet2012, "read", lambda *a, **k: calls.append(1) or real_read(*a, **k))
    data = load_dataset("physionet2012", tmp_path / "raw", cache, progress=False)
    assert calls == [1] and data.stays.height == 18
    assert _leftovers(cache) == [] and [p.name for p in prepared.iterdir()] == [entry.name]

    # An entry that is there but partial (damaged after its save) is rebuilt, not trusted.
    (entry / "labels.parquet").unlink()
    assert load_dataset("physionet2012", tmp_path / "raw", cache, progress=False).labels.equals(data.labels)
    assert calls == [1, 1] and (entry / "labels.parquet").exists()


TINY = ["--seeds", "0", "--train-stays", "120", "--eval-stays", "60", "--epochs", "1", "--d-model", "8",
        "--mamba-layers", "1", "--max-events", "128"]  # fmt: skip


@pytest.mark.realdata
@pytest.mark.slow
def test_two_trains_on_one_run_take_turns_and_the_second_reuses_the_first(real_data, real_cache, tmp_path):
    load_dataset("physionet2012", real_data, real_cache, progress=False)  # prepared once, before the race
    out = tmp_path / "runs"
    args = ["train", "physionet2012", *TINY, "--out", str(out), "--data-dir", str(real_data), "--cache-dir", str(real_cache), "-q"]
    first, second = _together(args, args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:] + second.stderr[-3000:]
    assert [WAITED in r.stderr for r in (first, second)].count(True) == 1, first.stderr[-3000:] + second.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["strats-split0-seed0", "summary.json", "summary.md"]
    report = json.loads((out / "strats-split0-seed0" / "report" / "metrics.json").read_text())
    assert 0 <= report["row"]["auroc"] <= 1 and report["row"]["train_stays"] == 120
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == [report["row"]]  # both processes report the one run
    assert _leftovers(out) == []


def test_staged_stay_files_are_copies_not_links(tmp_path):
    from hymate.data.store import stage_stay_files

    write_p12(tmp_path / "raw")
    stay = tmp_path / "raw" / "set-b" / "201000.txt"
    staged = stage_stay_files("physionet2012", stay, tmp_path / "staged") / "set-a" / stay.name
    assert not staged.is_symlink() and staged.read_text() == stay.read_text()
    stay.write_text("edited after staging")
    assert staged.read_text() != stay.read_text()  # the staged layout does not change with the user's file
