"""The command line: prepare and describe work, and bad input gives one clear line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from hymate.cli import app
from tests.conftest import write_p12

runner = CliRunner()


def test_prepare_writes_split_files_and_describe_summarises(tmp_path):
    write_p12(tmp_path / "raw", per_set=20)
    args = ["--data-dir", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    result = runner.invoke(app, ["prepare", "physionet2012", *args])
    assert result.exit_code == 0, result.output
    assert "60 records read -> 60 stays" in result.output
    files = sorted(p.name for p in (tmp_path / "cache" / "splits").iterdir())
    assert files == [f"physionet2012-splits5-seed0-split{k}.json" for k in range(5)] + [
        "physionet2012-strats-seed0-split0.json"
    ]
    result = runner.invoke(app, ["describe", "physionet2012", *args, "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stays"] == 60 and summary["events"] == 180
    assert {v["variable"] for v in summary["variables"]} == {"HR", "Temp"}


def test_missing_data_is_one_clear_error_line(tmp_path):
    result = runner.invoke(app, ["prepare", "physionet2012", "--data-dir", str(tmp_path / "none"), "-q"])
    assert result.exit_code == 2
    assert "error:" in result.output and "does not exist" in result.output and "--download" in result.output
    assert "Traceback" not in result.output


def test_console_script_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hymate.cli", "--help"], capture_output=True, text=True, check=True)
    assert "prepare" in out.stdout and "describe" in out.stdout


def test_checkpoints_of_other_tasks_get_one_clear_error():
    import pytest

    from hymate.cli import checkpoint_task
    from hymate.errors import HymateError
    from hymate.tasks.mortality import TASKS

    assert checkpoint_task({"task": "physionet2012-mortality"}, TASKS).name == "physionet2012-mortality"
    with pytest.raises(HymateError, match="physionet2019-sepsis-online.*mortality checkpoints"):
        checkpoint_task({"task": "physionet2019-sepsis-online"}, TASKS)
    with pytest.raises(HymateError, match="unknown"):
        checkpoint_task({}, TASKS)


def test_bad_training_settings_are_one_clear_error_line(tmp_path):
    for dataset, option, value in (("physionet2019", "--lr", "-1"), ("physionet2012", "--warmup-epochs", "-0.5"),
                                   ("physionet2019", "--ema-decay", "1.5"), ("physionet2012", "--lr", "nan")):  # fmt: skip
        result = runner.invoke(app, ["train", dataset, option, value, "--data-dir", str(tmp_path / "none"), "-q"])
        assert result.exit_code == 2, (option, result.output)
        assert "training settings:" in result.output and option.lstrip("-").replace("-", "_") in result.output
        assert "Traceback" not in result.output
