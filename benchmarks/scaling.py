"""Efficiency study: training-step time and peak memory of HyMaTE vs STraTS as stays grow.

    python benchmarks/scaling.py [--events 512,1024,2048,4096,8192,16384] [--batch 1] [--reps 3]
                                 [--models hymate,hymate-recompute,strats]

Long stays are built from real PhysioNet 2012 stays: the normalised events of consecutive
training stays are concatenated (each stay's clock shifted to follow the previous one, then the
whole clock rescaled to [-1, 1]) until the target length is reached, so values, variables and
gaps are real. Both models have the same width (d_model 64) and depth (2 sequence layers: Mamba
blocks for HyMaTE, transformer layers over events for STraTS on PyTorch's fused attention kernel;
`hymate-recompute` is HyMaTE recomputing its Mamba blocks in the backward pass, the option for
long stays when memory is short). A step is forward + backward +
AdamW update on one batch. Each (model, length) runs in its own process so peak memory (max RSS
growth over the process's RSS before the first step, warm-up included) is its own.
Prints a table, fits log-log scaling exponents, and writes benchmarks/results/scaling.json and
benchmarks/results/scaling.png; `--models` measures some models again and keeps the others' rows.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
# name -> (registry variant, overrides): same width (set in `measure`) and depth for every model
MODELS = {
    "hymate": ("hymate", {"n_mamba_layers": 2}),
    "hymate-recompute": ("hymate", {"n_mamba_layers": 2, "recompute_context": True}),
    "strats": ("strats", {"n_layers": 2}),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def long_batch(n_events: int, batch: int):
    """A batch of `batch` sequences of exactly `n_events` real events each (see the docstring)."""
    import torch

    from hymate.data.batching import EventSequenceDataset, collate
    from hymate.data.normalize import Normalizer
    from hymate.data.store import load_dataset
    from hymate.tasks.registry import get_task
    from hymate.tasks.splits import make_splits

    task = get_task("physionet2012")
    data = task.view(load_dataset(task.dataset, progress=False))
    split = make_splits(data, task, "strats", 0)[0]
    normalizer = Normalizer.fit(data, split.train, 48.0, ("icu_type",))
    dataset = EventSequenceDataset(data, split.train, normalizer)
    items, cursor = [], 0
    for b in range(batch):
        parts, total = [], 0
        while total < n_events:
            item = dataset[cursor % len(dataset)]
            cursor += 1
            parts.append(item)
            total += len(item["times"])
        # Stay k's clock (in [-1, 1]) is shifted by 2k, then the joint clock is rescaled to [-1, 1].
        times = np.concatenate([p["times"] + 2.0 * k for k, p in enumerate(parts)])[:n_events]
        times = (times - times[0]) / max(1e-6, times[-1] - times[0]) * 2 - 1
        items.append({
            "times": times.astype(np.float32), "variables": np.concatenate([p["variables"] for p in parts])[:n_events],
            "values": np.concatenate([p["values"] for p in parts])[:n_events], "statics": parts[0]["statics"],
            "label": float(b % 2), "stay_id": b,
        })  # fmt: skip
    out = collate(items)
    assert bool(out.mask.all()) and out.mask.shape == (batch, n_events)
    return out, normalizer.n_variables, len(normalizer.static_names), torch


def measure(model_name: str, n_events: int, batch: int, reps: int) -> dict:
    """One (model, length) in this process: median step time and peak RSS growth."""
    from hymate.models.registry import build_model

    data, n_variables, n_statics, torch = long_batch(n_events, batch)
    torch.manual_seed(0)
    variant, overrides = MODELS[model_name]
    model = build_model(variant, n_variables, n_statics, {"d_model": 64, **overrides})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = data.labels

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(data).logits[:, 0]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        optimizer.step()

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand memory freed while loading back to the OS, so a
    base = rss_mb()  # step cannot reuse it unseen; model, data and libraries are the baseline
    reset_peak_rss()
    start = time.perf_counter()
    try:
        step()  # warm-up: loads the scan kernel, allocates optimizer state and reusable buffers
    except (RuntimeError, MemoryError) as error:  # past the address-space limit set in main()
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        return {"model": model_name, "events": n_events, "batch": batch, "step_ms": None, "peak_mb": None,
                "out_of_memory": str(error).splitlines()[0][:200]}  # fmt: skip
    if time.perf_counter() - start > 20:  # minutes-long steps: one timed step is enough
        reps = 1
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    peak = peak_rss_mb()
    return {
        "model": model_name, "events": n_events, "batch": batch, "step_ms": round(statistics.median(times), 1),
        "step_runs_ms": [round(t, 1) for t in times], "peak_mb": round(peak - base, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip


def fit_exponent(rows: list[dict], model: str, key: str, min_events: int) -> float:
    pts = [(r["events"], r[key]) for r in rows if r["model"] == model and r["events"] >= min_events and r[key]]
    if len(pts) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, label in zip(axes, ("step_ms", "peak_mb"), ("training step (ms)", "peak memory growth (MB)"), strict=True):
        for model in MODELS:
            if not any(r["model"] == model for r in rows):
                continue
            pts = sorted((r["events"], r[key]) for r in rows if r["model"] == model and r[key] is not None)
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=model, base=2)
        ax.set_xlabel("events per stay")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="measure these; rows of the others are kept")
    parser.add_argument("--memory-limit-gb", type=float, default=16.0,
                        help="address-space limit of each measuring process: past it a step fails cleanly and "
                        "is reported as out of memory, instead of the OOM killer picking a process")  # fmt: skip
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: measure one configuration, print it as JSON
        import resource

        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch, args.reps)))
        return

    from rich.console import Console
    from rich.table import Table

    chosen = args.models.split(",")
    if unknown := [m for m in chosen if m not in MODELS]:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    path = RESULTS / "scaling.json"
    rows = [r for r in json.loads(path.read_text())["details"] if r["model"] not in chosen] if path.exists() else []
    for n in (int(x) for x in args.events.split(",")):
        for model in chosen:
            cmd = [sys.executable, __file__, "--one", model, str(n), "--batch", str(args.batch), "--reps", str(args.reps),
                   "--memory-limit-gb", str(args.memory_limit_gb)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{model} at {n} events failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{model:16s} {n:6d} events: " + (f"{r['step_ms']:10.1f} ms, {r['peak_mb']:8.1f} MB" if r["step_ms"]
                  else f"out of memory (> {args.memory_limit_gb:g} GB address space)"), flush=True)  # fmt: skip

    present = [m for m in MODELS if any(r["model"] == m for r in rows)]
    exps = {m: {k: fit_exponent(rows, m, k, 1024) for k in ("step_ms", "peak_mb")} for m in present}
    ratios = [("strats", "hymate", "step_ms", "STraTS / HyMaTE time"), ("hymate", "strats", "peak_mb", "HyMaTE / STraTS memory"),
              ("hymate-recompute", "strats", "peak_mb", "HyMaTE-recompute / STraTS memory")]  # fmt: skip
    table = Table("events", *(f"{m} {c}" for m in present for c in ("step ms", "peak MB")), *(r[3] for r in ratios),
                  title=f"training step, batch {args.batch}, d_model 64, 2 layers")  # fmt: skip
    for n in sorted({r["events"] for r in rows}):
        by = {r["model"]: r for r in rows if r["events"] == n}
        cell = lambda m, c, by=by: by[m][c] if m in by else None  # noqa: E731
        cells = [f"{cell(m, c):.1f}" if cell(m, c) is not None else ("OOM" if m in by else "-") for m in present
                 for c in ("step_ms", "peak_mb")]  # fmt: skip
        for top, bottom, key, _ in ratios:
            a, b = cell(top, key), cell(bottom, key)
            cells.append(f"{a / b:.2f}x" if a and b else "-")
        table.add_row(str(n), *cells)
    console = Console()
    console.print(table)
    for m, e in exps.items():
        console.print(f"{m}: step time ~ events^{e['step_ms']:.2f}, peak memory ~ events^{e['peak_mb']:.2f} (fit over >= 1024)")

    RESULTS.mkdir(exist_ok=True)
    plot(rows, RESULTS / "scaling.png")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    rows.sort(key=lambda r: (r["events"], list(MODELS).index(r["model"])))
    path.write_text(json.dumps({
        "rows": [{k: r[k] for k in ("model", "events", "step_ms", "peak_mb")} for r in rows],
        "details": rows, "exponents_from_1024": exps, "batch": args.batch, "machine": machine,
        "memory_limit_gb": args.memory_limit_gb,
    }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
