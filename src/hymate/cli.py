"""The `hymate` command line: one Typer app, one function per command."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hymate.errors import HymateError

app = typer.Typer(
    help="hymate: learn from electronic health records with HyMaTE (hybrid Mamba + Transformer).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Raw data location (default: $HYMATE_DATA, else <cache>/raw).", show_default=False),
]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for prepared data and splits (default: $HYMATE_CACHE or ~/.cache/hymate).", show_default=False),
]
Download = Annotated[bool, typer.Option("--download", help="Fetch the official files from PhysioNet if absent.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def friendly_errors(command):
    """Show a HymateError as one clear line and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HymateError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. physionet2012.")],
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a current cache exists.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test splits.")] = 0,
    splits_dir: Annotated[Path | None, typer.Option(help="Where split files go (default: <cache>/splits).")] = None,
    quiet: Quiet = False,
) -> None:
    """Read a dataset's raw files into the event model, cache it, and write its split files."""
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import load_dataset
    from hymate.tasks.splits import PROTOCOLS, make_splits

    start = time.perf_counter()
    data = load_dataset(dataset, data_dir, cache_dir, download=download, force=force, progress=not quiet)
    elapsed = time.perf_counter() - start
    report = data.report
    console.print(
        f"[bold]{dataset}[/]: {report.get('records_read', '?'):,} records read -> {data.stays.height:,} stays, "
        f"{data.events.height:,} events, {data.labels.height:,} labels ({elapsed:.1f} s)"
    )
    _print_exclusions(report)
    if dataset == "physionet2019":  # splits are drawn per task by `hymate train physionet2019 --task ...`
        septic = sum(v["septic_stays"] for v in report["per_set"].values())
        console.print(f"{septic:,} septic stays; hourly labels kept. Split files are drawn by `hymate train {dataset} --task sepsis-online|sepsis-stay`.")
        return
    out = splits_dir or resolve_cache(cache_dir) / "splits"
    table = Table("protocol", "split", "train", "val", "test", "sha256", title=f"split files in {out}")
    for protocol in PROTOCOLS:
        for split in make_splits(data, protocol, seed):
            split.save(out)
            table.add_row(protocol, str(split.index), f"{len(split.train):,}", f"{len(split.val):,}",
                          f"{len(split.test):,}", split.sha256[:16])  # fmt: skip
    console.print(table)


@app.command()
@friendly_errors
def describe(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. physionet2012.")],
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    quiet: Quiet = False,
) -> None:
    """Print counts, label rate, events per stay, variables and missingness of a dataset."""
    from hymate.data.describe import describe as summarise
    from hymate.data.store import load_dataset

    data = load_dataset(dataset, data_dir, cache_dir, download=download, progress=not quiet)
    hourly = None
    if dataset == "physionet2019":  # hourly labels: summarise one label per stay (sepsis at any hour)
        from hymate.data.physionet2019 import with_stay_labels

        hourly = data.labels
        data = with_stay_labels(data)
    s = summarise(data)
    if hourly is not None:
        s["hourly_labels"] = {"rows": hourly.height, "positive": int(hourly.get_column("label").sum())}
    console.print(
        f"[bold]{s['dataset']}[/]: {s['stays']:,} stays, {s['events']:,} events, "
        f"{s['positives']:,}/{s['labelled_stays']:,} positive labels ({100 * s['label_rate']:.2f} %)"
    )
    groups = Table("group", "stays", "positives", "rate %", "events", title="by source group")
    for g in s["groups"]:
        rate = 100 * (g["positives"] or 0) / g["stays"]
        groups.add_row(g["split_group"], f"{g['stays']:,}", f"{g['positives'] or 0:,}", f"{rate:.2f}", f"{g['events']:,}")
    if hourly is not None:
        h = s["hourly_labels"]
        console.print(f"hourly labels: {h['positive']:,}/{h['rows']:,} hours positive ({100 * h['positive'] / max(h['rows'], 1):.2f} %)")
    console.print(groups)
    pct = Table(*s["events_per_stay"].keys(), title="events per stay")
    pct.add_row(*(f"{v:,.0f}" for v in s["events_per_stay"].values()))
    console.print(pct)
    variables = Table("variable", "events", "stays observed", "missing (stays) %", "p5", "median", "p95",
                      title=f"{len(s['variables'])} variables")  # fmt: skip
    for v in s["variables"]:
        variables.add_row(v["variable"], f"{v['events']:,}", f"{v['stays_observed']:,}",
                          f"{100 * v['missing_stays_frac']:.1f}", f"{v['p5']:.4g}", f"{v['median']:.4g}", f"{v['p95']:.4g}")  # fmt: skip
    console.print(variables)
    statics = Table("static", "missing %", title="statics")
    for name, frac in s["statics_missing_frac"].items():
        statics.add_row(name, f"{100 * frac:.1f}")
    console.print(statics)
    _print_exclusions(data.report)
    if json_out:
        json_out.write_text(json.dumps(s, indent=1, default=str))
        console.print(f"summary written to {json_out}")


