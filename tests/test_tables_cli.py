"""Your own tables through the command line: a tiny HyMaTE trained end to end on a generated long
CSV (hours) and on a wide Parquet (timestamps, statics with admission times), each with a label
table; its checkpoint evaluates and predicts from the task spec it keeps."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from hymate.cli import app
from tests.data.test_tables import labels_for, long_events, stamped, wide

runner = CliRunner()
TINY = ["--epochs", "2", "--d-model", "8", "--mamba-layers", "1", "-q"]
N = 40


def write(root, kind):
    root.mkdir()
    events, labels = long_events(N), labels_for(N)
    if kind == "long-csv":
        events.write_csv(root / "events.csv")
        labels.write_csv(root / "labels.csv")
        return ["prepare", "table", str(root / "events.csv"), "--labels", str(root / "labels.csv")]
    stamped(wide(events).with_columns(pl.col("time") + 1.0)).write_parquet(root / "events.parquet")  # admitted 1 h before
    stamped(labels.with_columns(pl.col("prediction_time") + 1.0), "prediction_time").write_parquet(root / "labels.parquet")
    pl.DataFrame({"stay_id": list(range(1, N + 1)), "age": [float(40 + s) for s in range(N)],
                  "admission_time": ["2024-03-01 08:00"] * N}).write_parquet(root / "statics.parquet")  # fmt: skip
    return ["prepare", "table", str(root / "events.parquet"), "--labels", str(root / "labels.parquet"),
            "--statics", str(root / "statics.parquet"), "--time-unit", "timestamp", "--format", "wide"]  # fmt: skip


@pytest.mark.parametrize("kind", ["long-csv", "wide-parquet-timestamps"])
def test_a_tiny_hymate_trains_on_tables_and_its_checkpoint_serves(tmp_path, kind):
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--cache-dir", str(tmp_path / "cache")]
    prepared = runner.invoke(app, [*write(data, kind), "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert prepared.exit_code == 0, prepared.output
    assert (data / "hymate-table.json").is_file() and "40 records read -> 40 stays" in prepared.output
    labels = data / ("labels.csv" if kind == "long-csv" else "labels.parquet")
    trained = runner.invoke(app, ["train", "table", "--task", str(labels), "--seeds", "0", "--splits", "0",
                                  "--out", str(tmp_path / "runs"), *common, *TINY])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    run = next((tmp_path / "runs").glob("*split0-seed0"))
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["task_spec"]["dataset"] == "table" and config["task_spec"]["column"] == "boolean_value"
    assert config["config"]["present_values"] is (kind == "long-csv")  # the wide table has no valueless Drug events
    evaluated = runner.invoke(app, ["evaluate", str(run / "checkpoint"), *common])
    assert evaluated.exit_code == 0, evaluated.output
    scored = runner.invoke(app, ["predict", str(run / "checkpoint"), *common, "--out", str(tmp_path / "risk.csv")])
    assert scored.exit_code == 0, scored.output
    risk = pl.read_csv(tmp_path / "risk.csv")
    assert risk.get_column("probability").is_between(0, 1).all() and risk.height >= 4
