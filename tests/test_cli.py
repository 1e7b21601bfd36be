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
    out = " ".join(result.output.split())  # rich wraps long lines
    assert f"read from {tmp_path / 'raw'}" in out and "left out: nothing" in out
    assert "left out (every count" not in out  # no table when nothing was left out
    again = runner.invoke(app, ["prepare", "physionet2012", *args, "--download"])
    assert again.exit_code == 0 and f"physionet2012 is already in {tmp_path / 'raw'}; nothing downloaded" in " ".join(
        again.output.split())  # fmt: skip
    # Split files of every P12 task and protocol: <task>-<protocol>-seed<s>-split<k>.json
    files = sorted(p.name for p in (tmp_path / "cache" / "splits").iterdir())
    tasks = ("los-3d", "los-bands", "los-days", "mortality")
    per_protocol = {"kfold5": range(5), "splits5": range(5), "strats": range(1)}
    assert files == [f"physionet2012-{t}-{p}-seed0-split{k}.json" for t in tasks for p, ks in per_protocol.items() for k in ks]
    result = runner.invoke(app, ["describe", "physionet2012", *args, "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stays"] == 60 and summary["events"] == 180
    assert {v["variable"] for v in summary["variables"]} == {"HR", "Temp"}
    assert summary["task"]["name"] == "physionet2012-mortality" and summary["task"]["label_type"] == "binary"
    # describe of another task: its view and label type (every synthetic stay lasts 7 days: band "3-7 days")
    result = runner.invoke(app, ["describe", "physionet2012", "--task", "los-bands", *args])
    assert result.exit_code == 0, result.output
    assert "physionet2012-los-bands" in result.output and "3-7 days: 60" in result.output


def test_missing_data_is_one_clear_error_line(tmp_path):
    result = runner.invoke(app, ["prepare", "physionet2012", "--data-dir", str(tmp_path / "none"), "-q"])
    assert result.exit_code == 2
    assert "error:" in result.output and "does not exist" in result.output and "--download" in result.output
    assert "Traceback" not in result.output


def test_console_script_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hymate.cli", "--help"], capture_output=True, text=True, check=True)
    assert "prepare" in out.stdout and "describe" in out.stdout


def test_checkpoints_of_unknown_tasks_or_kinds_get_one_clear_error(tmp_path):
    """Every task's checkpoint loads; one of a task this version does not know, of an unknown kind, or a
    folder that is no checkpoint, is one clear error (and exit 2 from the commands that read checkpoints)."""
    import pytest

    from hymate.errors import HymateError
    from hymate.train.estimators import load_checkpoint

    def checkpoint(name: str, config: dict | None) -> str:
        folder = tmp_path / name
        folder.mkdir()
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        return str(folder)

    cases = {
        checkpoint("other-task", {"kind": "neural", "task": "physionet2030-something"}): "unknown to this version",
        checkpoint("no-task", {"kind": "neural"}): "unknown to this version",
        checkpoint("odd-kind", {"kind": "quantum", "task": "physionet2012-mortality"}): "unknown kind",
        checkpoint("empty", None): "is not a hymate checkpoint",
    }
    for folder, message in cases.items():
        with pytest.raises(HymateError, match=message):
            load_checkpoint(folder)
        for command in (["evaluate", folder], ["predict", folder, "--data-dir", str(tmp_path)]):
            result = runner.invoke(app, [*command, "-q"])
            assert result.exit_code == 2, (command, result.output)
            assert message in result.output and "Traceback" not in result.output


def test_bad_training_settings_are_one_clear_error_line(tmp_path):
    for dataset, option, value in (("physionet2019", "--lr", "-1"), ("physionet2012", "--warmup-epochs", "-0.5"),
                                   ("physionet2019", "--ema-decay", "1.5"), ("physionet2012", "--lr", "nan")):  # fmt: skip
        result = runner.invoke(app, ["train", dataset, option, value, "--data-dir", str(tmp_path / "none"), "-q"])
        assert result.exit_code == 2, (option, result.output)
        assert "training settings:" in result.output and option.lstrip("-").replace("-", "_") in result.output
        assert "Traceback" not in result.output


def test_doctor_reports_the_machine_and_locations_without_building(tmp_path, monkeypatch):
    import torch.utils.cpp_extension

    from hymate.nn import scan_cpu

    def no_build(*args, **kwargs):
        raise AssertionError("doctor must not build the kernel")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_build)
    monkeypatch.delenv("HYMATE_SCAN_BACKEND", raising=False)
    (tmp_path / "data" / "physionet2019").mkdir(parents=True)
    result = runner.invoke(app, ["doctor", "--json", "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["vector_paths"] == list(scan_cpu.cpu_isas()) and info["cores"] >= 1
    assert info["scan_backend"].startswith((f"cpp, {scan_cpu.cpu_isas()[0]} path", "reference"))
    assert info["data_location"] == str(tmp_path / "data") and info["cache_location"] == str(tmp_path / "c")
    assert info["data: physionet2012"] == "not found"
    assert info["torch"].startswith("2.") and info["torch_threads"] >= 1
    monkeypatch.setenv("HYMATE_SCAN_BACKEND", "reference")
    forced = json.loads(runner.invoke(app, ["doctor", "--json"]).output)
    assert forced["scan_backend"] == "reference (HYMATE_SCAN_BACKEND)"


def test_tests_keep_their_caches_in_the_checkout():
    from pathlib import Path

    from hymate.data.store import cache_dir
    from tests.conftest import CHECKOUT_CACHE, p19_test_cache

    checkout = Path(__file__).resolve().parents[1]
    assert CHECKOUT_CACHE.parent == checkout
    for path in (cache_dir(), p19_test_cache(), Path(__import__("os").environ["TORCH_EXTENSIONS_DIR"])):
        assert checkout in path.resolve().parents, path


def test_help_shows_no_type_after_plain_flags():
    for command in ("prepare", "train", "predict", "explain"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0
        flags = [line for line in result.output.splitlines() if "--quiet" in line or "--download" in line or "--resume" in line]
        assert flags and not [line for line in flags if "<bool>" in line], flags


def test_quiet_and_verbose_mean_the_same_in_every_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HYMATE_VERBOSE", "0")  # off; and restored after the test (--verbose sets it)
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    for command in commands:
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--verbose" in result.output, command
        assert command == "doctor" or "--quiet" in result.output, command  # doctor shows no progress
    missing = ["prepare", "physionet2012", "--data-dir", str(tmp_path / "none")]
    both = runner.invoke(app, [*missing, "--quiet", "--verbose"])
    assert both.exit_code == 2 and "--quiet and --verbose: choose one" in both.output
    # --verbose: the same one line, then the traceback; the library sees it during the command only
    import hymate.data.store
    from hymate.errors import HymateError
    from hymate.output import verbose

    seen = []

    def failing_load(*args, **kwargs):
        seen.append(verbose())
        raise HymateError("no data here")

    monkeypatch.setattr(hymate.data.store, "load_dataset", failing_load)
    loud = runner.invoke(app, [*missing, "--verbose"])
    assert loud.exit_code == 2 and "error: no data here" in loud.output and "Traceback" in loud.output
    assert seen == [True] and not verbose()  # restored after the command
    plain = runner.invoke(app, missing)
    assert seen == [True, False] and "Traceback" not in plain.output
    info = json.loads(runner.invoke(app, ["doctor", "--json", "--verbose"]).stdout)
    assert "-march=native" in info["kernel_build_flags"]


def test_the_cli_bounds_openmp_spinning_unless_the_user_chose_a_policy():
    import os

    def doctor(**env) -> dict:
        clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        out = subprocess.run([sys.executable, "-m", "hymate.cli", "doctor", "--json"], capture_output=True, text=True,
                             env={**clean, **env}, check=True)  # fmt: skip
        return json.loads(out.stdout)

    assert doctor()["GOMP_SPINCOUNT"] == "1000"
    # ... and set before torch (with libgomp, which reads it once) is loaded
    loaded = subprocess.run([sys.executable, "-c", "import sys, hymate.cli; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert loaded.stdout.strip() == "False"
    chosen = doctor(OMP_WAIT_POLICY="ACTIVE")
    assert chosen["OMP_WAIT_POLICY"] == "ACTIVE" and chosen["GOMP_SPINCOUNT"] == "unset"
    assert doctor(GOMP_SPINCOUNT="50")["GOMP_SPINCOUNT"] == "50"


def test_an_unexpected_exception_is_one_line_and_a_pointer_to_debug(tmp_path, monkeypatch):
    import hymate.data.store

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(hymate.data.store, "load_dataset", broken)
    args = ["prepare", "physionet2012", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "error: unexpected ZeroDivisionError: division by zero" in result.output
    assert "--debug" in result.output and "Traceback" not in result.output and "second line" not in result.output
    loud = runner.invoke(app, [*args, "--debug"])
    assert loud.exit_code == 1 and "Traceback" in loud.output and "broken" in loud.output
    # typer's own usage errors keep their meaning (exit 2, its message)
    usage = runner.invoke(app, ["prepare"])
    assert usage.exit_code == 2 and "unexpected" not in usage.output
