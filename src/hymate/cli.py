"""The `hymate` command line: one Typer app, one function per command."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hymate.data.losses import summary as losses_summary
from hymate.errors import DataError, HymateError
from hymate.output import VERBOSE_ENV, is_terminal, verbose

# OpenMP's idle threads spin before they sleep: libgomp's default is 300,000 spins. On a shared
# core (another process, a DataLoader worker) the spinning and the waiting for a descheduled thread
# cost the P12 epoch 3.2x (43 -> 138 s, 2 cores, one taken by a busy loop); 1,000 spins cost 4 %
# alone and 1.8x shared; PASSIVE 1.7x both ways (benchmarks/results/cpu_avx512*.json). Set before
# torch (and its libgomp) loads, and only where the user chose no policy.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys():
    os.environ["GOMP_SPINCOUNT"] = "1000"

app = typer.Typer(
    help="hymate: learn from electronic health records with HyMaTE (hybrid Mamba + Transformer).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Rich draws 80 columns where the output is not a terminal (a log file, CI): tables then cut their
# headers ("proto…"); a log has no width to fit, so it gets 120 unless COLUMNS says otherwise.
_LOG_WIDTH = None if os.environ.get("COLUMNS") else 120
# No emoji codes: text from the data (a variable named ':x:') is printed as written. Text from the
# data or from an error never goes through markup unescaped (`escape`, or `Text` cells in tables).
console = Console(width=None if is_terminal(sys.stdout) else _LOG_WIDTH, emoji=False)
err_console = Console(stderr=True, width=None if is_terminal(sys.stderr) else _LOG_WIDTH, emoji=False)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Raw data location (default: $HYMATE_DATA, else <cache>/raw).", show_default=False),
]
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for prepared data and splits (default: $HYMATE_CACHE or ~/.cache/hymate).", show_default=False),
]
Download = Annotated[bool, typer.Option("--download", help="Fetch the official files from PhysioNet if absent.", metavar="")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.", metavar="")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", "--debug", help="Also show what is normally filtered: Lightning's banners, third-party warnings, the kernel's build log, and an error's traceback.", metavar="")]


def friendly_errors(command):
    """Show a HymateError as one clear line and exit 2, instead of a traceback (with --verbose:
    the line, then the traceback). Any other exception is a bug, not the user's input: one line
    naming it, a pointer to --debug for the traceback, exit 1. --verbose is passed on as
    HYMATE_VERBOSE=1, so the library and any run subprocess see it."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if kwargs.get("verbose") and kwargs.get("quiet"):
            raise typer.BadParameter("--quiet and --verbose: choose one")
        before = os.environ.get(VERBOSE_ENV)
        if kwargs.get("verbose"):
            os.environ[VERBOSE_ENV] = "1"
        loud = verbose()  # the flag, or HYMATE_VERBOSE from a parent (a `hymate benchmark` sub-run)
        try:
            return command(*args, **kwargs)
        except HymateError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            if loud:
                err_console.print_exception()
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise  # typer's own exits and usage errors, and Ctrl-C, keep their meaning
        except Exception as exc:
            where = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__
            err_console.print(f"[bold red]error:[/] unexpected {escape(where)}", highlight=False, soft_wrap=True)
            if loud:
                err_console.print_exception()
            else:
                err_console.print("this is a bug in hymate or an input it does not yet check; run the command again "
                                  "with --debug for the traceback, and report it", highlight=False)  # fmt: skip
            raise typer.Exit(1) from None
        finally:  # an in-process caller (a notebook, a test) does not stay verbose
            if before is None:
                os.environ.pop(VERBOSE_ENV, None)
            else:
                os.environ[VERBOSE_ENV] = before

    return wrapper


def _view(task, data_dir, cache_dir, download=False, progress=True, require_labels=True):
    """The task's view of its dataset (prepared or loaded from the cache)."""
    from hymate.data.store import load_dataset

    data = load_dataset(task.dataset, data_dir, cache_dir, download=download, progress=progress, require_labels=require_labels)
    return task.view(data)


