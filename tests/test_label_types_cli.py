"""Every label type through the command line on a small real PhysioNet 2012 subset: `hymate train`
(a tiny HyMaTE on mortality, LOS bands and LOS days; LightGBM on LOS days), the report of each
label type, the checkpoint round trip, `hymate predict` on raw stays, `hymate evaluate` and
`hymate explain`, and the options `hymate train` rejects (exit 2, one line naming the option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from hymate.cli import app
from hymate.evaluate.report import METRIC_LABELS
from hymate.evaluate.scores import evaluate_rows
from hymate.serve.predict import score
from hymate.tasks.registry import get_task
from hymate.tasks.splits import Split
from hymate.train.estimators import load_checkpoint
from tests.evaluate.test_report_meds import check_meds_predictions

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
runner = CliRunner()

TASKS = {"binary": "mortality", "multiclass": "los-bands", "regression": "los-days"}
TINY = ["--train-stays", "200", "--eval-stays", "150", "--epochs", "1", "--d-model", "8", "--mamba-layers", "1",
        "--max-events", "256"]  # fmt: skip
# What each label type's report and predictions hold.
METRICS = {"binary": ("auroc", "ap", "auprc_trapz", "min_re_pr", "brier", "ece"),
           "multiclass": ("accuracy", "macro_auroc", "macro_f1", "log_loss", "ece"),
           "regression": ("mae", "rmse", "r2")}  # fmt: skip
PLOTS = {"binary": ("roc", "pr", "calibration", "training"), "multiclass": ("confusion", "reliability", "training"),
         "regression": ("predicted", "training")}  # fmt: skip
N_CLASSES = len(get_task("physionet2012", "los-bands").classes)
COLUMNS = {"binary": ("probability", "logit"), "multiclass": (*(f"p_{k}" for k in range(N_CLASSES)), "predicted_class"),
           "regression": ("prediction",)}  # fmt: skip
RUN = "strats-split0-seed0"


@pytest.fixture(scope="module")
def where(real_data, real_cache) -> list[str]:
    return ["--data-dir", str(real_data), "--cache-dir", str(real_cache)]


@pytest.fixture(scope="module")
def views(p12) -> dict:
    return {short: get_task("physionet2012", short).view(p12) for short in TASKS.values()}


@pytest.fixture(scope="module")
def runs(p12, where, tmp_path_factory) -> dict[str, Path]:
    """One tiny HyMaTE run per label type (p12: the cache the commands read is prepared once)."""
    root = tmp_path_factory.mktemp("label-types")
    folders = {}
    for kind, short in TASKS.items():
        result = runner.invoke(app, ["train", "physionet2012", "--task", short, "--model", "hymate", *TINY,
                                     "--out", str(root / short), *where, "-q"])  # fmt: skip
        assert result.exit_code == 0, result.output
        folders[kind] = root / short / RUN
    return folders


@pytest.fixture(scope="module")
def lightgbm_run(p12, where, tmp_path_factory) -> Path:
    """In its own process, as `hymate benchmark` runs tabular models: LightGBM's OpenMP threads must
    wait passively (set before the process starts), else on a busy machine they spin ~6x longer."""
    out = tmp_path_factory.mktemp("lightgbm")
    cmd = [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--task", "los-days", "--model", "lightgbm",
           "--train-stays", "200", "--eval-stays", "150", "--out", str(out), *where, "-q"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out / RUN


@pytest.fixture(scope="module")
def new_stays(real_data, tmp_path_factory) -> tuple[Path, list[int]]:
    """Five set-a records from the archive, in the raw layout, without any Outcomes file."""
    root = tmp_path_factory.mktemp("new-stays")
    (root / "set-a").mkdir()
    ids = []
    with tarfile.open(real_data / "physionet2012" / "physionet-challenge-2012.tar.gz") as tar:
        for member in tar:
            if member.isfile() and "/set-a/" in member.name and member.name.endswith(".txt"):
                name = member.name.split("/")[-1]
                (root / "set-a" / name).write_bytes(tar.extractfile(member).read())
                ids.append(int(name.removesuffix(".txt")))
                if len(ids) == 5:
                    break
    return root, ids


def check_metrics(saved: dict, kind: str) -> None:
    """The label type's metrics, finite, each inside its bootstrap CI."""
    for key in METRICS[kind]:
        value, (lo, hi) = saved["metrics"][key], saved["ci95"][key]
        assert np.isfinite(value), key
        assert lo <= value <= hi, (key, lo, value, hi)


