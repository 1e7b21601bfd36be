"""The comparison table: summaries match numpy, files are written, unfinished runs are told apart."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from hymate.errors import HymateError
from hymate.evaluate.compare import paired_difference, read_row, run_folder, summarise, write_comparison


def fake_rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for model in ("hymate", "strats"):
        for seed in range(3):
            rows.append({
                "model": model, "protocol": "strats", "seed": seed, "split": 0,
                **{k: float(rng.uniform(0.3, 0.9)) for k in ("auroc", "ap", "auprc_trapz", "min_re_pr", "ece", "brier")},
                "params": 1000 if model == "hymate" else 2000, "epochs": 5, "epoch_s": 10.0 + seed,
                "wall_s": 100.0 * (seed + 1), "peak_mb": 500.0 + seed,
            })  # fmt: skip
    return rows


def test_summary_is_mean_and_sample_sd_per_model_in_the_requested_order():
    rows = fake_rows()
    lines = summarise(rows, ["strats", "hymate", "absent"])
    assert [line["model"] for line in lines] == ["strats", "hymate"]
    hymate = [r["auroc"] for r in rows if r["model"] == "hymate"]
    assert lines[1]["auroc"] == pytest.approx(np.mean(hymate))
    assert lines[1]["auroc_sd"] == pytest.approx(np.std(hymate, ddof=1))
    assert lines[1]["epoch_s"] == pytest.approx(11.0) and lines[1]["wall_s"] == pytest.approx(200.0)
    assert lines[1]["peak_mb"] == 502.0 and lines[0]["params"] == 2000


def test_thread_counts_are_listed_and_unknown_ones_marked():
    rows = fake_rows()
    for r in rows:
        r["threads"] = 1 if r["model"] == "hymate" and r["seed"] else (2 if r["model"] == "hymate" else None)
    lines = summarise(rows, ["hymate", "strats"])
    assert lines[0]["threads"] == "1/2" and lines[1]["threads"] == "?"


def test_write_comparison_writes_markdown_csv_and_chart(tmp_path):
    rows = fake_rows()
    write_comparison(rows, ["hymate", "strats"], tmp_path, "test table")
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("# test table") and md.count("\n| hymate |") == 1 and "± " in md
    assert pl.read_csv(tmp_path / "table.csv").height == 2
    assert pl.read_csv(tmp_path / "runs.csv").height == 6
    assert (tmp_path / "table.png").stat().st_size > 1000
    with pytest.raises(HymateError, match="no finished runs"):
        write_comparison([], ["hymate"], tmp_path, "empty")


def test_read_row_distinguishes_unfinished_and_corrupt_runs(tmp_path):
    folder = run_folder(tmp_path, "hymate", "strats", 0, 3)
    assert folder == tmp_path / "hymate" / "strats-split0-seed3"
    assert read_row(folder) is None
    (folder / "report").mkdir(parents=True)
    (folder / "report" / "metrics.json").write_text(json.dumps({"row": {"model": "hymate"}}))
    assert read_row(folder) == {"model": "hymate"}
    (folder / "report" / "metrics.json").write_text("{not json")
    with pytest.raises(HymateError, match="delete it to rerun"):
        read_row(folder)


def test_paired_difference_uses_only_the_runs_both_models_have():
    rows = [
        {"model": "hymate", "protocol": "splits5", "split": k, "seed": 0, "auroc": a}
        for k, a in enumerate([0.80, 0.90, 0.85, 0.70])
    ] + [
        {"model": "strats", "protocol": "splits5", "split": k, "seed": 0, "auroc": a}
        for k, a in enumerate([0.82, 0.86])  # only splits 0 and 1 finished
    ] + [{"model": "strats", "protocol": "strats", "split": 0, "seed": 0, "auroc": 0.1}]  # other protocol: never paired
    got = paired_difference(rows, "hymate", "strats")
    diffs = [0.80 - 0.82, 0.90 - 0.86]
    assert got["n"] == 2 and got["wins"] == 1
    assert got["mean"] == pytest.approx(np.mean(diffs))
    assert got["sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert paired_difference(rows, "hymate", "absent") is None


def test_a_single_run_prints_its_value_without_a_zero_spread(tmp_path):
    rows = [r for r in fake_rows() if r["model"] == "strats" or r["seed"] == 0]  # hymate: one run
    write_comparison(rows, ["hymate", "strats"], tmp_path, "t")
    lines = {line.split(" | ")[0].strip("| "): line for line in (tmp_path / "table.md").read_text().splitlines()}
    assert "±" not in lines["hymate"] and f"{rows[0]['auroc']:.4f}" in lines["hymate"]
    assert lines["strats"].count("±") == 5