def checkpoint_task(meta: dict, tasks: dict):
    """The stay-level task a checkpoint was trained for, or one clear error."""
    name = meta.get("task")
    if name in tasks:
        return tasks[name]
    if isinstance(name, str) and name.startswith("physionet2019-sepsis"):
        raise HymateError(
            f"this checkpoint is for {name}; evaluate, predict and explain handle PhysioNet 2012 mortality "
            "checkpoints so far (a sepsis run's test metrics and predictions are in the run folder beside its checkpoint)"
        )
    raise HymateError(f"checkpoint task {name!r} is unknown to this version of hymate (known: {', '.join(sorted(tasks))})")


def parse_int_list(text: str) -> list[int]:
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            return list(range(lo, hi + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"seeds must look like '0,1,2' or '0-4', got {text!r}") from None


@app.command()
@friendly_errors
def train(
    dataset: Annotated[str, typer.Argument(help="Dataset (its default task), e.g. physionet2012.")] = "physionet2012",
    protocol: Annotated[str, typer.Option(help="Split protocol: strats or splits5 (physionet2019: kfold5, a2b, splits5).")] = "strats",
    task_name: Annotated[str, typer.Option("--task", help="physionet2019 only: sepsis-online or sepsis-stay.")] = "sepsis-online",
    seeds: Annotated[str, typer.Option(help="Model seeds, e.g. '0,1,2' or '0-4'.")] = "0",
    splits: Annotated[str | None, typer.Option(help="Split indices to run (default: all of the protocol).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for runs and the summary.")] = Path("runs/hymate"),
    model: Annotated[str, typer.Option(help="hymate, or a baseline/ablation: mamba, hymate-events, strats, grud, lightgbm, logreg.")] = "hymate",
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Stays per batch.")] = 32,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW; default 1e-3, physionet2019 3e-3).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="Linear warm-up before the cosine decay, in epochs (default 1, physionet2019 0.25).")] = None,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 5,
    ema_decay: Annotated[float | None, typer.Option(help="Decay of the weight moving average (0: off; default 0.998, physionet2019 0.99).")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width (default: the model's own).")] = None,
    mamba_layers: Annotated[int | None, typer.Option(help="Mamba blocks (default: the model's own).")] = None,
    channel_layers: Annotated[int | None, typer.Option(help="Channel-attention layers (default: 1).")] = None,
    max_events: Annotated[int, typer.Option(help="Most recent events kept per stay.")] = 880,
    recompute_context: Annotated[bool, typer.Option("--recompute-context", help="Recompute the Mamba blocks in the backward pass: less memory for long stays, ~20 % more step time.")] = False,
    train_hours_per_stay: Annotated[int, typer.Option(help="sepsis-online: train on every positive and up to N random negative hours per stay and step (0: all).")] = 8,
    query_time: Annotated[bool | None, typer.Option(help="physionet2019: the model also reads the prediction hour (sepsis-online) or the time its record ends (sepsis-stay). Default: on.")] = None,
    train_stays: Annotated[int | None, typer.Option(help="Use a random subset of training stays (quick runs).")] = None,
    eval_stays: Annotated[int | None, typer.Option(help="Use a random subset of validation/test stays.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the split files.")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip finished runs and resume interrupted ones.")] = True,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    quiet: Quiet = False,
) -> None:
    """Train HyMaTE, select on validation, and report test metrics with CIs (one folder per run)."""
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import load_dataset
    from hymate.models.registry import ALL_MODELS
    from hymate.tasks.mortality import TASKS
    from hymate.tasks.splits import load_or_make_splits, subsample
    from hymate.train.module import TrainConfig
    from hymate.train.run import run_experiment
    from hymate.train.sepsis import SEPSIS_TRAINING

    # What is not given comes from the dataset's recipe: P19's (measured there), else TrainConfig's.
    recipe = SEPSIS_TRAINING if dataset == "physionet2019" else {k: getattr(TrainConfig, k) for k in SEPSIS_TRAINING}
    given_recipe = {"lr": lr, "warmup_epochs": warmup_epochs, "ema_decay": ema_decay}
    lr, warmup_epochs, ema_decay = (recipe[k] if v is None else v for k, v in given_recipe.items())
    config = TrainConfig(  # checks the settings before any data are read; P12 ignores train_hours_per_stay
        max_epochs=epochs, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs, patience=patience,
        max_events=max_events, ema_decay=ema_decay or None, train_hours_per_stay=train_hours_per_stay or None,
    )  # fmt: skip
    if dataset == "physionet2019":  # the sepsis tasks (hymate.train.sepsis)
        from hymate.train.sepsis import train_command

        given = {"d_model": d_model, "n_mamba_layers": mamba_layers, "n_channel_layers": channel_layers,
                 "query_time": query_time, "recompute_context": recompute_context or None}  # fmt: skip
        train_command(console, task_name, protocol, model, parse_int_list(seeds), splits and parse_int_list(splits), out,
                      config, {k: v for k, v in given.items() if v is not None}, train_stays, eval_stays, split_seed,
                      resume, data_dir, cache_dir, not quiet)  # fmt: skip
        return
    if dataset not in TASKS:
        raise HymateError(f"no task for dataset {dataset!r}; known: {', '.join(sorted(TASKS))}")
    if model not in ALL_MODELS:
        raise typer.BadParameter(f"unknown model {model!r}; known: {', '.join(ALL_MODELS)}")
    task = TASKS[dataset]
    data = load_dataset(task.dataset, data_dir, cache_dir, download=download, progress=not quiet)
    chosen = load_or_make_splits(data, protocol, split_seed, resolve_cache(cache_dir) / "splits")
    if splits is not None:
        wanted = set(parse_int_list(splits))
        chosen = [s for s in chosen if s.index in wanted]
    if train_stays or eval_stays:
        chosen = [subsample(s, train_stays, eval_stays, split_seed) for s in chosen]
    given = {"d_model": d_model, "n_mamba_layers": mamba_layers, "n_channel_layers": channel_layers,
             "recompute_context": recompute_context or None}  # fmt: skip
    overrides = {k: v for k, v in given.items() if v is not None}  # each model keeps its own defaults
    rows = run_experiment(data, task, chosen, parse_int_list(seeds), overrides, config, out, not quiet, resume, model)
    table = Table("protocol", "split", "seed", "AUROC", "AP", "AUPRC trapz", "min(Re,Pr)", "ECE", "wall s",
                  title=f"{model} on {task.name} (test)")  # fmt: skip
    for r in rows:
        table.add_row(r["protocol"], str(r["split"]), str(r["seed"]), f"{r['auroc']:.4f}", f"{r['ap']:.4f}",
                      f"{r['auprc_trapz']:.4f}", f"{r['min_re_pr']:.4f}", f"{r['ece']:.4f}",
                      "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}")  # fmt: skip
    console.print(table)
    console.print(f"reports in {out} (summary.md, and report/ in each run folder)")


@app.command()
@friendly_errors
def benchmark(
    dataset: Annotated[str, typer.Argument(help="Dataset (its default task), e.g. physionet2012.")] = "physionet2012",
    protocol: Annotated[str, typer.Option(help="Split protocol: strats or splits5.")] = "strats",
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = "hymate,mamba,hymate-events,strats,grud,lightgbm,logreg",
    seeds: Annotated[str | None, typer.Option(help="Seeds (default: 0-4 for strats, 0 for splits5).")] = None,
    splits: Annotated[str | None, typer.Option(help="Split indices (default: all of the protocol).")] = None,
    out: Annotated[Path, typer.Option(help="Benchmark folder: one subfolder per model, the tables in tables/<protocol>.")] = Path("runs/benchmark"),
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs of the neural models (default: train's).")] = None,
    train_stays: Annotated[int | None, typer.Option(help="Random subset of training stays (quick runs).")] = None,
    eval_stays: Annotated[int | None, typer.Option(help="Random subset of validation/test stays.")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    parallel: Annotated[int, typer.Option("--jobs", help="Runs at once, each with cores/jobs threads (two 1-thread runs did ~1.4x the work of one 2-thread run on a 2-core CPU).")] = 1,
    collect_only: Annotated[bool, typer.Option("--collect-only", help="Run nothing: tabulate the runs that have finished (e.g. while a grid is still running).")] = False,
    quiet: Quiet = False,
) -> None:
    """Run a grid of models x splits x seeds (each run in its own process), skipping finished runs,
    and write the comparison table (Markdown, CSV, PNG)."""
    import sys

    from rich.progress import Progress

    from hymate.evaluate.compare import TABLE_METRICS, read_row, run_folder, write_comparison
    from hymate.models.registry import ALL_MODELS, TABULAR
    from hymate.train.grid import GridRun, run_grid

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_MODELS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown) or '(none)'}; known: {', '.join(ALL_MODELS)}")
    if protocol not in ("strats", "splits5"):
        raise typer.BadParameter(f"protocol must be strats or splits5, got {protocol!r}")
    seed_list = parse_int_list(seeds) if seeds else ([0, 1, 2, 3, 4] if protocol == "strats" else [0])
    split_list = parse_int_list(splits) if splits else ([0] if protocol == "strats" else [0, 1, 2, 3, 4])
    jobs = [(m, k, s) for m in names for k in split_list for s in seed_list]
    passthrough = []
    for flag, value in (("--epochs", epochs), ("--train-stays", train_stays), ("--eval-stays", eval_stays),
                        ("--data-dir", data_dir), ("--cache-dir", cache_dir)):  # fmt: skip
        if value is not None:
            passthrough += [flag, str(value)]
    todo = [j for j in jobs if read_row(run_folder(out, j[0], protocol, j[1], j[2])) is None]
    console.print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already finished in {out}")
    missing = list(todo)
    if collect_only:
        todo = []
    runs = []
    for model, split, seed in todo:
        cmd = [sys.executable, "-m", "hymate.cli", "train", dataset, "--protocol", protocol, "--model", model,
               "--seeds", str(seed), "--splits", str(split), "--out", str(out / model), "--quiet", *passthrough]  # fmt: skip
        # LightGBM's OpenMP threads spin while they wait; on a shared machine that burns tens of
        # times the CPU of the fit itself, so tabular runs get passive waiting (set before start).
        env = {"OMP_WAIT_POLICY": "passive"} if model in TABULAR else {}
        runs.append(GridRun(f"{model} {protocol} split {split} seed {seed}", cmd, env))
    with Progress(console=console, disable=quiet or not todo) as bar:
        task = bar.add_task("benchmark", total=len(todo))
        run_grid(runs, parallel, on_start=lambda r: bar.update(task, description=r.label),
                 on_done=lambda r: bar.advance(task))  # fmt: skip
    rows = [read_row(run_folder(out, m, protocol, k, s)) for m, k, s in jobs]
    rows = [r for r in rows if r is not None]
    if collect_only and missing:
        console.print(f"[yellow]{len(missing)} of {len(jobs)} runs not finished; the table shows the finished ones "
                      f"(see its runs column): {', '.join(f'{m} split {k} seed {s}' for m, k, s in missing)}[/yellow]")  # fmt: skip
    if not rows:
        raise HymateError(f"no finished runs in {out} for this grid")
    # Tables in out/tables/<protocol>: out/<protocol> would share a folder with the STraTS model ("strats").
    tables = out / "tables" / protocol
    lines = write_comparison(rows, names, tables, f"{dataset}, {protocol} protocol (test)")
    table = Table("model", "runs", *(k for k in TABLE_METRICS), "s / epoch", "s / run", "peak MB", title=f"{dataset}, {protocol}")
    for line in lines:
        table.add_row(line["model"], str(line["runs"]), *(f"{line[k]:.4f} ± {line[k + '_sd']:.4f}" for k in TABLE_METRICS),
                      f"{line['epoch_s']:.0f}" if line["epoch_s"] is not None else "-",
                      f"{line['wall_s']:.0f}" if line["wall_s"] is not None else "-",
                      f"{line['peak_mb']:.0f}")  # fmt: skip
    console.print(table)
    console.print(f"tables in {tables} (table.md, table.csv, runs.csv, table.png)")


@app.command()
@friendly_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `hymate train`.")],
    part: Annotated[str, typer.Option(help="Which part of the checkpoint's split: test or val.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <checkpoint>/../evaluation-<part>).")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """Re-evaluate a checkpoint on its own split's test (or validation) stays and write a report."""
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import load_dataset
    from hymate.evaluate.metrics import binary_metrics, bootstrap_ci
    from hymate.evaluate.report import write_report
    from hymate.serve.predict import score_stays
    from hymate.tasks.mortality import TASKS
    from hymate.tasks.splits import Split
    from hymate.train.checkpoint import load_checkpoint

    if part not in ("test", "val"):
        raise HymateError(f"--part must be test or val, got {part!r}")
    model, normalizer, meta = load_checkpoint(checkpoint)
    task = checkpoint_task(meta, TASKS)
    data = load_dataset(task.dataset, data_dir, cache_dir, progress=not quiet)
    split_path = resolve_cache(cache_dir) / "splits" / f"{meta['split']}.json"
    if not split_path.exists():
        raise HymateError(f"split file {split_path} not found: run `hymate prepare {task.dataset}` first")
    split = Split.load(split_path, data)
    frame, _ = score_stays(model, normalizer, meta, data, getattr(split, part))
    y, p = frame.get_column("label").to_numpy(), frame.get_column("probability").to_numpy()
    metrics, ci = binary_metrics(y, p), bootstrap_ci(y, p)
    folder = out or Path(checkpoint).parent / f"evaluation-{part}"
    write_report(folder, f"{meta['model']} on {task.name}, {split.name} ({part})", frame.get_column("stay_id").to_numpy(),
                 y, p, metrics, ci, {"checkpoint": str(checkpoint), "split": split.name})  # fmt: skip
    table = Table("metric", "value", "95 % CI", title=f"{split.name} ({part}, {len(y):,} stays)")
    for key, (lo, hi) in ci.items():
        table.add_row(key, f"{metrics[key]:.4f}", f"{lo:.4f} to {hi:.4f}")
    console.print(table)
    console.print(f"report in {folder}")


@app.command()
@friendly_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `hymate train`.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Stays to score, in the dataset's raw layout.")],
    out: Annotated[Path, typer.Option(help="Predictions file (.parquet or .csv).")] = Path("predictions.parquet"),
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """Score stays from a checkpoint alone: calibrated risk and the variables that drove it."""
    from hymate.data.store import load_dataset
    from hymate.serve.predict import score_stays
    from hymate.tasks.mortality import TASKS
    from hymate.train.checkpoint import load_checkpoint

    model, normalizer, meta = load_checkpoint(checkpoint)
    task = checkpoint_task(meta, TASKS)
    data = load_dataset(task.dataset, data_dir, cache_dir, progress=not quiet, require_labels=False)
    frame, unknown = score_stays(model, normalizer, meta, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out) if out.suffix == ".csv" else frame.write_parquet(out)
    if unknown:
        console.print(f"[yellow]note:[/] {unknown:,} events of variables the model never saw were left out")
    console.print(f"{frame.height:,} stays scored -> {out}")


@app.command()
@friendly_errors
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="A HyMaTE checkpoint folder written by `hymate train`.")],
    stay: Annotated[list[int] | None, typer.Option("--stay", help="Stay id to explain (repeat for several).")] = None,
    cohort: Annotated[bool, typer.Option("--cohort", help="Explain a cohort: global importance, attention map, deletion test.")] = False,
    part: Annotated[str, typer.Option(help="Cohort stays: test or val of the checkpoint's split, or all stays in the data.")] = "test",
    max_stays: Annotated[int | None, typer.Option(help="Cohort: a random subset of this many stays (seeded).")] = None,
    deletion: Annotated[bool, typer.Option("--deletion/--no-deletion", help="Cohort: run the deletion test (re-scores the stays ~40 times).")] = True,
    ig_steps: Annotated[int, typer.Option(help="Integrated Gradients steps (Gauss-Legendre).")] = 8,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <checkpoint>/../explain).")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """Why a prediction: per-stay or cohort variable importance (attention and Integrated
    Gradients), event timeline, channel-attention map; PNG figures and a self-contained HTML report."""
    import numpy as np

    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import load_dataset
    from hymate.explain.importance import require_channel_importance
    from hymate.explain.report import explain_cohort, explain_stay
    from hymate.tasks.mortality import TASKS
    from hymate.tasks.splits import Split
    from hymate.train.checkpoint import load_checkpoint

    if not stay and not cohort:
        raise typer.BadParameter("give --stay ID (one or more) or --cohort")
    if part not in ("test", "val", "all"):
        raise HymateError(f"--part must be test, val or all, got {part!r}")
    if ig_steps < 1:
        raise HymateError(f"--ig-steps must be at least 1, got {ig_steps}")
    tabular = [f for f in ("lightgbm.txt", "logreg.joblib", "features.json") if (Path(checkpoint) / f).exists()]
    if tabular:
        raise HymateError(f"{checkpoint} holds a tabular model ({tabular[0]}), which has no attention to explain; "
                          "explanations need a HyMaTE checkpoint")  # fmt: skip
    model, normalizer, meta = load_checkpoint(checkpoint)
    require_channel_importance(model, meta)
    task = checkpoint_task(meta, TASKS)
    folder = out or Path(checkpoint).parent / "explain"
    if stay:
        data = load_dataset(task.dataset, data_dir, cache_dir, progress=not quiet, require_labels=False)
        for stay_id in stay:
            written = explain_stay(model, normalizer, meta, data, stay_id, folder / f"stay-{stay_id}", ig_steps)
            console.print(f"stay {stay_id}: {written['html']}")
    if cohort:
        data = load_dataset(task.dataset, data_dir, cache_dir, progress=not quiet)
        if part == "all":
            ids = data.stay_ids
        else:
            split_path = resolve_cache(cache_dir) / "splits" / f"{meta['split']}.json"
            if not split_path.exists():
                raise HymateError(f"split file {split_path} not found: run `hymate prepare {task.dataset}` first, or use --part all")
            ids = list(getattr(Split.load(split_path, data), part))
        if max_stays is not None and max_stays < len(ids):
            ids = sorted(np.random.default_rng(0).choice(np.asarray(ids), max_stays, replace=False).tolist())
        say = None if quiet else (lambda message: console.print(f"  {message}"))
        result = explain_cohort(model, normalizer, meta, data, ids, folder / f"cohort-{part}", ig_steps,
                                deletion=deletion, progress=say)  # fmt: skip
        table = Table("rank", *(m.replace("_", " ") for m in result["top"]), title=f"top variables over {len(ids):,} stays")
        for r, names in enumerate(zip(*result["top"].values(), strict=True)):
            table.add_row(str(r + 1), *(f"{n} ({w:.3f})" for n, w in names))
        console.print(table)
        if result["rows"]:
            drops = Table("method", "k", "AUROC", "AUROC drop", title=f"deletion test (AUROC with nothing removed: {result['rows'][0]['base_auroc']:.4f})")
            for row in result["rows"]:
                sd = f" ± {row['sd']:.4f}" if "sd" in row else ""
                drops.add_row(row["method"], str(row["k"]), f"{row['auroc']:.4f}", f"{row['auroc_drop']:.4f}{sd}")
            console.print(drops)
        console.print(f"cohort report: {result['html']}")


def _print_exclusions(report: dict) -> None:
    excluded = report.get("excluded_stays", {})
    skipped = {"lines": report.get("skipped_lines", {}), "values": report.get("skipped_values", {})}
    if not excluded and not any(skipped.values()):
        return
    table = Table("what", "reason", "count", "examples", title="excluded and skipped (nothing is dropped silently)")
    for reason, entry in excluded.items():
        table.add_row("stays", reason, f"{entry['count']:,}", ", ".join(map(str, entry["ids"][:5])))
    for what, entries in skipped.items():
        for reason, entry in entries.items():
            table.add_row(what, reason, f"{entry['count']:,}", entry["examples"][0] if entry["examples"] else "")
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