@pytest.mark.parametrize("kind", list(TASKS))
def test_the_report_has_the_label_types_metrics_cis_summary_and_plots(runs, kind):
    report = runs[kind] / "report"
    saved = json.loads((report / "metrics.json").read_text())
    task = get_task("physionet2012", TASKS[kind])
    row = saved["row"]
    assert (row["task"], row["label_type"], row["protocol"], row["split"], row["seed"], row["model"]) == (
        task.name, kind, "strats", 0, 0, "hymate")  # fmt: skip
    assert (row["train_stays"], row["val_stays"], row["test_stays"], row["test_rows"]) == (200, 150, 150, 150)
    assert row["epochs"] == 1 and saved["model_options"] == {"d_model": 8, "n_mamba_layers": 1}
    check_metrics(saved, kind)
    assert all(row[k] == saved["metrics"][k] for k in METRICS[kind])
    summary = (report / "summary.md").read_text()
    assert all(f"| {METRIC_LABELS[k]} |" in summary for k in METRICS[kind]), summary
    assert "Test stays: 150; predictions: 150" in summary and "What these numbers mean:" in summary
    # The run folder's summary: the same labels, the run's CIs, no sd for one run, the meanings.
    top = (runs[kind].parent / "summary.md").read_text()
    for k in METRICS[kind]:
        lo, hi = saved["ci95"][k]
        assert f"| {METRIC_LABELS[k]} | {saved['metrics'][k]:.4f} | {lo:.4f} to {hi:.4f} |" in top, top
    assert "sd" not in top and "What these numbers mean:" in top and "| wall time (s) |" in top
    for name in PLOTS[kind]:
        assert (report / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    frame = pl.read_parquet(report / "predictions.parquet")
    assert frame.height == 150 and frame["stay_id"].n_unique() == 150 and frame["label"].null_count() == 0
    assert set(COLUMNS[kind]) <= set(frame.columns)
    if kind == "binary":  # and in the meds-evaluation schema
        assert check_meds_predictions(report).height == 150
    else:
        assert not (report / "predictions_meds.parquet").exists()


@pytest.mark.parametrize("kind", list(TASKS))
def test_the_checkpoint_reproduces_the_runs_test_predictions_and_metrics(runs, views, kind):
    estimator, task, meta = load_checkpoint(runs[kind] / "checkpoint")
    assert task == get_task("physionet2012", TASKS[kind]) and meta["label_type"] == kind
    stored = pl.read_parquet(runs[kind] / "report" / "predictions.parquet").sort("stay_id", "prediction_time")
    frame, dropped = score(estimator, task, meta, views[TASKS[kind]], stored["stay_id"].to_list())
    frame = frame.sort("stay_id", "prediction_time")
    assert dropped == 0
    for column in ("stay_id", "prediction_time", "label"):
        assert frame[column].equals(stored[column]), column
    for column in COLUMNS[kind]:
        np.testing.assert_allclose(frame[column].to_numpy(), stored[column].to_numpy(), rtol=0, atol=1e-6, err_msg=column)
    pred = frame.select(COLUMNS[kind][:-1]).to_numpy() if kind == "multiclass" else frame[COLUMNS[kind][0]].to_numpy()
    metrics, _ = evaluate_rows(kind, frame["label"].to_numpy(), pred, frame["stay_id"].to_numpy(), n_boot=0)
    row = json.loads((runs[kind] / "report" / "metrics.json").read_text())["row"]
    for key in METRICS[kind]:
        assert metrics[key] == pytest.approx(row[key], abs=1e-6), key


@pytest.mark.parametrize("kind", list(TASKS))
def test_predict_scores_raw_stays_with_the_label_types_columns(runs, new_stays, tmp_path_factory, kind):
    folder, ids = new_stays
    out = tmp_path_factory.mktemp("predict") / ("pred.csv" if kind == "binary" else "pred.parquet")
    cache = tmp_path_factory.getbasetemp() / "predict-cache"  # shared: the five stays are prepared once
    result = runner.invoke(app, ["predict", str(runs[kind] / "checkpoint"), "--data-dir", str(folder), "--out", str(out),
                                 "--cache-dir", str(cache), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = pl.read_csv(out) if out.suffix == ".csv" else pl.read_parquet(out)
    assert sorted(pred["stay_id"].to_list()) == sorted(ids) and pred.height == len(ids)  # one row per stay
    assert pred.columns[:3] == ["stay_id", "prediction_time", "label"] and set(COLUMNS[kind]) <= set(pred.columns)
    assert (pred["prediction_time"] == 48.0).all() and pred["label"].is_null().all()
    assert pred["top_variables"].str.len_chars().min() > 0
    if kind == "binary":
        assert pred["probability"].is_between(0, 1).all()
    elif kind == "multiclass":
        proba = pred.select(COLUMNS[kind][:-1]).to_numpy()
        assert ((proba >= 0) & (proba <= 1)).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert (pred["predicted_class"].to_numpy() == proba.argmax(axis=1)).all()
    else:
        assert pred["prediction"].is_finite().all()


def test_predict_reads_a_flat_folder_or_one_stay_file_and_describes_its_columns(runs, new_stays, tmp_path):
    folder, ids = new_stays
    flat = tmp_path / "flat"  # the stay files as a user has them: no set-a/, plus a non-stay file
    flat.mkdir()
    for path in (folder / "set-a").iterdir():
        (flat / path.name).write_bytes(path.read_bytes())
    (flat / "Outcomes-a.txt").write_text("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n")
    (flat / "README.txt").write_text("PhysioNet downloads come with notes like this one\n")
    cache = tmp_path / "cache"
    for given, expected in ((flat, sorted(ids)), (flat / f"{ids[0]}.txt", [ids[0]])):
        out = tmp_path / f"pred-{len(expected)}.csv"
        result = runner.invoke(app, ["predict", str(runs["binary"] / "checkpoint"), "--data-dir", str(given), "--out", str(out),
                                     "--cache-dir", str(cache), "-q"])  # fmt: skip
        assert result.exit_code == 0, result.output
        pred = pl.read_csv(out)
        assert sorted(pred["stay_id"].to_list()) == expected
        described = json.loads(out.with_name(out.name + ".columns.json").read_text())
        assert list(described["columns"]) == pred.columns and all(described["columns"].values())
        assert "calibrated" in described["columns"]["probability"] and "Platt" in described["columns"]["probability"]
        assert "sum to 1" in described["columns"]["top_variables"]
    bad = tmp_path / "notes.csv"
    bad.write_text("x\n")
    result = runner.invoke(app, ["predict", str(runs["binary"] / "checkpoint"), "--data-dir", str(bad), "-q"])
    assert result.exit_code == 2 and "is not a physionet2012 stay file (expected <RecordID>.txt)" in result.output


def test_explain_works_for_multiclass_and_regression_checkpoints(runs, where, tmp_path):
    stay = int(pl.read_parquet(runs["multiclass"] / "report" / "predictions.parquet")["stay_id"][0])
    base = [*where, "--ig-steps", "2", "-q"]
    result = runner.invoke(app, ["explain", str(runs["multiclass"] / "checkpoint"), "--stay", str(stay), "--class", "2",
                                 "--out", str(tmp_path / "mc"), *base])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mc" / f"stay-{stay}" / "report.html").stat().st_size > 0
    assert "8-14 days" in (tmp_path / "mc" / f"stay-{stay}" / "explanation.json").read_text()  # the class explained
    bad = runner.invoke(app, ["explain", str(runs["multiclass"] / "checkpoint"), "--stay", str(stay), "--class", "7",
                              "--out", str(tmp_path / "bad"), *base])  # fmt: skip
    assert bad.exit_code == 2 and "--class must be 0..3" in bad.output and "Traceback" not in bad.output
    # A regression cohort: importance and attention map, no deletion test (that one measures AUROC).
    result = runner.invoke(app, ["explain", str(runs["regression"] / "checkpoint"), "--cohort", "--max-stays", "10",
                                 "--out", str(tmp_path / "reg"), *base])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "top variables over 10 stays" in result.output and "deletion test" not in result.output
    assert (tmp_path / "reg" / "cohort-test" / "report.html").exists()


def test_lightgbm_regression_trains_evaluates_and_is_not_explained(lightgbm_run, where, views, real_cache):
    saved = json.loads((lightgbm_run / "report" / "metrics.json").read_text())
    row = saved["row"]
    assert (row["task"], row["label_type"], row["model"], row["epochs"]) == ("physionet2012-los-days", "regression", "lightgbm", None)
    check_metrics(saved, "regression")
    assert (lightgbm_run / "report" / "predicted.png").exists() and not (lightgbm_run / "lightning").exists()
    checkpoint = lightgbm_run / "checkpoint"
    assert json.loads((checkpoint / "config.json").read_text())["kind"] == "tabular"
    assert (checkpoint / "lightgbm.txt").exists() and (checkpoint / "features.json").exists()

    out = lightgbm_run.parent / "evaluation"
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--out", str(out), *where, "-q"])
    assert result.exit_code == 0, result.output
    assert "MAE" in result.output and "subsample" in result.output  # trained on 200 stays: scored on the full test part
    evaluated = json.loads((out / "metrics.json").read_text())
    check_metrics(evaluated, "regression")
    full = pl.read_parquet(out / "predictions.parquet")
    split_test = set(Split.load(real_cache / "splits" / f"{saved['split']}.json", views["los-days"]).test)
    assert set(full["stay_id"].to_list()) == split_test and len(split_test) > 150
    # On the run's own test stays, evaluate's predictions are the run's.
    run = pl.read_parquet(lightgbm_run / "report" / "predictions.parquet").sort("stay_id")
    mine = full.filter(pl.col("stay_id").is_in(run["stay_id"].implode())).sort("stay_id")
    assert mine["stay_id"].equals(run["stay_id"])
    np.testing.assert_allclose(mine["prediction"].to_numpy(), run["prediction"].to_numpy(), rtol=0, atol=1e-6)
    metrics, _ = evaluate_rows("regression", run["label"].to_numpy(), mine["prediction"].to_numpy(), run["stay_id"].to_numpy(), n_boot=0)
    assert all(metrics[k] == pytest.approx(row[k], abs=1e-6) for k in METRICS["regression"])

    refused = runner.invoke(app, ["explain", str(checkpoint), "--stay", str(run["stay_id"][0]), *where, "-q"])
    assert refused.exit_code == 2 and "tabular model" in refused.output and "Traceback" not in refused.output


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--model", "lightgbm", "--lr", "0.01"], ["--lr", "lightgbm"]),
        (["--task", "mortality", "--train-hours-per-stay", "4"], ["--train-hours-per-stay", "physionet2012-mortality"]),
        (["--model", "strats", "--query-time"], ["--query-time", "strats"]),
        (["--protocol", "a2b"], ["a2b", "protocol"]),
        (["--task", "nope"], ["nope", "task"]),
    ],
)
def test_options_that_do_not_apply_are_rejected_with_one_line(p12, where, tmp_path, options, named):
    result = runner.invoke(app, ["train", "physionet2012", *options, "--out", str(tmp_path / "out"), *where, "-q"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and all(n in result.output for n in named), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing ran
