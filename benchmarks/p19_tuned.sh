#!/usr/bin/env bash
# HyMaTE on P19 with the learning rate found on split 0 of the stay-level task (benchmarks/NOTES.md,
# "The learning rate, not the budget"): peak 3e-3 after a quarter-epoch warm-up (the default 1e-3
# after a full epoch left the 1,000-step runs barely past a constant predictor), weight average 0.99.
#   stay-level: all training stays, 10 epochs, the time where each record ends as an input (-qt,
#     the default)
#   online: the 8,000-stay budget of p19_budget.sh (3 epochs), then all training stays (3 epochs)
# Two lanes, one thread each; a fold already in results/p19.json at its budget is skipped, so a
# rerun does only what is missing. Measured here (2026-12-02, quiet machine): ~1.8 min per
# stay-level epoch on ~32 k training stays (~18 min a split); online at 8,000 stays ~5 min a fold.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive HYMATE_DATA=${HYMATE_DATA:-$(cd .. && pwd)/shared/data}
TUNED=(--lr 3e-3 --warmup-epochs 0.25 --ema-decay 0.99 --models hymate --quiet)
STAY=(--tasks sepsis-stay --epochs 10 "${TUNED[@]}")
BUDGET=(--tasks sepsis-online --epochs 3 --train-stays 8000 --eval-stays 2000 "${TUNED[@]}")
FULL=(--tasks sepsis-online --epochs 3 "${TUNED[@]}")
mkdir -p runs/logs
lane_a() {
  for s in 0 4; do "$PY" benchmarks/p19.py "${STAY[@]}" --folds "$s"; done
  for f in 0 1 2 3 4; do "$PY" benchmarks/p19.py "${BUDGET[@]}" --settings kfold5 --folds "$f"; done
  "$PY" benchmarks/p19.py "${BUDGET[@]}" --settings a2b
  for f in 0 2 4; do "$PY" benchmarks/p19.py "${FULL[@]}" --settings kfold5 --folds "$f"; done
}
lane_b() {
  for s in 1 2 3; do "$PY" benchmarks/p19.py "${STAY[@]}" --folds "$s"; done
  for f in 1 3; do "$PY" benchmarks/p19.py "${FULL[@]}" --settings kfold5 --folds "$f"; done
  "$PY" benchmarks/p19.py "${FULL[@]}" --settings a2b
}
lane_a > runs/logs/p19_tuned_laneA.log 2>&1 &
a=$!
lane_b > runs/logs/p19_tuned_laneB.log 2>&1 &
b=$!
wait $a; wait $b
"$PY" benchmarks/p19.py --report train8000,trainall
