"""MEDS through the command line: a tiny HyMaTE trained end to end on meds-testing-helpers' sample
with its task labels (the meds protocol), evaluated, scored and explained from its checkpoint; the
input rule on a MEDS task (events after a prediction time are never read); and a real P12 run
through `export meds` -> `train meds` against the native path on the same split."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from meds_testing_helpers.dataset import MEDSDataset
from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS
from typer.testing import CliRunner

from hymate.cli import app

runner = CliRunner()
TINY = ["--epochs", "2", "--d-model", "8", "--mamba-layers", "1", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("meds-cli")
    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS).write(root / "meds")
    common = ["--data-dir", str(root / "meds"), "--cache-dir", str(root / "cache")]
    labels = str(root / "meds" / "task_labels" / "boolean_value_task")
    result = runner.invoke(app, ["train", "meds", "--task", labels, "--protocol", "meds", "--seeds", "0",
                                 "--out", str(root / "runs"), *common, *TINY])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, common, root / "runs" / "meds-split0-seed0"


def test_a_tiny_hymate_trains_on_meds_and_its_checkpoint_serves_every_command(trained):
    root, common, run = trained
    report = json.loads((run / "report" / "metrics.json").read_text())
    assert report["row"]["task"] == "meds-boolean_value_task" and report["row"]["protocol"] == "meds"
    # min count 10 over the 4 training subjects: HR and TEMP (12 events each) stay; the three ADMISSION//
    # codes (4 events) fold into ADMISSION//OTHER, DISCHARGE (4) into OTHER
    assert report["vocabulary"] == {"codes": 4, "min_count": 10, "rare_codes_folded": 4, "rare_events_folded": 8}
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["task_spec"]["column"] == "boolean_value" and config["config"]["present_values"] is True
    predictions = pl.read_parquet(run / "report" / "predictions.parquet")
    assert predictions.get_column("stay_id").unique().to_list() == [1500733] and predictions.height == 4  # held_out
    assert pl.read_parquet(run / "report" / "predictions_meds.parquet").height == 4
    evaluated = runner.invoke(app, ["evaluate", str(run / "checkpoint"), *common])
    assert evaluated.exit_code == 0, evaluated.output
    scored = runner.invoke(app, ["predict", str(run / "checkpoint"), *common, "--out", str(root / "risk.csv")])
    assert scored.exit_code == 0, scored.output
    risk = pl.read_csv(root / "risk.csv")
    assert risk.height == 21 and risk.get_column("probability").is_between(0, 1).all()
    explained = runner.invoke(app, ["explain", str(run / "checkpoint"), *common, "--stay", "1500733", "--out", str(root / "exp")])
    assert explained.exit_code == 0, explained.output


def test_events_after_a_prediction_time_are_never_read(trained, tmp_path):
    """Corrupt every event after 15:30 of subject 1500733 (values x1000, codes swapped): the risks at
    its prediction times up to 15:30 do not move; a later one may."""
    root, _, run = trained
    changed = tmp_path / "meds"
    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS).write(changed)
    shard = changed / "data" / "held_out" / "0.parquet"
    frame = pl.read_parquet(shard)
    late = pl.col("time") > pl.datetime(2010, 6, 3, 15, 30)
    frame = frame.with_columns(pl.when(late).then(pl.col("numeric_value") * 1000).otherwise(pl.col("numeric_value")).alias("numeric_value"),
                               pl.when(late & (pl.col("code") == "HR")).then(pl.lit("TEMP")).otherwise(pl.col("code")).alias("code"))  # fmt: skip
    pq.write_table(frame.to_arrow().cast(pq.read_schema(shard)), shard)

    def risks(data_dir, cache):
        out = tmp_path / f"{cache}.csv"
        result = runner.invoke(app, ["predict", str(run / "checkpoint"), "--data-dir", str(data_dir),
                                     "--cache-dir", str(tmp_path / cache), "--out", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        return pl.read_csv(out).filter(pl.col("stay_id") == 1500733).sort("prediction_time")

    before, after = risks(root / "meds", "a"), risks(changed, "b")
    early = before.get_column("prediction_time") <= 0.6  # 15:00 and 15:30 (the origin is 14:54:38)
    assert early.sum() == 2
    np.testing.assert_array_equal(before.filter(early).get_column("probability"), after.filter(early).get_column("probability"))
    assert not np.array_equal(before.get_column("probability"), after.get_column("probability"))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_p12_through_meds_trains_to_the_native_metrics(real_data, tmp_path):
    """export meds -> train meds gives the test metrics of the native path on the same split and
    seed, to rounding (MEDS stores values as float32, so the normalisation differs in the 7th digit)."""
    cache = ["--cache-dir", str(tmp_path / "cache")]
    tiny = ["--train-stays", "200", "--eval-stays", "150", "--epochs", "1", "--d-model", "8", "--mamba-layers", "1",
            "--max-events", "256", "--seeds", "0", "-q"]  # fmt: skip
    result = runner.invoke(app, ["export", "meds", "physionet2012", str(tmp_path / "meds"), "--data-dir", str(real_data), *cache, "-q"])
    assert result.exit_code == 0, result.output
    native = runner.invoke(app, ["train", "physionet2012", "--protocol", "strats", "--out", str(tmp_path / "native"),
                                 "--data-dir", str(real_data), *cache, *tiny])  # fmt: skip
    assert native.exit_code == 0, native.output
    via_meds = runner.invoke(app, ["train", "meds", "--task", str(tmp_path / "meds" / "labels" / "mortality.parquet"),
                                   "--protocol", "meds", "--out", str(tmp_path / "meds-run"), "--data-dir", str(tmp_path / "meds"),
                                   *cache, *tiny])  # fmt: skip
    assert via_meds.exit_code == 0, via_meds.output
    a = json.loads((tmp_path / "native" / "strats-split0-seed0" / "report" / "metrics.json").read_text())
    b = json.loads((tmp_path / "meds-run" / "meds-split0-seed0" / "report" / "metrics.json").read_text())
    for key in ("auroc", "ap", "brier", "ece"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-4), key
    pa, pb = (pl.read_parquet(p / "report" / "predictions.parquet") for p in
              (tmp_path / "native" / "strats-split0-seed0", tmp_path / "meds-run" / "meds-split0-seed0"))  # fmt: skip
    assert pa.get_column("stay_id").equals(pb.get_column("stay_id")) and pa.get_column("label").equals(pb.get_column("label"))
    assert np.abs(pa.get_column("probability").to_numpy() - pb.get_column("probability").to_numpy()).max() < 1e-4
