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
    s = summarise(data)
    console.print(
        f"[bold]{s['dataset']}[/]: {s['stays']:,} stays, {s['events']:,} events, "
        f"{s['positives']:,}/{s['labelled_stays']:,} positive labels ({100 * s['label_rate']:.2f} %)"
    )
    groups = Table("group", "stays", "positives", "rate %", "events", title="by source group")
    for g in s["groups"]:
        rate = 100 * (g["positives"] or 0) / g["stays"]
        groups.add_row(g["split_group"], f"{g['stays']:,}", f"{g['positives'] or 0:,}", f"{rate:.2f}", f"{g['events']:,}")
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


def _print_exclusions(report: dict) -> None:
    excluded = report.get("excluded_stays", {})
    skipped = report.get("skipped_lines", {})
    if not excluded and not skipped:
        return
    table = Table("what", "reason", "count", "examples", title="excluded and skipped (nothing is dropped silently)")
    for reason, entry in excluded.items():
        table.add_row("stays", reason, f"{entry['count']:,}", ", ".join(map(str, entry["ids"][:5])))
    for reason, entry in skipped.items():
        table.add_row("lines", reason, f"{entry['count']:,}", entry["examples"][0] if entry["examples"] else "")
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
