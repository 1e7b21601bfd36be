"""Explain one stay or a cohort from a checkpoint: numbers (JSON), PNG figures and one
self-contained HTML report per call. `hymate explain` and benchmarks/explain_p12.py call these."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from hymate.data.batching import EventSequenceDataset
from hymate.data.normalize import Normalizer
from hymate.data.schema import EventData
from hymate.evaluate.calibration import apply_platt
from hymate.explain import figures
from hymate.explain.faithfulness import N_RANDOM, deletion_curves
from hymate.explain.gradients import N_STEPS, variable_attributions
from hymate.explain.html_report import Section, render
from hymate.explain.importance import (
    ExplainError,
    explain_channels,
    require_channel_importance,
    stay_events,
    top_variables,
)
from hymate.io import write_atomic

TOP = 10
METHODS = ("attention", "attention_rollout", "integrated_gradients")
ROLLOUT_NOTE = (
    "Rollout: those weights traced back through the channel-attention layers to the variables whose "
    "information each channel token absorbed."
)
IG_NOTE = (
    "Integrated Gradients: attribution of the stay's values (vs. the same events at each variable's "
    "training mean) to the logit, summed over the variable's events; positive raises the risk."
)


def _dataset(model, normalizer: Normalizer, meta: dict, data: EventData, stay_ids) -> EventSequenceDataset:
    require_channel_importance(model, meta)
    ids = np.asarray(list(stay_ids), dtype=np.int64)
    known = data.stays.get_column("stay_id").to_numpy()
    absent = np.setdiff1d(ids, known)
    if len(absent):
        raise ExplainError(
            f"stay {absent[0]} is not in {data.name} ({len(known):,} stays, ids such as {', '.join(map(str, known[:3]))})"
            if len(absent) == 1 else f"{len(absent)} stays are not in {data.name}: {absent[:10].tolist()}"
        )  # fmt: skip
    max_events = meta.get("train", {}).get("max_events")
    return EventSequenceDataset(data, ids, normalizer, max_events=max_events, unknown_variables="drop")


def _describe(meta: dict, calibration: dict, output: float, label) -> tuple[str, str]:
    """(the outcome in words, the prediction in words) for the explained output of the task."""
    kind = meta.get("label_type", "binary")
    what = meta.get("explained_output") or meta.get("positive_label", "positive")
    if kind == "binary":
        p = float(apply_platt(np.array([output]), calibration.get("a", 1.0), calibration.get("b", 0.0))[0])
        outcome = "unknown" if label is None else (what if label else f"not {what}")
        return outcome, f"Risk of {what} {p:.1%} (calibrated)"
    if kind == "multiclass":
        classes = meta.get("classes", [])
        outcome = "unknown" if label is None else classes[int(label)]
        return outcome, f"Logit of class '{what}' {output:.3f} (explained output)"
    target = meta.get("target") or {"mean": 0.0, "sd": 1.0}
    outcome = "unknown" if label is None else f"{label:.3g}"
    return outcome, f"Predicted value {output * target['sd'] + target['mean']:.3g}"


def _write(out: Path, pngs: dict[str, bytes], title: str, sections: list[Section], numbers: dict, footer: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in pngs.items():
        write_atomic(out / f"{name}.png", png)
        paths[name] = out / f"{name}.png"
    write_atomic(out / "report.html", render(title, sections, footer))
    write_atomic(out / "explanation.json", json.dumps(numbers, indent=1, default=float))
    return {**paths, "html": out / "report.html", "json": out / "explanation.json"}


def explain_stay(
    model: torch.nn.Module, normalizer: Normalizer, meta: dict, data: EventData, stay_id: int, out: Path,
    n_steps: int = N_STEPS,
) -> dict:  # fmt: skip
    """Local explanation of one stay: its top variables by attention and by IG, a timeline of its
    observations with the model's event weights, and its channel-attention map."""
    dataset = _dataset(model, normalizer, meta, data, [stay_id])
    names = normalizer.variables
    ce = explain_channels(model, dataset, names)
    ig, gap = variable_attributions(model, dataset, n_steps)
    importance, rollout, observed, ig = ce.importance[0], ce.rollout[0], ce.observed[0], ig[0]
    events = stay_events(model, dataset, 0, normalizer)
    calibration = meta.get("calibration") or {}
    label = None if np.isnan(ce.labels[0]) else ce.labels[0]

    by_attention = top_variables(names, importance, TOP)
    by_rollout = top_variables(names, rollout, TOP)
    by_ig = top_variables(names, np.abs(ig), TOP, among=observed)
    signed_ig = [(n, float(ig[names.index(n)])) for n, _ in by_ig]
    counts = events.group_by("variable").agg(pl.len().alias("n"), pl.col("value").last().alias("last"))
    counts = {r["variable"]: r for r in counts.iter_rows(named=True)}
    table = []
    for name, weight in by_attention:
        v = names.index(name)
        seen = counts.get(name)
        table.append({
            "variable": name, "attention weight": weight, "rollout": float(rollout[v]), "IG attribution": float(ig[v]),
            "observations": seen["n"] if seen else 0, "last value": seen["last"] if seen else "not measured",
        })  # fmt: skip
    order = [n for n, _ in top_variables(names, importance, 12, among=observed)]
    heat_order = [names[v] for v in np.argsort(-importance, kind="stable")]
    heat_index = [names.index(n) for n in heat_order]
    pngs = {
        "importance": figures.importance_bars(
            {"HyMaTE attention (channel weight)": by_attention, "attention rollout": by_rollout,
             "Integrated Gradients (signed)": signed_ig},
            f"stay {stay_id}: top variables",
        ),
        "timeline": figures.stay_timeline(events, order, f"stay {stay_id}: observations and event weights"),
        "attention": figures.attention_heatmap(
            ce.attention[0][np.ix_(heat_index, heat_index)], heat_order, f"stay {stay_id}: channel attention"
        ),
    }  # fmt: skip
    outcome, prediction = _describe(meta, calibration, float(ce.logits[0]), label)
    sections = [
        Section(
            "Prediction",
            f"{prediction}; outcome: {outcome}; "
            f"{len(events):,} observations of {int(observed.sum())} variables read by the model.",
        ),  # fmt: skip
        Section(
            "Top variables",
            "Attention weight: HyMaTE's pooling weight over variables (sums to 1; "
            "a variable never measured has a weight too). " + ROLLOUT_NOTE + " " + IG_NOTE,
            table,
            {"top variables by each method": pngs["importance"]},
        ),  # fmt: skip
        Section(
            "Timeline",
            "Each observation of the 12 most-weighted measured variables; marker size "
            "and colour: the model's attention weight on that event.",
            figures={"timeline": pngs["timeline"]},
        ),  # fmt: skip
        Section(
            "Channel attention",
            "Which variables attend to which (mean over heads), ordered by attention weight.",
            figures={"channel attention": pngs["attention"]},
        ),  # fmt: skip
    ]
    numbers = {
        "stay_id": int(stay_id), "output": float(ce.logits[0]), "prediction": prediction, "label": label,
        "variables": names, "attention": importance.tolist(), "attention_rollout": rollout.tolist(),
        "observed": observed.tolist(),
        "integrated_gradients": ig.tolist(), "ig_completeness_gap": float(gap[0]),
    }  # fmt: skip
    footer = f"hymate explain: {meta.get('variant', meta.get('model'))} checkpoint, split {meta.get('split', '?')}."
    return _write(out, pngs, f"Why this risk? Stay {stay_id}", sections, numbers, footer)


