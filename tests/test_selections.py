"""Seed and split selections: one that selects nothing or reaches outside is a usage error naming
the option, before any data are read (not a FileNotFoundError or a failed run later)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hymate.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "option", "value", "says"),
    [
        ("train", "--seeds", "4-0", "selects nothing"),
        ("train", "--seeds", "", "selects nothing"),
        ("train", "--seeds", "0,x", "expected a list"),
        ("train", "--seeds", "4294967296", "takes 0 to 4294967295"),
        ("train", "--splits", "3-1", "selects nothing"),
        ("train", "--splits", "1", "takes 0 to 0"),  # strats has one split
        ("benchmark", "--seeds", "4-0", "selects nothing"),
        ("benchmark", "--seeds", "", "selects nothing"),
        ("benchmark", "--splits", "", "selects nothing"),
        ("benchmark", "--splits", "0-7", "takes 0 to 0"),
    ],
)
def test_an_empty_or_outside_selection_is_a_usage_error_naming_the_option(tmp_path, command, option, value, says):
    argv = [command, "physionet2012", option, value, "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    if command == "benchmark":
        argv += ["--models", "logreg"]
    result = runner.invoke(app, argv, env={"COLUMNS": "300"})
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, text
    assert f"Invalid value for {option}" in text and says in text, text
    assert "Traceback" not in text and "does not exist" not in text  # stopped before looking for data
    assert not (tmp_path / "out").exists()
