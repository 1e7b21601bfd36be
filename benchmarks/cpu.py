"""The P12 training epoch at each vector path of the scan kernel this CPU can run, in one run.

    python benchmarks/cpu.py [--epochs 1] [--isas avx2,generic] [--wait-policies default,passive,active] [--shared]
                             [--before REV]

HyMaTE, PhysioNet 2012 mortality, `strats` split 0, seed 0, all training stays: one `hymate train`
process per (vector path, OpenMP wait policy), each with 2 torch threads and `HYMATE_SCAN_ISA` /
`OMP_WAIT_POLICY` set, one after the other. `epoch_s` is training seconds per epoch (the
validation pass included), from the run's own report. `--shared` measures each setting twice:
alone, and with a busy-looping process holding one of the cores (what a DataLoader worker or
another job does to a spinning OpenMP pool). `--before REV` adds, per path, a row whose kernel is
the C++ source at git revision REV (`kernel_at.py`: today's code around it, so the two rows differ
by the kernel alone), at the default wait policy, alone. The load average before each run is
recorded: above ~0.5 the machine was not idle and that row is an upper bound. Only rows of one
run on one machine compare; each row names the CPU, core count and path.

Writes benchmarks/results/cpu_<the CPU's best path>.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hymate.nn.scan_cpu import cpu_isas, machine_info

RESULTS_DIR = Path(__file__).parent / "results"


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(isa: str, policy: str, epochs: int, out: Path, shared: bool = False, stays: int | None = None,
            before: str | None = None) -> dict:  # fmt: skip
    env = {**os.environ, "HYMATE_SCAN_ISA": isa, "OMP_NUM_THREADS": "2"}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    # "hymate": nothing set, what the CLI chooses (cli.py); "default": libgomp's own default, which
    # spins 300,000 times before sleeping (GCC's documentation), set explicitly since the CLI
    # would otherwise choose; "spin<N>": that policy with N spins.
    if policy == "default":
        env["GOMP_SPINCOUNT"] = "300000"
    elif policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin")
    elif policy != "hymate":
        env["OMP_WAIT_POLICY"] = policy.upper()
    folder = out / f"{isa}{'@' + before if before else ''}-{policy}-{'shared' if shared else 'alone'}"
    load = os.getloadavg()[0]
    hymate = [sys.executable, str(Path(__file__).parent / "kernel_at.py"), before] if before else [sys.executable, "-m", "hymate.cli"]
    cmd = [*hymate, "train", "physionet2012", "--task", "mortality", "--protocol", "strats",
           "--seeds", "0", "--epochs", str(epochs), "--out", str(folder), "--quiet"]  # fmt: skip
    if stays:  # a smoke run, not a measurement
        cmd += ["--train-stays", str(stays), "--eval-stays", str(stays)]
    other = busy_loop() if shared else None
    try:
        subprocess.run(cmd, check=True, env=env)
    finally:
        if other is not None:
            other.kill()
    row = json.loads(next(folder.glob("*/report/metrics.json")).read_text())["row"]
    keys = ("epochs", "epoch_s", "train_s", "wall_s", "peak_mb", "auroc")
    info = machine_info(isa)
    if before:
        info["isa"] = f"{isa}@{before}"
    return {**info, "omp_wait_policy": policy, "shared_core": shared, **{k: row.get(k) for k in keys},
            "load_before": round(load, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--isas", default=",".join(cpu_isas()), help="vector paths (default: all this CPU runs)")
    parser.add_argument("--wait-policies", default="default", help="OpenMP wait policies: default (libgomp's), hymate (the CLI's choice), passive, active, spin<N> (GOMP_SPINCOUNT=N)")
    parser.add_argument("--stays", type=int, default=None, help="train / eval stays (smoke runs only)")
    parser.add_argument("--shared", action="store_true", help="also measure with one core taken by a busy loop")
    parser.add_argument("--before", default=None, help="git revision of the kernel to compare with, per path")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: results/cpu_<best path>.json)")
    args = parser.parse_args()
    out = args.out or RESULTS_DIR / f"cpu_{cpu_isas()[0]}.json"
    rows = []
    with tempfile.TemporaryDirectory(prefix="hymate-cpu-") as tmp:
        for isa in args.isas.split(","):
            if args.before:
                rows.append(measure(isa, "default", args.epochs, Path(tmp), False, args.stays, args.before))
                Console(stderr=True).print(f"  {isa}@{args.before}: {rows[-1]['epoch_s']} s per epoch", style="dim")
            for policy in args.wait_policies.split(","):
                for shared in (False, True) if args.shared else (False,):
                    rows.append(measure(isa, policy, args.epochs, Path(tmp), shared, args.stays))
                    Console(stderr=True).print(f"  {isa} / {policy} / shared {shared}: {rows[-1]['epoch_s']} s per epoch",
                                               style="dim")  # fmt: skip
    first = rows[0]

    def base(row: dict) -> dict:  # the same path's before row, else the first row
        return next((b for b in rows if args.before and b["isa"] == f"{row['isa'].partition('@')[0]}@{args.before}"), first)

    # (the before rows run at libgomp's default policy: "vs before" compares policies too on other rows)
    table = Table("scan path", "OMP wait", "core shared", "epoch s", "vs before (default wait)" if args.before else "vs first", "peak MB", "AUROC", "load before",
                  title=f"HyMaTE P12 training epoch, {first['cpu']}, {first['cores']} cores")  # fmt: skip
    for r in rows:
        table.add_row(r["isa"], r["omp_wait_policy"], "yes" if r["shared_core"] else "no", f"{r['epoch_s']:.1f}", f"{r['epoch_s'] / base(r)['epoch_s']:.2f}x",
                      f"{r['peak_mb']:.0f}", f"{r['auroc']:.4f}" if r["auroc"] is not None else "-", f"{r['load_before']:.2f}")  # fmt: skip
    Console().print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    Console().print(f"wrote {out}")


if __name__ == "__main__":
    main()
