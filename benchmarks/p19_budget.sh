#!/usr/bin/env bash
# The P19 comparison at the shared 8,000-stay budget (benchmarks/NOTES.md, "a budget both models can
# meet on this machine"): two lanes side by side, one torch thread each, one p19.py call per fold so
# that each finished fold lands in results/p19.json at once (p19.py merges under a file lock, and a
# finished run under runs/ is never redone; p19.py skips a fold whose row is already in
# results/p19.json, so a fresh machine, without runs/, does only what is missing). Then the table:
# results/p19_table.md.
#   lane A: stay-level splits 0-4 (4 epochs), then online A->B (3 epochs)
#   lane B: online kfold5 folds 0-4 (3 epochs)
# Measured here (2026-12-02): ~4 min per stay-level epoch and ~5 min per online epoch on 8,000
# training stays with two lanes running, so ~2.5 h of both cores in all. The weight average decays
# at 0.99 (a ~100-step horizon): at 0.998 a 750-step run would still carry ~22 % of its first
# weights. OMP_WAIT_POLICY=passive: LightGBM's spinning OpenMP threads took ~25 min for a 4-8 min
# grid when a third job shared the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive HYMATE_DATA=${HYMATE_DATA:-$(cd .. && pwd)/shared/data}
COMMON=(--train-stays 8000 --eval-stays 2000 --ema-decay 0.99 --models hymate,lightgbm --quiet)
mkdir -p runs/logs
lane_a() {
  for s in 0 1 2 3 4; do "$PY" benchmarks/p19.py --tasks sepsis-stay --folds "$s" --epochs 4 --no-stay-query-time "${COMMON[@]}"; done
  "$PY" benchmarks/p19.py --tasks sepsis-online --settings a2b --epochs 3 "${COMMON[@]}"
}
lane_b() {
  for f in 0 1 2 3 4; do "$PY" benchmarks/p19.py --tasks sepsis-online --settings kfold5 --folds "$f" --epochs 3 "${COMMON[@]}"; done
}
lane_a > runs/logs/p19_laneA.log 2>&1 &
a=$!
lane_b > runs/logs/p19_laneB.log 2>&1 &
b=$!
wait $a; wait $b
"$PY" benchmarks/p19.py --report
