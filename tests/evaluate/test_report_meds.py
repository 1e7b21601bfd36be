"""A binary run's report also holds its predictions in the meds-evaluation schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from hymate.data.schema import MEDS_ANCHOR
from hymate.evaluate.report import write_report
from hymate.evaluate.scores import evaluate_rows
from hymate.tasks.registry import get_task

# github.com/kamilest/meds-evaluation, src/meds_evaluation/schema.py: BINARY_CLASSIFICATION_SCHEMA_DICT
MEDS_EVALUATION_BINARY = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean,
                          "predicted_boolean_value": pl.Boolean, "predicted_boolean_probability": pl.Float64}  # fmt: skip


def check_meds_predictions(report: Path) -> pl.DataFrame:
    """predictions_meds.parquet of a binary report: the meds-evaluation columns and types, one row per
    labelled prediction of predictions.parquet, the same labels, probabilities and times."""
    meds = pl.read_parquet(report / "predictions_meds.parquet")
    assert dict(meds.schema) == MEDS_EVALUATION_BINARY
    frame = pl.read_parquet(report / "predictions.parquet").filter(pl.col("label").is_not_null())
    assert meds.get_column("subject_id").to_list() == frame.get_column("stay_id").to_list()
    assert meds.get_column("boolean_value").to_list() == (frame.get_column("label") == 1).to_list()
    assert meds.get_column("predicted_boolean_probability").to_list() == frame.get_column("probability").to_list()
    hours = frame.get_column("prediction_time").to_list()
    assert meds.get_column("prediction_time").to_list() == [MEDS_ANCHOR + dt.timedelta(hours=h) for h in hours]
    expected = frame.get_column("alarm") if "alarm" in frame.columns else frame.get_column("probability") >= 0.5
    assert meds.get_column("predicted_boolean_value").to_list() == expected.to_list()
    return meds


def _frame(n: int, alarm: float | None) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 3 == 0).astype(float)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    frame = pl.DataFrame({"stay_id": np.arange(n, dtype=np.int64) // 2, "prediction_time": (np.arange(n) % 2) + 47.5,
                          "label": y, "probability": p, "logit": np.log(p / (1 - p + 1e-9) + 1e-9)})  # fmt: skip
    frame = frame.with_columns(pl.when(pl.int_range(n) == 5).then(None).otherwise(pl.col("label")).alias("label"))
    return frame.with_columns(alarm=pl.col("probability") >= alarm) if alarm is not None else frame


def test_binary_reports_write_meds_evaluation_predictions_and_others_do_not(tmp_path):
    task = get_task("physionet2012", "mortality")
    for name, alarm in (("plain", None), ("threshold", 0.3)):
        frame = _frame(60, alarm)
        labelled = frame.filter(pl.col("label").is_not_null())
        metrics, ci = evaluate_rows("binary", labelled["label"].to_numpy(), labelled["probability"].to_numpy(),
                                    labelled["stay_id"].to_numpy(), n_boot=5)  # fmt: skip
        write_report(tmp_path / name, "t", task, frame, metrics, ci, {})
        meds = check_meds_predictions(tmp_path / name)
        assert meds.height == 59  # the unlabelled row is left out
    assert pl.read_parquet(tmp_path / "threshold" / "predictions_meds.parquet")["predicted_boolean_value"].sum() > \
        pl.read_parquet(tmp_path / "plain" / "predictions_meds.parquet")["predicted_boolean_value"].sum()  # fmt: skip
    regression = get_task("physionet2012", "los-days")
    frame = pl.DataFrame({"stay_id": [1, 2, 3], "prediction_time": [48.0] * 3, "label": [1.0, 5.0, 9.0],
                          "prediction": [2.0, 4.0, 8.0]})  # fmt: skip
    write_report(tmp_path / "reg", "t", regression, frame, {"mae": 1.0, "rmse": 1.0, "r2": 0.5}, {}, {})
    assert not (tmp_path / "reg" / "predictions_meds.parquet").exists()
