"""HyMaTE on PhysioNet 2012: the `strats` protocol over seeds and the `splits5` protocol.

    python benchmarks/p12_hymate.py [--seeds 0-4] [--protocols strats,splits5] [--out runs/benchmark/hymate]

Each run is its own `hymate train` process, so its wall time and peak memory (max RSS) are its
own. Finished runs are reused (`--resume`), so an interrupted benchmark continues where it
stopped. Prints the tables and writes benchmarks/results/p12_hymate.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hymate.cli import parse_int_list

RESULTS = Path(__file__).parent / "results" / "p12_hymate.json"
DEFAULT_OUT = Path("runs/benchmark/hymate")
KEYS = ("auroc", "ap", "auprc_trapz", "min_re_pr", "ece")
PEERS = {  # AUROC / AUPRC (AP) in %, Raindrop protocol, from the peer table in HYMATE.md
    "Transformer": (83.3, 47.9), "GRU-D": (81.9, 46.1), "mTAND": (84.2, 48.2), "Raindrop": (82.8, 44.0),
    "ViTST": (85.1, 51.1), "Warpformer": (86.5, 54.3), "GraFITi": (86.6, 54.8), "MTM": (88.0, 58.6),
}  # fmt: skip


def run(protocol: str, seed: int, split: int, out: Path, extra: list[str]) -> dict:
    folder = out / f"{protocol}-split{split}-seed{seed}"
    done = folder / "report" / "metrics.json"
    if not done.exists():
        cmd = [sys.executable, "-m", "hymate.cli", "train", "physionet2012", "--protocol", protocol,
               "--seeds", str(seed), "--splits", str(split), "--out", str(out), "--quiet", *extra]  # fmt: skip
        subprocess.run(cmd, check=True)
    report = json.loads(done.read_text())
    return {**report["row"], "ci95": report["ci95"]}


def mean_sd(rows: list[dict], key: str, digits: int = 4) -> str:
    values = np.array([r[key] for r in rows])
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--protocols", default="strats,splits5")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("extra", nargs="*", help="extra `hymate train` options, after --")
    args = parser.parse_args()
    console = Console()
    # The committed results are the default benchmark's; a run into another folder (a smoke run,
    # other settings) keeps its results beside its runs instead of overwriting them.
    path = RESULTS if args.out == DEFAULT_OUT else args.out / RESULTS.name
    results = json.loads(path.read_text()) if path.exists() else {}

    for protocol in args.protocols.split(","):
        jobs = [(s, 0) for s in parse_int_list(args.seeds)] if protocol == "strats" else [(0, k) for k in range(5)]
        rows = [run(protocol, seed, split, args.out, args.extra) for seed, split in jobs]
        table = Table("seed", "split", "AUROC (95 % CI)", "AP", "AUPRC trapz", "min(Re,Pr)", "ECE", "wall s", "peak MB",
                      title=f"HyMaTE, PhysioNet 2012, {protocol} protocol (test)")  # fmt: skip
        for r in rows:
            lo, hi = r["ci95"]["auroc"]
            table.add_row(str(r["seed"]), str(r["split"]), f"{r['auroc']:.4f} ({lo:.3f}-{hi:.3f})", f"{r['ap']:.4f}",
                          f"{r['auprc_trapz']:.4f}", f"{r['min_re_pr']:.4f}", f"{r['ece']:.4f}",
                          "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}", f"{r['peak_mb']:.0f}")  # fmt: skip
        timed = [r for r in rows if r["wall_s"] is not None]  # None: resumed before run times were carried over
        table.add_row("mean ± sd", "", *(mean_sd(rows, k) for k in KEYS), mean_sd(timed, "wall_s", 0), "")
        console.print(table)
        if protocol == "splits5":
            peers = Table("model", "AUROC %", "AUPRC (AP) %", title="splits5 next to the peer table (HYMATE.md)")
            for name, (auroc, ap) in PEERS.items():
                peers.add_row(name, f"{auroc:.1f}", f"{ap:.1f}")
            a, p = np.array([r["auroc"] for r in rows]) * 100, np.array([r["ap"] for r in rows]) * 100
            peers.add_row("HyMaTE (hymate)", f"{a.mean():.1f} ± {a.std(ddof=1):.1f}", f"{p.mean():.1f} ± {p.std(ddof=1):.1f}")
            console.print(peers)
        results[protocol] = [{k: r[k] for k in ("protocol", "seed", "split", *KEYS, "wall_s", "peak_mb")} for r in rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
