#!/usr/bin/env bash
# The GPU check in one ten-minute job on an offline GPU machine:  bash bench/run_gpu.sh
#
# It uses the machine's own python3, which must already import a CUDA build of torch and triton
# (Triton 3.6 to 3.9): no network and no `make setup`. The project is installed into that python3
# in place (pip --no-deps --no-index -e .); a python3 without torch, triton or a CUDA device is
# refused within seconds, before anything is installed or written.
#
# Stages, each under its own timeout, each reported and the next one run whatever happened:
#   1 versions    30 s  versions, the GPU, kernels compiled (INTERPRETED False)
#   2 build       80 s  the smoke's kernels built on every core into Triton's cache, registers
#                       and spills reported (one at a time they would not fit stage 3)
#   3 smoke       90 s  validate --smoke: every op's first two tiny cases, fp32 IEEE and TF32,
#                       bf16, forward and backward, poisoned outputs
#   4 gpu-tests   75 s  pytest -m gpu: sync-debug mode, CUDA-graph replay, the tuning cache
#   5 bench      130 s  one bench case per op, kernel against eager, host µs beside kernel µs
#   6 ddim        45 s  the 50-step DDIM loop on (64, 4, 64, 64), eager, graph-replayed and
#                       diffusers'
#   7 validate  the rest: the full validate, until 525 s after the start (skipped under 30 s)
# Before them the CUDA probe (20 s) and the install (40 s). Timeouts: 20 + 40 + 30 + 80 + 90 +
# 75 + 130 + 45 = 510 s, each with 3 s to die after its TERM (534 s at worst); stage 7 ends by
# 528 s at the latest: the whole check ends within 9 minutes.
#
# Each stage's JSON and markdown (and its log) go to bench/results/<date>-<gpu>-<stage>.* and,
# when $OUT is set, are copied there the moment the stage ends; <...>-stages.json and .md list
# every stage's verdict and time. The exit status is 0 only when every stage passed.
set -u
shopt -s nullglob  # a stage that wrote nothing copies nothing
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # compiled kernels: the interpreter would check nothing of a GPU's build
PY=python3
DEADLINE=525

refuse() {  # refuse WHY: this python3 cannot run the check; stop before anything is changed
  echo "run_gpu.sh: $1" >&2
  echo "run_gpu.sh: the GPU check needs a machine whose python3 imports a CUDA build of torch" \
       "and triton; nothing was installed or written." >&2
  exit 1
}

command -v "$PY" > /dev/null || refuse "no $PY on PATH"
probe=$(timeout -k 3 20 "$PY" - 2>&1 <<'EOF'
import sys
try:
    import torch
except ImportError as error:
    sys.exit(f"cannot import torch ({error})")
try:
    import triton
except ImportError as error:
    sys.exit(f"torch {torch.__version__} but cannot import triton ({error})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) sees no CUDA "
             f"device: torch.cuda.is_available() is False")
print("-".join(torch.cuda.get_device_name().lower().replace("nvidia", "").split()))
EOF
)
status=$?
{ [ "$status" = 124 ] || [ "$status" = 137 ]; } && refuse "$PY did not answer within 20 s"
[ "$status" = 0 ] || refuse "$PY ($(command -v "$PY")): ${probe##*$'\n'}"
gpu=${probe##*$'\n'}

echo "installing the project into $(command -v "$PY") (no network, no dependencies)"
if ! timeout -k 3 40 "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index -e .
then
  echo "run_gpu.sh: pip could not install the project into $PY (see above); no stage ran" >&2
  exit 1
fi

stem="bench/results/$(date +%F)-$gpu"
mkdir -p bench/results ${OUT:+"$OUT"}
seed=$((RANDOM * 32768 + RANDOM))  # the smoke's inputs, which the build stage builds for
verdicts=()  # one JSON object per stage
rows=()  # one markdown table row per stage
failures=0

stage() {  # stage NAME TIMEOUT COMMAND...: run it, log it, note its verdict, copy its files out
  local name=$1 limit=$2 begin=$SECONDS verdict=ok
  shift 2
  echo "=== stage $name (timeout $limit s, $SECONDS s into the check): $*"
  timeout -k 3 "$limit" "$@" 2>&1 | tee "$stem-$name.log"
  local status=${PIPESTATUS[0]}
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    verdict="timed out after $limit s"
  elif [ "$status" != 0 ]; then
    verdict="failed (exit status $status)"
  fi
  [ "$verdict" = ok ] || failures=$((failures + 1))
  echo "=== stage $name: $verdict in $((SECONDS - begin)) s"
  note "$name" "$limit" "$((SECONDS - begin))" "$verdict"
}

note() {  # note NAME TIMEOUT SECONDS VERDICT: the stages' table, rewritten and copied out
  verdicts+=("$(printf '{"stage": "%s", "timeout_s": %s, "seconds": %s, "verdict": "%s"}' "$@")")
  rows+=("$(printf '| %s | %s | %s | %s |' "$@")")
  printf '[%s]\n' "$(IFS=,; echo "${verdicts[*]}")" > "$stem-stages.json"
  printf '# GPU check, %s, %s\n\n| stage | timeout s | s | verdict |\n|---|---|---|---|\n%s\n' \
    "$gpu" "$(date +%F)" "$(printf '%s\n' "${rows[@]}")" > "$stem-stages.md"
  [ -z "${OUT:-}" ] || cp "$stem-$1".* "$stem-stages.json" "$stem-stages.md" "$OUT"/
}

stage versions 30 "$PY" bench/gpu_check.py versions "$stem"
stage build 80 "$PY" bench/gpu_check.py build "$stem" "$seed"
stage smoke 90 "$PY" -m gdm_engine.cli validate --smoke --seed "$seed" \
  --json "$stem-smoke.json" --markdown "$stem-smoke.md"
stage gpu-tests 75 "$PY" bench/gpu_check.py gpu-tests "$stem"
stage bench 130 "$PY" -m gdm_engine.cli bench --cases 1 --no-compile --ops-only \
  --json "$stem-bench.json" --markdown "$stem-bench.md"
stage ddim 45 "$PY" bench/gpu_check.py ddim "$stem"
left=$((DEADLINE - SECONDS))
if [ "$left" -ge 30 ]; then
  stage validate "$left" "$PY" -m gdm_engine.cli validate --json "$stem-validate.json" \
    --markdown "$stem-validate.md"
else
  note validate 0 0 "skipped: $left s left"
fi
echo "GPU check: $failures of ${#verdicts[@]} stages did not pass, $SECONDS s in all;" \
     "results in $stem-*${OUT:+ and $OUT}"
[ "$failures" = 0 ]