@app.command()
@friendly_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. physionet2012, or table (your own tables).")],
    events: Annotated[Path | None, typer.Argument(help="table: the events table (.csv / .parquet, or a folder of them).", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="table: the label table (stay_id, prediction_time, a value column).", show_default=False)] = None,
    statics: Annotated[Path | None, typer.Option("--statics", help="table: the statics table (stay_id, one column per static).", show_default=False)] = None,
    time_unit: Annotated[str, typer.Option("--time-unit", help="table: times are hours, minutes or timestamp.")] = "hours",
    table_format: Annotated[str, typer.Option("--format", help="table: long (stay_id, time, variable, value), wide, or auto (long if variable and value are columns).")] = "auto",
    label_type: Annotated[str | None, typer.Option("--label-type", help="table: the type of a 'label' column: binary, multiclass or regression.", show_default=False)] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a current cache exists.", metavar="")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test splits.")] = 0,
    splits_dir: Annotated[Path | None, typer.Option(help="Where split files go (default: <cache>/splits).")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Read a dataset's raw files into the event model, cache it, and write the split files of its tasks.

    Your own tables: `hymate prepare table EVENTS --labels LABELS [--statics S] [--time-unit U]`
    writes the settings to hymate-table.json in --data-dir (default: EVENTS' folder), which
    `train table --data-dir` / `evaluate` / `predict` then read."""
    from hymate.data import tables
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import data_dir as resolve_data
    from hymate.data.store import has_data, load_dataset
    from hymate.tasks.registry import tasks_for_data
    from hymate.tasks.splits import make_splits

    given = [name for name, value in (("EVENTS", events), ("--labels", labels), ("--statics", statics), ("--label-type", label_type),
                                      ("--time-unit", time_unit != "hours"), ("--format", table_format != "auto")) if value]  # fmt: skip
    if dataset == tables.NAME and events is not None:
        data_dir = data_dir or events.expanduser().resolve().parent
        spec = tables.write_spec(data_dir, events, labels, statics, time_unit, table_format, label_type)
        console.print(f"table settings written to {escape(str(spec))} (read again by train, evaluate and predict with --data-dir {escape(str(data_dir))})")
    elif given:
        raise HymateError(f"{', '.join(given)}: only for `hymate prepare table EVENTS ...` (your own tables)")
    root = resolve_data(data_dir, cache_dir)
    if download and has_data(dataset, root):
        console.print(f"--download: {dataset} is already in {root}; nothing downloaded")
    start = time.perf_counter()
    data = load_dataset(dataset, data_dir, cache_dir, download=download, force=force, progress=not quiet)
    elapsed = time.perf_counter() - start
    report = data.report
    console.print(
        f"[bold]{dataset}[/]: {report.get('records_read', '?'):,} records read -> {data.stays.height:,} stays, "
        f"{data.events.height:,} events, {data.labels.height:,} label rows ({elapsed:.1f} s)"
    )
    console.print(f"read from {escape(str(root))}; prepared data cached in {escape(str(resolve_cache(cache_dir) / 'prepared'))}")
    console.print(losses_summary(report), highlight=False)
    _print_exclusions(report)
    out = splits_dir or resolve_cache(cache_dir) / "splits"
    table = Table("task", "protocol", "splits", "train", "val", "test", title=f"split files in {out} (stays per part)")

    def sizes(values: list[int]) -> str:  # one number, or the range over the protocol's splits
        return f"{min(values):,}" if min(values) == max(values) else f"{min(values):,}-{max(values):,}"

    for task in tasks_for_data(dataset, root):
        view = task.view(data)
        for reason, entry in view.report["task"].get("excluded_stays", {}).items():
            if entry["count"]:
                console.print(f"{task.short}: {entry['count']:,} stays left out ({escape(reason)})")
        for protocol in task.protocols:
            try:
                drawn = make_splits(view, task, protocol, seed)
            except DataError as exc:  # e.g. a small cohort: the other tasks and protocols still get theirs
                console.print(f"[yellow]{task.short} {protocol}: no split files[/]: {escape(str(exc))}")
                continue
            for split in drawn:
                split.save(out)
            table.add_row(task.short, protocol, str(len(drawn)), *(sizes([len(getattr(d, part)) for d in drawn])
                                                                   for part in ("train", "val", "test")))  # fmt: skip
    console.print(table)


@app.command()
@friendly_errors
def describe(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. physionet2012.")],
    task_name: Annotated[str | None, typer.Option("--task", help="Describe this task's view (default: the dataset's first task).")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Print counts, labels, events per stay, variables and missingness of a task's view of a dataset."""
    import polars as pl

    from hymate.data.describe import describe as summarise
    from hymate.data.schema import EventData
    from hymate.tasks.registry import get_task

    task = get_task(dataset, task_name)
    view = _view(task, data_dir, cache_dir, download, not quiet)
    rows = view.labels
    per_stay = view
    if task.label_type == "binary":  # one row per stay: positive at any prediction time
        labels = rows.group_by("stay_id").agg(pl.col("prediction_time").max(), pl.col("label").max())
        per_stay = EventData(view.name, view.events, view.statics, labels, view.stays, view.report)
    s = summarise(per_stay)
    s["task"] = {"name": task.name, "label_type": task.label_type, "rule": task.label_rule, "label_rows": rows.height,
                 "positive_rows": int(rows.get_column("label").sum()) if task.label_type == "binary" else None,
                 "excluded_stays": view.report["task"].get("excluded_stays", {})}  # fmt: skip
    console.print(f"[bold]{task.name}[/] ({task.label_type}): {s['stays']:,} stays, {s['events']:,} events, "
                  f"{rows.height:,} predictions; {task.label_rule}")  # fmt: skip
    y = rows.get_column("label").drop_nulls()
    if task.label_type == "binary":
        console.print(f"label 1 ({task.positive_label}): {int(y.sum()):,}/{len(y):,} predictions ({100 * y.mean():.2f} %); "
                      f"{s['positives']:,}/{s['labelled_stays']:,} stays positive at some prediction time")  # fmt: skip
    elif task.label_type == "multiclass":
        counts = y.value_counts().sort("label")
        console.print("classes: " + ", ".join(f"{task.classes[int(k)]}: {n:,}" for k, n in counts.iter_rows()))
    else:
        console.print(f"label: mean {y.mean():.3f}, median {y.median():.3f}, min {y.min():.3f}, max {y.max():.3f}")
    for reason, entry in s["task"]["excluded_stays"].items():
        console.print(f"left out: {entry['count']:,} stays ({escape(reason)})")
    if task.label_type == "binary":
        groups = Table("group", "stays", "positives", "rate %", "events", title="by source group")
        for g in s["groups"]:
            rate = 100 * (g["positives"] or 0) / g["stays"]
            groups.add_row(g["split_group"], f"{g['stays']:,}", f"{int(g['positives'] or 0):,}", f"{rate:.2f}", f"{g['events']:,}")
        console.print(groups)
    pct = Table(*s["events_per_stay"].keys(), title="events per stay")
    pct.add_row(*(f"{v:,.0f}" for v in s["events_per_stay"].values()))
    console.print(pct)
    variables = Table("variable", "events", "stays observed", "missing (stays) %", "p5", "median", "p95",
                      title=f"{len(s['variables'])} variables")  # fmt: skip
    for v in s["variables"]:
        variables.add_row(Text(v["variable"]), f"{v['events']:,}", f"{v['stays_observed']:,}",
                          f"{100 * v['missing_stays_frac']:.1f}", f"{v['p5']:.4g}", f"{v['median']:.4g}", f"{v['p95']:.4g}")  # fmt: skip
    console.print(variables)
    statics = Table("static", "missing %", title="statics")
    for name, frac in s["statics_missing_frac"].items():
        statics.add_row(name, f"{100 * frac:.1f}")
    console.print(statics)
    _print_exclusions(view.report)
    if json_out:
        json_out.write_text(json.dumps(s, indent=1, default=str))
        console.print(f"summary written to {json_out}")


SEED_LIMIT = 2**32  # seeds numpy and Lightning accept: 0 to 2**32 - 1


def parse_int_list(text: str, option: str | None = None, limit: int = SEED_LIMIT) -> list[int]:
    """`option`'s list ('0,1,2') or range ('0-4') of indices in [0, limit): a selection that is
    empty, reversed, or reaches outside is a usage error naming the option, before any work."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected a list such as '0,1,2' or a range such as '0-4', got {text!r}",
                                 param_hint=option) from None  # fmt: skip
    if not values:
        raise typer.BadParameter(f"{text!r} selects nothing (a range goes up: '0-4')", param_hint=option)
    outside = sorted({v for v in values if not 0 <= v < limit})
    if outside:
        raise typer.BadParameter(f"{text!r} selects {', '.join(map(str, outside))}: {option or 'it'} takes 0 to {limit - 1}", param_hint=option)
    return list(dict.fromkeys(values))


def _n_splits(protocol: str) -> int:
    from hymate.tasks.splits import PROTOCOLS

    return PROTOCOLS[protocol].n_splits


# Options of `hymate train` that set TrainConfig fields; None means "the task's recipe, else TrainConfig's default".
NEURAL_SETTINGS = ("max_epochs", "batch_size", "lr", "warmup_epochs", "patience", "ema_decay", "max_events",
                   "train_hours_per_stay", "variable_dropout", "regression_loss")  # fmt: skip


def resolve_training(task, model: str, given: dict, model_options: dict):
    """TrainConfig from the options given, the task's recipe and TrainConfig's defaults; an option that
    does not apply to the chosen task and model is rejected with a message, never ignored."""
    from hymate.models.registry import ALL_MODELS, TABULAR, model_option_names
    from hymate.train.module import training_config

    if model not in ALL_MODELS:
        raise HymateError(f"unknown model {model!r}; known: {', '.join(ALL_MODELS)}")
    flag = lambda name: "--" + {"max_epochs": "epochs", "n_mamba_layers": "mamba-layers", "n_channel_layers": "channel-layers"}.get(name, name).replace("_", "-")  # noqa: E731
    if model in TABULAR:
        wrong = [flag(k) for k, v in {**given, **model_options}.items() if v is not None]
        if wrong:
            raise HymateError(f"{', '.join(wrong)} set training of neural models; {model} has no such setting")
    else:
        unknown = [flag(k) for k, v in model_options.items() if v is not None and k not in model_option_names(model)]
        if unknown:
            raise HymateError(f"{', '.join(unknown)} do not apply to the {model} model")
    return training_config(task, model, given)


def check_task_options(task, view, given: dict, config):
    """Options that depend on how many predictions a stay has; returns the config to train with."""
    from hymate.train.estimators import many_per_stay

    if given.get("regression_loss") is not None and task.label_type != "regression":
        raise HymateError(f"--regression-loss applies to regression tasks; {task.name} is {task.label_type}")
    many = many_per_stay(view) and task.lookback_hours is None
    if many and given.get("max_events") is not None:
        raise HymateError(f"--max-events caps samples with one prediction time; {task.name} scores every prediction "
                          "time of a stay in one pass and reads all events up to each")  # fmt: skip
    if not many and given.get("train_hours_per_stay") is not None:
        raise HymateError(f"--train-hours-per-stay samples the prediction times of a stay; {task.name} has one per stay")
    if many and config.max_events is not None:  # TrainConfig's cap is for one prediction per sample
        config = replace(config, max_events=None)
    return config


@app.command()
@friendly_errors
def train(
    dataset: Annotated[str, typer.Argument(help="Dataset (or a task's full name), e.g. physionet2012.")] = "physionet2012",
    task_name: Annotated[str | None, typer.Option("--task", help="Task of the dataset (default: its first): physionet2012: mortality, los-3d, los-days, los-bands; physionet2019: sepsis-online, sepsis-stay.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Split protocol (default: the task's first): strats, splits5, kfold5, a2b.")] = None,
    seeds: Annotated[str, typer.Option(help="Model seeds, e.g. '0,1,2' or '0-4'.")] = "0",
    splits: Annotated[str | None, typer.Option(help="Split indices to run (default: all of the protocol).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for runs and the summary.")] = Path("runs/hymate"),
    model: Annotated[str, typer.Option(help="hymate, or a baseline/ablation: mamba, hymate-events, hymate-stats, strats, grud, lightgbm, logreg.")] = "hymate",
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (default 15).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Stays per batch (default 32).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate, AdamW (default: the task's recipe, else 1e-3).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="Linear warm-up before the cosine decay, in epochs (default: the task's recipe, else 1).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience in epochs (default 5).")] = None,
    ema_decay: Annotated[float | None, typer.Option(help="Decay of the weight moving average (0: off; default: the task's recipe, else 0.998).")] = None,
    variable_dropout: Annotated[float | None, typer.Option(help="Probability of removing all of a variable's events from a training sample (default 0.2).")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width (default: the model's own).")] = None,
    mamba_layers: Annotated[int | None, typer.Option(help="Mamba blocks (default: the model's own).")] = None,
    channel_layers: Annotated[int | None, typer.Option(help="Channel-attention layers (default: 1).")] = None,
    max_events: Annotated[int | None, typer.Option(help="Most recent events kept of a sample with one prediction time (default 880).")] = None,
    recompute_context: Annotated[bool | None, typer.Option("--recompute-context", help="Recompute the Mamba blocks in the backward pass: less memory for long stays, ~20 % more step time.", metavar="")] = None,
    train_hours_per_stay: Annotated[int | None, typer.Option(help="Tasks with many predictions per stay: train on every positive and up to N other prediction times per stay and step (0: all; default: the task's recipe, else all).")] = None,
    regression_loss: Annotated[str | None, typer.Option(help="Regression tasks: the loss, huber, l1 (fits the median: what MAE rewards) or mse (default: the task's recipe, else huber).")] = None,
    query_time: Annotated[bool | None, typer.Option("--query-time/--no-query-time", help="HyMaTE also reads the prediction time (default: the task's choice).", metavar="")] = None,
    train_stays: Annotated[int | None, typer.Option(min=1, help="Use a random subset of training stays (quick runs).")] = None,
    eval_stays: Annotated[int | None, typer.Option(min=1, help="Use a random subset of validation/test stays.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the split files.")] = 0,
    resume: Annotated[bool, typer.Option(help="Skip finished runs and resume interrupted ones.", metavar="")] = True,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train a model on a task, select on validation, and report test metrics with CIs (one folder per run)."""
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.tasks.registry import get_task
    from hymate.tasks.splits import load_or_make_splits, subsample
    from hymate.train.run import run_experiment

    task = get_task(dataset, task_name)
    given = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr, "warmup_epochs": warmup_epochs, "patience": patience,
             "ema_decay": ema_decay, "max_events": max_events, "train_hours_per_stay": train_hours_per_stay,
             "variable_dropout": variable_dropout, "regression_loss": regression_loss}  # fmt: skip
    options = {"d_model": d_model, "n_mamba_layers": mamba_layers, "n_channel_layers": channel_layers,
               "recompute_context": recompute_context, "query_time": query_time}  # fmt: skip
    config = resolve_training(task, model, given, options)  # checks the settings before any data are read
    seed_list = parse_int_list(seeds, "--seeds")
    protocol = protocol or task.protocols[0]
    if protocol not in task.protocols:
        raise HymateError(f"--protocol {protocol}: task {task.name} does not use it; its protocols: {', '.join(task.protocols)}")
    split_list = None if splits is None else parse_int_list(splits, "--splits", _n_splits(protocol))
    view = _view(task, data_dir, cache_dir, download, not quiet)
    config = check_task_options(task, view, given, config)
    chosen = load_or_make_splits(view, task, protocol, split_seed, resolve_cache(cache_dir) / "splits")
    if splits is not None:
        wanted = set(split_list)
        unknown = sorted(wanted - {s.index for s in chosen})
        if unknown:
            raise HymateError(f"--splits {splits}: the {protocol} protocol has splits {', '.join(str(s.index) for s in chosen)}")
        chosen = [s for s in chosen if s.index in wanted]
    if train_stays is not None or eval_stays is not None:
        chosen = [subsample(s, train_stays, eval_stays, split_seed) for s in chosen]
    model_options = {k: v for k, v in options.items() if v is not None}
    rows = run_experiment(task, view, chosen, seed_list, model, config, out, model_options, not quiet, resume)
    from hymate.evaluate.compare import HEADERS, table_metrics

    metrics = table_metrics(rows)
    table = Table("protocol", "split", "seed", *(HEADERS[k] for k in metrics), "wall s", title=f"{model} on {task.name} (test)")
    for r in rows:
        table.add_row(r["protocol"], str(r["split"]), str(r["seed"]), *(f"{r[k]:.4f}" for k in metrics),
                      "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}")  # fmt: skip
    console.print(table)
    console.print(f"reports in {out} (summary.md, and report/ in each run folder)")


@app.command()
@friendly_errors
def benchmark(
    dataset: Annotated[str, typer.Argument(help="Dataset (or a task's full name), e.g. physionet2012.")] = "physionet2012",
    task_name: Annotated[str | None, typer.Option("--task", help="Task of the dataset (default: its first).")] = None,
    protocol: Annotated[str | None, typer.Option(help="Split protocol (default: the task's first).")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = "hymate,mamba,hymate-events,strats,grud,lightgbm,logreg",
    seeds: Annotated[str | None, typer.Option(help="Seeds (default: 0-4 for a protocol with one split, else 0).")] = None,
    splits: Annotated[str | None, typer.Option(help="Split indices (default: all of the protocol).")] = None,
    out: Annotated[Path, typer.Option(help="Benchmark folder: one subfolder per model, the tables in tables/<protocol>.")] = Path("runs/benchmark"),
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs of the neural models (default: train's).")] = None,
    train_stays: Annotated[int | None, typer.Option(min=1, help="Random subset of training stays (quick runs).")] = None,
    eval_stays: Annotated[int | None, typer.Option(min=1, help="Random subset of validation/test stays.")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    parallel: Annotated[int, typer.Option("--jobs", help="Runs at once, each with cores/jobs threads (two 1-thread runs did ~1.4x the work of one 2-thread run on a 2-core CPU).")] = 1,
    collect_only: Annotated[bool, typer.Option("--collect-only", help="Run nothing: tabulate the runs that have finished (e.g. while a grid is still running).", metavar="")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run a grid of models x splits x seeds on any task (each run in its own process), skipping
    finished runs, and write the comparison table (Markdown, CSV, PNG)."""
    import sys

    from rich.progress import Progress

    from hymate.evaluate.compare import HEADERS, read_row, run_folder, table_metrics, write_comparison
    from hymate.models.registry import ALL_MODELS, TABULAR
    from hymate.tasks.registry import get_task
    from hymate.tasks.splits import PROTOCOLS
    from hymate.train.grid import GridRun, run_grid

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_MODELS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown) or '(none)'}; known: {', '.join(ALL_MODELS)}")
    task = get_task(dataset, task_name)
    protocol = protocol or task.protocols[0]
    if protocol not in task.protocols:
        raise HymateError(f"task {task.name} does not use the {protocol} protocol; its protocols: {', '.join(task.protocols)}")
    if epochs is not None and all(m in TABULAR for m in names):
        raise HymateError("--epochs sets training of neural models; the grid has only tabular ones")
    n_splits = PROTOCOLS[protocol].n_splits
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else ([0, 1, 2, 3, 4] if n_splits == 1 else [0])
    split_list = parse_int_list(splits, "--splits", n_splits) if splits is not None else list(range(n_splits))
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
        model_flags = passthrough if model not in TABULAR else [f for i, f in enumerate(passthrough)
                                                                if not (f == "--epochs" or (i and passthrough[i - 1] == "--epochs"))]  # fmt: skip
        cmd = [sys.executable, "-m", "hymate.cli", "train", task.dataset, "--task", task.short, "--protocol", protocol,
               "--model", model, "--seeds", str(seed), "--splits", str(split), "--out", str(out / model), "--quiet",
               *model_flags]  # fmt: skip
        # LightGBM's OpenMP threads spin while they wait; on a shared machine that burns tens of
        # times the CPU of the fit itself, so tabular runs get passive waiting (set before start).
        # (GOMP_SPINCOUNT too: the one this process set would otherwise override PASSIVE in libgomp.)
        env = {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "0"} if model in TABULAR else {}
        runs.append(GridRun(f"{model} {protocol} split {split} seed {seed}", cmd, env))
    with Progress(console=console, disable=quiet or not todo) as bar:
        progress_task = bar.add_task("benchmark", total=len(todo))
        run_grid(runs, parallel, on_start=lambda r: bar.update(progress_task, description=r.label),
                 on_done=lambda r: bar.advance(progress_task))  # fmt: skip
    rows = [read_row(run_folder(out, m, protocol, k, s)) for m, k, s in jobs]
    rows = [r for r in rows if r is not None]
    if collect_only and missing:
        console.print(f"[yellow]{len(missing)} of {len(jobs)} runs not finished; the table shows the finished ones "
                      f"(see its runs column): {', '.join(f'{m} split {k} seed {s}' for m, k, s in missing)}[/yellow]")  # fmt: skip
    if not rows:
        raise HymateError(f"no finished runs in {out} for this grid")
    # Tables in out/tables/<protocol>: out/<protocol> would share a folder with the STraTS model ("strats").
    tables = out / "tables" / protocol
    lines = write_comparison(rows, names, tables, f"{task.name}, {protocol} protocol (test)")
    metrics = table_metrics(rows)
    table = Table("model", "runs", *(HEADERS[k] for k in metrics), "s / epoch", "s / run", "peak MB", title=f"{task.name}, {protocol}")
    for line in lines:
        table.add_row(line["model"], str(line["runs"]), *(f"{line[k]:.4f} ± {line[k + '_sd']:.4f}" for k in metrics),
                      f"{line['epoch_s']:.0f}" if line["epoch_s"] is not None else "-",
                      f"{line['wall_s']:.0f}" if line["wall_s"] is not None else "-",
                      f"{line['peak_mb']:.0f}")  # fmt: skip
    console.print(table)
    console.print(f"tables in {tables} (table.md, table.csv, runs.csv, table.png)")


def _checkpoint_split(task, view, meta: dict, cache_dir):
    """The split a checkpoint was trained on: its split file, or drawn again and checked against the checkpoint."""
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.tasks.splits import Split, load_or_make_splits

    folder = resolve_cache(cache_dir) / "splits"
    path = folder / f"{meta['split']}.json"
    if path.exists():
        split = Split.load(path, view)
    else:
        name = meta["split"]
        protocol, seed, index = name.split("-")[-3], int(name.split("-seed")[-1].split("-")[0]), int(name.split("-split")[-1])
        split = next(s for s in load_or_make_splits(view, task, protocol, seed, folder) if s.index == index)
    if split.sha256 != meta.get("split_sha256"):  # trained on a subsample (--train-stays): its parts are subsets of these
        console.print(f"note: the checkpoint was trained on a subsample of {split.name}; using the split's full parts")
    return split


@app.command()
@friendly_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `hymate train`.")],
    part: Annotated[str, typer.Option(help="Which part of the checkpoint's split: test or val.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <checkpoint>/../evaluation-<part>).")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-evaluate a checkpoint of any task on its own split's test (or validation) stays and write a report."""
    import numpy as np
    import polars as pl

    from hymate.evaluate.metrics import METRICS_BY_TYPE
    from hymate.evaluate.report import METRIC_LABELS, write_report
    from hymate.evaluate.scores import decision_metrics, evaluate_rows
    from hymate.serve.predict import score
    from hymate.train.estimators import load_checkpoint

    if part not in ("test", "val"):
        raise HymateError(f"--part must be test or val, got {part!r}")
    estimator, task, meta = load_checkpoint(checkpoint)
    view = _view(task, data_dir, cache_dir, progress=not quiet)
    split = _checkpoint_split(task, view, meta, cache_dir)
    frame, _ = score(estimator, task, meta, view, getattr(split, part), progress=not quiet)
    labelled = frame.filter(pl.col("label").is_not_null())
    y, ids = labelled.get_column("label").to_numpy(), labelled.get_column("stay_id").to_numpy()
    kind = task.label_type
    pred = {"binary": lambda: labelled.get_column("probability").to_numpy(),
            "multiclass": lambda: labelled.select(pl.col(f"p_{k}") for k in range(len(task.classes))).to_numpy(),
            "regression": lambda: labelled.get_column("prediction").to_numpy()}[kind]()  # fmt: skip
    metrics, ci = evaluate_rows(kind, y, pred, ids, n_boot=1000 if len(np.unique(ids)) == len(ids) else 200)
    if meta.get("decision"):
        metrics.update(decision_metrics(meta["decision"], ids, y, pred))
    folder = out or Path(checkpoint).parent / f"evaluation-{part}"
    write_report(folder, f"{meta['model']} on {task.name}, {split.name} ({part})", task, frame, metrics, ci,
                 {"checkpoint": str(checkpoint), "split": split.name})  # fmt: skip
    table = Table("metric", "value", "95 % CI", title=f"{task.name}, {split.name} ({part}, {len(np.unique(ids)):,} stays, {len(y):,} predictions)")
    for key in (*METRICS_BY_TYPE[kind], *([task.threshold_metric] if task.threshold_metric else [])):
        lo, hi = ci.get(key, (float("nan"), float("nan")))
        table.add_row(METRIC_LABELS.get(key, key), f"{metrics[key]:.4f}", f"{lo:.4f} to {hi:.4f}")
    console.print(table)
    console.print(f"report in {folder}")


@app.command()
@friendly_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `hymate train`.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Stays to score: one stay file, a folder of stay files, or the dataset's official layout.")],
    out: Annotated[Path, typer.Option(help="Predictions file (.parquet or .csv); its columns are described in <out>.columns.json.")] = Path("predictions.parquet"),
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Score stays from a checkpoint alone: one row per prediction time of the checkpoint's task
    (one per stay at 48 h for P12, one per stay-hour for online sepsis), with calibrated predictions."""
    import tempfile

    from hymate.data.store import stage_stay_files
    from hymate.serve.predict import column_descriptions, score
    from hymate.train.estimators import load_checkpoint

    estimator, task, meta = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="hymate-stays-") as tmp:
        staged = stage_stay_files(task.dataset, data_dir, Path(tmp))
        view = _view(task, staged or data_dir, cache_dir, progress=not quiet, require_labels=False)
        frame, unknown = score(estimator, task, meta, view, progress=not quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out) if out.suffix == ".csv" else frame.write_parquet(out)
    sidecar = out.with_name(out.name + ".columns.json")
    sidecar.write_text(json.dumps(column_descriptions(task, frame.columns, meta), indent=1) + "\n")
    if unknown:
        console.print(f"[yellow]note:[/] {unknown:,} events of variables the model never saw were left out")
    console.print(f"{frame.get_column('stay_id').n_unique():,} stays, {frame.height:,} predictions -> {out} (columns: {sidecar.name})")


@app.command()
@friendly_errors
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="A HyMaTE checkpoint folder written by `hymate train`.")],
    stay: Annotated[list[int] | None, typer.Option("--stay", help="Stay id to explain (repeat for several).")] = None,
    cohort: Annotated[bool, typer.Option("--cohort", help="Explain a cohort: global importance, attention map, deletion test.", metavar="")] = False,
    part: Annotated[str, typer.Option(help="Cohort stays: test or val of the checkpoint's split, or all stays in the data.")] = "test",
    max_stays: Annotated[int | None, typer.Option(help="Cohort: a random subset of this many stays (seeded).")] = None,
    deletion: Annotated[bool | None, typer.Option("--deletion/--no-deletion", help="Cohort: run the deletion test (re-scores the stays ~40 times; binary tasks; default: on for them).", metavar="")] = None,
    target_class: Annotated[int | None, typer.Option("--class", help="Multiclass tasks: the class whose logit is explained (default: the last).")] = None,
    ig_steps: Annotated[int, typer.Option(help="Integrated Gradients steps (Gauss-Legendre).")] = 8,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <checkpoint>/../explain).")] = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Why a prediction: per-stay or cohort variable importance (attention and Integrated
    Gradients), event timeline, channel-attention map; PNG figures and a self-contained HTML report.
    A stay is explained at its last prediction time (its whole stay for online tasks)."""
    import numpy as np

    from hymate.data.samples import at_last_prediction
    from hymate.explain.importance import OneOutput, require_channel_importance
    from hymate.explain.report import explain_cohort, explain_stay
    from hymate.train.estimators import load_checkpoint

    if not stay and not cohort:
        raise typer.BadParameter("give --stay ID (one or more) or --cohort")
    if part not in ("test", "val", "all"):
        raise HymateError(f"--part must be test, val or all, got {part!r}")
    if ig_steps < 1:
        raise HymateError(f"--ig-steps must be at least 1, got {ig_steps}")
    estimator, task, meta = load_checkpoint(checkpoint)
    if estimator.kind != "neural":
        raise HymateError(f"{checkpoint} holds a tabular model ({meta['model']}), which has no attention to explain; "
                          "explanations need a HyMaTE checkpoint")  # fmt: skip
    require_channel_importance(estimator.model, meta)
    if task.label_type != "multiclass" and target_class is not None:
        raise HymateError(f"--class applies to multiclass tasks; {task.name} is {task.label_type}")
    output = 0
    if task.label_type == "multiclass":
        output = len(task.classes) - 1 if target_class is None else target_class
        if not 0 <= output < len(task.classes):
            raise HymateError(f"--class must be 0..{len(task.classes) - 1} ({', '.join(task.classes)}), got {output}")
    model = OneOutput(estimator.model, output)
    info = {**meta, "explained_output": task.classes[output] if task.classes else (task.positive_label if task.label_type == "binary" else "predicted value"),
            "positive_label": task.positive_label}  # fmt: skip
    if not cohort and (part != "test" or max_stays is not None or deletion is not None):
        raise HymateError("--part, --max-stays and --deletion apply to --cohort")
    if deletion and task.label_type != "binary":
        raise HymateError(f"--deletion measures AUROC against binary labels; {task.name} is {task.label_type}")
    deletion = task.label_type == "binary" if deletion is None else deletion
    folder = out or Path(checkpoint).parent / "explain"
    view = _view(task, data_dir, cache_dir, progress=not quiet, require_labels=not stay or cohort)
    data = at_last_prediction(view, task.lookback_hours)
    if stay:
        for stay_id in stay:
            written = explain_stay(model, estimator.normalizer, info, data, stay_id, folder / f"stay-{stay_id}", ig_steps)
            console.print(f"stay {stay_id}: {written['html']}")
    if cohort:
        if part == "all":
            ids = data.stay_ids
        else:
            ids = list(getattr(_checkpoint_split(task, view, meta, cache_dir), part))
        if max_stays is not None and max_stays < len(ids):
            ids = sorted(np.random.default_rng(0).choice(np.asarray(ids), max_stays, replace=False).tolist())
        say = None if quiet else (lambda message: console.print(f"  {message}"))
        result = explain_cohort(model, estimator.normalizer, info, data, ids, folder / f"cohort-{part}", ig_steps,
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


@app.command()
@friendly_errors
def doctor(
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the table.", metavar="")] = False,
    verbose: Verbose = False,
) -> None:
    """What hymate will run with here: versions, CPU and vector path, scan backend, threads, data
    and cache locations (with --verbose also the kernel's build flags). Builds and reads nothing."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from hymate.data.store import READERS, locate
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import data_dir as resolve_data
    from hymate.nn import scan_cpu

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    try:
        kernel = scan_cpu.kernel_status()
    except HymateError as exc:  # e.g. a HYMATE_SCAN_ISA this CPU cannot run: report it, do not fail
        kernel = {"built": False, "compiler": False, "isa": "?", "folder": f"unavailable: {exc}"}
    if kernel["built"]:
        backend = f"cpp, {kernel['isa']} path (built)"
    elif kernel["compiler"]:
        backend = f"cpp, {kernel['isa']} path (not built yet: builds on first use, ~1-2 min)"
    else:
        backend = "reference (pure PyTorch: no C++ compiler or ninja found; much slower)"
    forced = os.environ.get("HYMATE_SCAN_BACKEND", "").strip()
    forced = forced if forced.lower() not in ("", "auto") else None
    root = resolve_data(data_dir, cache_dir)
    found = {}
    for name in READERS:
        try:
            found[name] = str(locate(name, root))
        except HymateError:
            found[name] = "not found"
    info = {
        "hymate": installed("hymate"), "python": platform.python_version(), "torch": torch.__version__,
        **{pkg: installed(pkg) for pkg in ("lightning", "polars", "lightgbm", "scikit-learn")},
        "cpu": scan_cpu.cpu_model(), "cores": os.cpu_count(), "vector_paths": list(scan_cpu.cpu_isas()),
        "scan_backend": f"{forced} (HYMATE_SCAN_BACKEND)" if forced else backend, "kernel_folder": kernel["folder"],
        "torch_threads": torch.get_num_threads(),
        **{k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "data_location": str(root), **{f"data: {k}": v for k, v in found.items()},
        "cache_location": str(resolve_cache(cache_dir)), "executable": sys.executable,
    }  # fmt: skip
    if verbose and kernel["isa"] != "?":
        info["kernel_build_flags"] = " ".join(scan_cpu.build_flags(kernel["isa"]))
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    table = Table(title="hymate doctor", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in info.items():
        table.add_row(key, escape(str(value)))
    console.print(table)


export_app = typer.Typer(help="Write a prepared dataset in another format.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("meds")
@friendly_errors
def export_meds(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. physionet2012.")],
    out: Annotated[Path, typer.Argument(help="The MEDS dataset folder to write (new, or empty, or --force).")],
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    task_names: Annotated[list[str] | None, typer.Option("--task", metavar="TASK", help="A task whose labels to write (repeatable; default: every task of the dataset).")] = None,
    protocol: Annotated[str | None, typer.Option(help="Protocol of the subject splits (default: the split task's first).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subject splits.")] = 0,
    split_index: Annotated[int, typer.Option("--split", help="Which split of the protocol.")] = 0,
    shards: Annotated[int | None, typer.Option(help="Number of data files (default: one per 10,000 subjects).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists and is not empty.", metavar="")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write a dataset as MEDS 0.4: data shards, codes, dataset metadata, subject splits and one label file per task.

    The subject splits are one split file's (the first --task's, else the dataset's default task's).
    Times are 2000-01-01 + hours since admission; statics are codes STATIC//<name> with a null time."""
    from hymate.data.meds_export import export_meds as write_meds
    from hymate.data.store import cache_dir as resolve_cache
    from hymate.data.store import load_dataset
    from hymate.tasks.registry import get_task, tasks_of
    from hymate.tasks.splits import load_or_make_splits

    tasks = [get_task(dataset, name) for name in task_names] if task_names else tasks_of(dataset)
    tasks = list(dict.fromkeys(tasks))
    split_task = tasks[0] if task_names else get_task(dataset)
    protocol = protocol or split_task.protocols[0]
    if protocol not in split_task.protocols:
        raise HymateError(f"task {split_task.name} does not use the {protocol!r} protocol; its protocols: "
                          f"{', '.join(split_task.protocols)}")  # fmt: skip
    if not 0 <= split_index < _n_splits(protocol):
        raise HymateError(f"--split {split_index}: the {protocol} protocol has splits 0 to {_n_splits(protocol) - 1}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise HymateError(f"{out} exists and is not an empty folder; choose another or pass --force to replace it")
    data = load_dataset(dataset, data_dir, cache_dir, progress=not quiet)
    split = load_or_make_splits(split_task.view(data), split_task, protocol, seed, resolve_cache(cache_dir) / "splits")[split_index]
    written = write_meds(data, out, tasks, split, shards, force=force)
    console.print(f"[bold]{escape(str(out))}[/]: MEDS {escape(written['meds_version'])} dataset of {dataset}: "
                  f"{written['subjects']:,} subjects, {written['events']:,} events + {written['static_measurements']:,} "
                  f"static measurements in {written['shards']} shard{'s' if written['shards'] > 1 else ''} "
                  f"(data/0..{written['shards'] - 1}.parquet)")  # fmt: skip
    console.print(f"subject splits of {split.name}: {len(split.train):,} train, {len(split.val):,} tuning, "
                  f"{len(split.test):,} held_out")  # fmt: skip
    table = Table("label file", "task", "label type", "rows", title="labels (rows with a known label)")
    for task in tasks:
        table.add_row(f"labels/{task.short}.parquet", task.name, task.label_type, f"{written['labels'][task.short]:,}")
    console.print(table)


def _print_exclusions(report: dict) -> None:
    """The table of every loss `report` counts (hymate.data.losses); data text shown as written."""
    from hymate.data.losses import losses

    rows = losses(report)
    if not rows:
        return
    table = Table("what", "reason", "count", "examples", title="left out (every count in report.json; nothing is dropped silently)")
    for loss in rows:
        table.add_row(Text(loss.kind), Text(loss.reason), f"{loss.count:,}", Text(loss.example))
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
