"""Selective-scan benchmark: backend x length, forward and forward+backward, memory, error.

    python benchmarks/scan.py [--lengths 256 1024 4096 16384] [--reps 5] [--threads 2]

Batch 16, d_inner 128, d_state 16, float32, the Mamba block's call (D, z, delta_bias, softplus).
Rows: ``cpp`` (hymate's fused kernel at the CPU's best vector path), ``cpp:avx2`` /
``cpp:generic`` (the kernel at a lower path this CPU can also run), ``naive`` (hymate's sequential
reference loop), ``mambapy`` (mamba.py's parallel pscan, optional: ``pip install mambapy``) and
``floor``; ``cpp@REV`` / ``cpp:<path>@REV`` are the kernel's C++ source at git revision REV,
built and run by today's code (`kernel_at.py`), for before/after rows in one run. Every row records the CPU model, core count and vector path (``cpu``, ``cores``,
``isa``); the default results file is named by the CPU's best path (``results/scan_avx2.json``),
so figures from different machines are never read as one.

How it measures:
- Every (backend, length) runs in a fresh subprocess, so allocator state and peaks do not carry
  over. Times are medians of ``--reps`` runs after one warm-up run.
- Peak extra memory: the child resets the kernel's resident-set high-water mark (writes 5 to
  /proc/self/clear_refs) after creating the inputs, runs one forward+backward, and reports
  VmHWM minus the resident set before it. Everything the call touches counts (outputs, saved
  tensors, gradients of the inputs). For ``cpp`` the extension's output-buffer cache is emptied
  first, so blocks it kept from earlier calls neither hide nor add to the peak; the timed
  repetitions then run in the steady state, reusing its cached blocks.
- rel_err: ||out - ref|| / ||ref|| of the forward output on the first two sequences, against the
  reference loop run in float64 on the same inputs.
- floor: max(bytes / bandwidth, exps / exp rate), both measured here (best of several runs): a
  512 MiB copy, and torch.exp over a cache-resident 1 MiB tensor (so memory does not limit it).
  Forward exps: B*L*D*N for exp(delta*A) plus 2*B*L*D (softplus, silu). Forward+backward exps:
  the forward's, plus one recomputation of exp(delta*A) (a kernel with O(L/64) memory cannot
  keep all B*L*D*N of them) plus 2*B*L*D sigmoids. Bytes: every input read once and every
  output written once (forward: u, delta, z, B, C in, y out; backward adds the output gradient
  in and du, ddelta, dz, dB, dC out).
- Configurations whose estimated peak exceeds ``--max-gib`` are skipped ("skipped (memory)").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BATCH, DIM, NSTATE = 16, 128, 16
BACKENDS = ("cpp", "naive", "mambapy")
# Rough peak bytes (forward, forward+backward) per B*L*D*N element, from earlier runs of this
# script (naive fwd+bwd reached 20 GB at L=16384); only used to skip what cannot fit.
PEAK_BYTES_PER_ELEMENT = {"naive": (13, 40), "mambapy": (18, 36), "cpp": (1, 2)}
RESULTS_DIR = Path(__file__).parent / "results"


def make_inputs(length: int, backend: str, batch: int = BATCH) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(batch, DIM, length, generator=g) for _ in range(3))
    B, C = (torch.randn(batch, NSTATE, length, generator=g) for _ in range(2))
    A = -torch.arange(1, NSTATE + 1.0).repeat(DIM, 1)  # Mamba's initial A
    D, bias = torch.ones(DIM), torch.rand(DIM, generator=g) * 4 - 6  # dt around softplus(-4)
    inputs = {"u": u, "delta": 0.5 * delta, "A": A, "B": B, "C": C, "D": D, "z": z,
              "delta_bias": bias}  # fmt: skip
    if backend == "mambapy":  # its native layout is [batch, length, channels]
        for k in ("u", "delta", "z", "B", "C"):
            inputs[k] = inputs[k].transpose(1, 2).contiguous()
    return inputs


def mambapy_scan(u, delta, A, B, C, D, z, delta_bias):
    """mamba.py's selective_scan (pscan path), with the same softplus/bias/gate as ours."""
    from mambapy.pscan import pscan

    delta = torch.nn.functional.softplus(delta + delta_bias)  # [b, l, d]
    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # [b, l, d, n]
    BX = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [b, l, d, n]
    hs = pscan(deltaA, BX)
    y = (hs @ C.unsqueeze(-1)).squeeze(3) + D * u
    return y * torch.nn.functional.silu(z)


