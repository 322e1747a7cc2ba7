#!/usr/bin/env bash
# The CUDA path end to end, in one prepared run on a lent GPU (`make gpu-check`), within about
# 8 minutes on one H100, every figure written under $OUT (JSON, logs, summary.md):
#
#   1. pytest -m gpu           the GPU tests, the service end to end on CUDA included
#   2. bench.fidelity          the engine against torch.utils.benchmark.Timer, in fresh processes
#   3. bench.cost              a whole default resnet50 profile against its timed passes
#   4. bench.sweep             the paper's 44 architectures, one fresh process each, with Spearman
#                              against the paper's Titan Xp, memory fits and the context floor
#   5. bench.gpu_summary       summary.md from all of it
#
# On the device machine (no network): the wheels it lacks travel in .whl/ (bench/gpu_wheels.sh
# fetches them here); the run installs them into /tmp/site. Each step has its own time limit, so
# a slow step cannot eat the others', and prints timestamped progress, so a run cut off still
# says how far it got.
#
#   bench/gpu_check.sh             # on the GPU machine: OUT=... set by the device tool
#   bench/gpu_check.sh --dry-run   # here, on the CPU: the same steps, shrunk, to know it works
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$PWD/var/gpu-check}
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/progress.log"; }
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "$DRY" = 1 ] && PY=.venv/bin/python

if ls .whl/*.whl >/dev/null 2>&1 && [ "$DRY" = 0 ]; then
  log "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
export PYTHONUNBUFFERED=1 DNNPROF_BENCH_RESULTS="$OUT" CUDA_DEVICE_ORDER=PCI_BUS_ID

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  PYTEST=(-m gpu --co -q)                       # collect only: the GPU tests skip on a CPU
  FIDELITY=(--device cpu --models resnet18 --batch-sizes 1 --repeats 1 --runs 10)
  COST=(--device cpu --batch-sizes 1,2 --repeats 1)
  SWEEP=(--device cpu --models ResNet-18,MobileNet-v2,SqueezeNet-v1.1 --batch-sizes 1 --no-energy)
  LIMITS=(300 300 300 300)
else
  DEVICE=cuda
  PYTEST=(-m gpu -q -p no:cacheprovider)
  FIDELITY=(--device cuda --repeats 2 --runs 30)
  COST=(--device cuda --repeats 3)
  # 1, 8 and 64 for all 44 (the issue's minimum) fit; the deadline stops starting models in time.
  SWEEP=(--device cuda --batch-sizes 1,8,64 --overlap --no-energy --deadline-s 200 --model-timeout-s 120)
  LIMITS=(150 150 75 260)
fi

log "environment"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true; } \
  > "$OUT/nvidia-smi.csv"
"$PY" - > "$OUT/versions.json" <<'EOF'
import json
from bench.common import environment
print(json.dumps(environment(), indent=2, default=str))
EOF
cat "$OUT/versions.json"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  log "start $name (limit ${limit} s)"
  local started=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  log "end $name: exit $code after $((SECONDS - started)) s"
  tail -n 15 "$OUT/$name.log"
  echo "$name $code $((SECONDS - started))" >> "$OUT/steps.txt"
}

: > "$OUT/steps.txt"
step pytest-gpu "${LIMITS[0]}" "$PY" -m pytest "${PYTEST[@]}" tests
step fidelity "${LIMITS[1]}" "$PY" -m bench.fidelity "${FIDELITY[@]}"
step cost "${LIMITS[2]}" "$PY" -m bench.cost "${COST[@]}"
step sweep "${LIMITS[3]}" "$PY" -m bench.sweep "${SWEEP[@]}" --out "$OUT"
"$PY" -m bench.gpu_summary "$OUT" "$DEVICE" > "$OUT/summary.md" 2> "$OUT/summary.err"
log "done: $OUT/summary.md"
cat "$OUT/summary.md"
