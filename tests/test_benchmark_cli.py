"""`hymate benchmark`: a grid of models runs in subprocesses, finished runs are never redone,
and the comparison table is written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hymate.cli import app

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
runner = CliRunner()


def test_benchmark_runs_the_grid_resumes_and_writes_the_table(p12, real_data, real_cache, tmp_path):
    out = tmp_path / "bench"
    args = [
        "benchmark", "physionet2012", "--protocol", "strats", "--models", "mamba,logreg", "--seeds", "0",
        "--epochs", "1", "--train-stays", "300", "--eval-stays", "300", "--out", str(out),
        "--data-dir", str(real_data), "--cache-dir", str(real_cache), "-q",
    ]  # fmt: skip
    first = runner.invoke(app, [*args, "--jobs", "2"])  # both runs at once
    assert first.exit_code == 0, first.output
    assert "2 runs, 0 already finished" in first.output
    table = (out / "tables" / "strats" / "table.md").read_text()
    assert "| mamba | 1 |" in table and "| logreg | 1 |" in table
    assert (out / "tables" / "strats" / "table.png").exists() and (out / "tables" / "strats" / "runs.csv").exists()
    report = out / "mamba" / "strats-split0-seed0" / "report" / "metrics.json"
    stamp = report.stat().st_mtime_ns

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2 runs, 2 already finished" in again.output
    assert report.stat().st_mtime_ns == stamp  # not rerun

    # --collect-only tabulates what has finished and names what has not, running nothing.
    partial = [*args[:5], "mamba,logreg,grud", *args[6:], "--collect-only"]
    collected = runner.invoke(app, partial)
    assert collected.exit_code == 0, collected.output
    assert "1 of 3 runs not finished" in collected.output and "grud split 0 seed 0" in collected.output
    assert not (out / "grud").exists()
    table = (out / "tables" / "strats" / "table.md").read_text()
    assert "| mamba | 1 |" in table and "grud" not in table


def test_benchmark_rejects_unknown_models_before_running_anything(tmp_path):
    result = runner.invoke(app, ["benchmark", "--models", "hymate,xgboost9", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 2
    assert "xgboost9" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_benchmark_runs_a_grid_on_any_task_with_its_label_types_metrics(p12, real_data, real_cache, tmp_path):
    out = tmp_path / "bench"
    where = ["--data-dir", str(real_data), "--cache-dir", str(real_cache), "-q"]
    args = ["benchmark", "physionet2012", "--task", "los-bands", "--protocol", "strats", "--models", "logreg",
            "--seeds", "0", "--train-stays", "300", "--eval-stays", "300", "--out", str(out), *where]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (out / "tables" / "strats" / "table.md").read_text()
    assert "physionet2012-los-bands" in table and "| logreg | 1 |" in table
    assert "AUROC (macro)" in table and "F1 (macro)" in table and "AUROC |" not in table  # multiclass columns
    row = json.loads((out / "logreg" / "strats-split0-seed0" / "report" / "metrics.json").read_text())["row"]
    assert (row["task"], row["label_type"], row["train_stays"]) == ("physionet2012-los-bands", "multiclass", 300)
    bad = runner.invoke(app, ["benchmark", "physionet2012", "--task", "los-bands", "--protocol", "a2b", "--models", "logreg",
                              "--out", str(tmp_path / "bad"), *where])  # fmt: skip
    assert bad.exit_code == 2 and "does not use the a2b protocol" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()