def explain_cohort(
    model: torch.nn.Module, normalizer: Normalizer, meta: dict, data: EventData, stay_ids, out: Path,
    n_steps: int = N_STEPS, ks: tuple[int, ...] = (1, 3, 5, 10), n_random: int = N_RANDOM, seed: int = 0,
    deletion: bool = True, progress=None,
) -> dict:  # fmt: skip
    """Global explanation over `stay_ids`: mean attention weights and mean |IG| per variable, the
    mean channel-attention map, and (with `deletion`) the deletion test of both rankings."""
    say = progress or (lambda message: None)
    dataset = _dataset(model, normalizer, meta, data, stay_ids)
    names = normalizer.variables
    timings = {}
    start = time.perf_counter()
    ce = explain_channels(model, dataset, names)
    timings["attention_s"] = time.perf_counter() - start
    say(f"attention weights of {len(dataset):,} stays ({timings['attention_s']:.0f} s)")
    start = time.perf_counter()
    ig, gaps = variable_attributions(model, dataset, n_steps)
    timings["integrated_gradients_s"] = time.perf_counter() - start
    say(f"integrated gradients, {n_steps} steps ({timings['integrated_gradients_s']:.0f} s)")
    scores = {"attention": ce.importance, "attention_rollout": ce.rollout, "integrated_gradients": np.abs(ig)}
    cohort = {method: s.mean(axis=0) for method, s in scores.items()}
    top = {method: top_variables(names, s, TOP) for method, s in cohort.items()}

    rows = []
    if deletion:
        start = time.perf_counter()
        rows = deletion_curves(model, dataset, ce.observed, scores, list(ks), n_random, seed, "stay", ce.logits)
        timings["deletion_s"] = time.perf_counter() - start
        say(f"deletion test, k in {list(ks)}, {n_random} random draws ({timings['deletion_s']:.0f} s)")

    heat_order = [names[v] for v in np.argsort(-cohort["attention"], kind="stable")]
    heat_index = [names.index(n) for n in heat_order]
    pngs = {
        "importance": figures.importance_bars(
            {"HyMaTE attention (mean channel weight)": top["attention"],
             "attention rollout (mean)": top["attention_rollout"],
             "Integrated Gradients (mean |attribution|)": top["integrated_gradients"]},
            f"top {TOP} variables over {len(dataset):,} stays",
        ),
        "attention": figures.attention_heatmap(
            ce.cohort_attention()[np.ix_(heat_index, heat_index)], heat_order, "channel attention (mean over stays)"
        ),
    }  # fmt: skip
    if rows:
        pngs["deletion"] = figures.deletion_plot(rows, "deletion test: remove each stay's top-k variables")
    ranking_table = [
        {
            "rank": r + 1,
            **{method.replace("_", " "): f"{top[method][r][0]} ({top[method][r][1]:.3f})" for method in METHODS},
        }
        for r in range(min(len(t) for t in top.values()))
    ]
    deletion_table = [
        {"method": r["method"], "k": r["k"], "AUROC": r["auroc"], "AUROC drop": r["auroc_drop"],
         "sd over draws": r.get("sd", "")} for r in rows
    ]  # fmt: skip
    base = rows[0]["base_auroc"] if rows else None
    sections = [
        Section(
            "Global variable importance",
            "Attention: mean over stays of HyMaTE's pooling weight "
            "over variables. " + ROLLOUT_NOTE + " " + IG_NOTE + " Shown: mean absolute attribution (logit units).",
            ranking_table,
            {"global importance": pngs["importance"]},
        ),  # fmt: skip
        Section(
            "Channel attention",
            "Mean over stays and heads; variables ordered by global attention weight.",
            figures={"channel attention": pngs["attention"]},
        ),
    ]
    if rows:
        sections.append(Section(
            "Faithfulness: deletion test",
            f"For each stay, all events of its top-k measured variables (by each method) are removed and "
            f"the stay re-scored; random: k random measured variables, {n_random} draws. Test AUROC with "
            f"nothing removed: {base:.4f}. A faithful explanation hurts far more than chance.",
            deletion_table, {"deletion curves": pngs["deletion"]},
        ))  # fmt: skip
    numbers = {
        "stays": len(dataset), "variables": names, "n_steps": n_steps, "timings_s": timings,
        "global": {m: dict(zip(names, s.tolist(), strict=True)) for m, s in cohort.items()},
        "top10": {m: [n for n, _ in t] for m, t in top.items()},
        "ig_completeness_gap_mean_abs": float(np.abs(gaps).mean()), "deletion": rows,
    }  # fmt: skip
    footer = (
        f"hymate explain --cohort: {meta.get('variant', meta.get('model'))} checkpoint, split {meta.get('split', '?')}."
    )
    written = _write(out, pngs, f"What drives HyMaTE's predictions: {len(dataset):,} stays", sections, numbers, footer)
    return {**written, "numbers": numbers, "top": top, "rows": rows, "explanations": ce, "ig": ig}