def scan_fn(backend: str):
    if backend == "mambapy":
        return mambapy_scan
    backend, _, rev = backend.partition("@")
    if rev:  # the kernel source of an earlier revision (benchmarks/kernel_at.py)
        from kernel_at import use_kernel_at

        use_kernel_at(rev)
    if backend.startswith("cpp:"):
        from hymate.nn.scan_cpu import selective_scan_cpp

        return lambda **kw: selective_scan_cpp(**kw, isa=backend.partition(":")[2])
    from hymate.nn import selective_scan

    name = {"cpp": "cpp", "naive": "reference"}[backend]
    return lambda **kw: selective_scan(**kw, backend=name)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def timings_ms(fn, reps: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def median_ms(fn, reps: int) -> float:
    return statistics.median(timings_ms(fn, reps))


def clear_scan_cache(backend: str) -> None:
    if backend.startswith("cpp"):
        from hymate.nn import scan_cpu

        scan_cpu.clear_cache()


def run_child(backend: str, length: int, reps: int, do_bwd: bool) -> dict:
    fn = scan_fn(backend)
    small = make_inputs(64, backend, batch=2)  # loads the extension / warms code paths
    fn(**small).sum()
    inputs = make_inputs(length, backend)
    result: dict = {"backend": backend, "length": length, **row_machine(backend)}

    with torch.no_grad():
        clear_scan_cache(backend)
        rss0 = rss_kib()
        reset_hwm()
        fn(**inputs)
        result["fwd_peak_mb"] = (hwm_kib() - rss0) / 1024
        result["fwd_ms"] = median_ms(lambda: fn(**inputs), reps)
        ref_in = {k: v[:2].double() if v.dim() == 3 else v.double() for k, v in inputs.items()}
        if backend == "mambapy":  # the reference wants [batch, channels, length]
            for k in ("u", "delta", "z", "B", "C"):
                ref_in[k] = ref_in[k].transpose(1, 2)
        ref = scan_fn("naive")(**ref_in)
        out = fn(**inputs)[:2].double()
        out = out.transpose(1, 2) if backend == "mambapy" else out
        result["rel_err"] = ((out - ref).norm() / ref.norm()).item()
        del ref, out, ref_in

    if do_bwd:
        leaves = {k: v.requires_grad_() for k, v in inputs.items()}
        grad = torch.randn_like(inputs["u"])

        def fwd_bwd() -> None:
            fn(**leaves).backward(grad)
            for v in leaves.values():
                v.grad = None

        clear_scan_cache(backend)
        rss0 = rss_kib()
        reset_hwm()
        fwd_bwd()
        result["peak_mb"] = (hwm_kib() - rss0) / 1024
        result["fwdbwd_ms"] = median_ms(fwd_bwd, reps)
    return result


def measure_floor_rates(threads: int) -> tuple[float, float]:
    """Copy bandwidth (bytes/s, read + write) and torch.exp rate (elements/s) on this machine."""
    torch.set_num_threads(threads)
    src = torch.rand(128 * 1024 * 1024)  # 512 MiB: far beyond the caches
    dst = torch.empty_like(src)
    # Ceilings: the best of several runs, not the median.
    bw = 2 * src.numel() * 4 / (min(timings_ms(lambda: dst.copy_(src), 5)) / 1e3)
    # The exp rate is a compute ceiling: a cache-resident 1 MiB tensor, 64 exps per timing.
    x = -torch.rand(256 * 1024)
    y = torch.empty_like(x)

    def exps() -> None:
        for _ in range(64):
            torch.exp(x, out=y)

    exp_rate = 64 * x.numel() / (min(timings_ms(exps, 9)) / 1e3)
    return bw, exp_rate


def row_machine(backend: str) -> dict:
    from hymate.nn.scan_cpu import machine_info

    backend, _, rev = backend.partition("@")
    isa = backend.partition(":")[2] or None
    info = machine_info(isa)
    if rev:  # the path's name, and the kernel's revision
        info["isa"] = f"{info['isa'].partition('@')[0]}@{rev}"
    return {**info, "isa": info["isa"] if backend.startswith("cpp") else None}


def floor_row(length: int, bw: float, exp_rate: float) -> dict:
    bdl, bnl = BATCH * DIM * length, BATCH * NSTATE * length
    fwd_bytes = 4 * (4 * bdl + 2 * bnl)  # u, delta, z, y; B, C
    bwd_bytes = 4 * (7 * bdl + 4 * bnl)  # u, delta, z, dy, B, C in; du, ddelta, dz, dB, dC out
    fwd_exps = bdl * (NSTATE + 2)
    fwdbwd_exps = fwd_exps + bdl * (NSTATE + 2)
    return {
        "backend": "floor",
        "length": length,
        **row_machine("floor"),
        "fwd_ms": 1e3 * max(fwd_bytes / bw, fwd_exps / exp_rate),
        "fwdbwd_ms": 1e3 * max((fwd_bytes + bwd_bytes) / bw, fwdbwd_exps / exp_rate),
        "peak_mb": None,
        "rel_err": None,
    }


def estimated_gib(backend: str, length: int, do_bwd: bool) -> float:
    return PEAK_BYTES_PER_ELEMENT[backend.partition(":")[0].partition("@")[0]][int(do_bwd)] * BATCH * DIM * NSTATE * length / 2**30


def available_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2**20


def spawn(backend: str, length: int, reps: int, do_bwd: bool, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", backend, str(length), str(reps), str(int(do_bwd))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} L={length} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gib", type=float, default=16.0, help="also <= 80%% of free RAM")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--out", type=Path, default=None, help="default: results/scan_<the CPU's best path>.json")
    args = parser.parse_args()
    from hymate.nn.scan_cpu import cpu_isas

    args.out = args.out or RESULTS_DIR / f"scan_{cpu_isas()[0]}.json"
    console = Console()

    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]load average {load:.2f}: timings will be noisy[/yellow]")
    backends = list(args.backends)
    try:
        import mambapy  # noqa: F401
    except ImportError:
        console.print("[yellow]mambapy not installed: its rows are skipped[/yellow]")
        backends = [b for b in backends if b != "mambapy"]

    bw, exp_rate = measure_floor_rates(args.threads)
    console.print(f"measured: copy bandwidth {bw / 1e9:.1f} GB/s, exp {exp_rate / 1e9:.2f} G/s")
    max_gib = min(args.max_gib, 0.8 * available_gib())
    rows, notes = [], {}
    for length in args.lengths:
        for backend in backends:
            fits = [estimated_gib(backend, length, bwd) <= max_gib for bwd in (False, True)]
            if not fits[0]:
                notes[(backend, length)] = "skipped (memory)"
                continue
            # The slow rows get fewer repetitions (the whole run stays under ~10 minutes); the
            # fast kernel gets more, because this VM's timings are bimodal (see NOTES.md).
            if backend.startswith("cpp"):
                reps = 3 * args.reps
            else:
                reps = max(1, args.reps // 2) if length >= 4096 else args.reps
            row = spawn(backend, length, reps, fits[1], args.threads)
            if not fits[1]:
                row.update(fwdbwd_ms=None, peak_mb=None)
                notes[(backend, length)] = "fwd+bwd skipped (memory)"
            rows.append(row)
            console.print(f"  {backend:8s} L={length:6d} done", style="dim")
        rows.append(floor_row(length, bw, exp_rate))

    table = Table(
        title=f"selective scan, batch {BATCH}, d_inner {DIM}, d_state {NSTATE}, float32, "
        f"{args.threads} threads (median ms), {rows[0]['cpu']}, {rows[0]['cores']} cores"
    )
    for col in ("backend", "length", "fwd ms", "fwd+bwd ms", "peak MB fwd", "peak MB fwd+bwd",
                "rel err", "note"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("backend", "note") else "right")
    for length in args.lengths:
        for backend in [*backends, "floor"]:
            row = next((r for r in rows if r["backend"] == backend and r["length"] == length), None)
            note = notes.get((backend, length), "")
            if row is None:
                table.add_row(backend, str(length), "-", "-", "-", "-", "-", note)
                continue
            table.add_row(
                backend, str(length), fmt(row["fwd_ms"], ".1f"), fmt(row["fwdbwd_ms"], ".1f"),
                fmt(row.get("fwd_peak_mb"), ".0f"), fmt(row["peak_mb"], ".0f"),
                fmt(row["rel_err"], ".1e"), note,
            )  # fmt: skip
        table.add_section()
    console.print(table)

    keys = ("backend", "length", "fwd_ms", "fwdbwd_ms", "peak_mb", "rel_err", "cpu", "cores", "isa")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        backend, length, reps, do_bwd = sys.argv[2], *map(int, sys.argv[3:6])
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        print(json.dumps(run_child(backend, length, reps, bool(do_bwd))))
    else:
        main()
