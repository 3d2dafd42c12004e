#!/usr/bin/env bash
# The whole GPU check in one call: set-up, `gdm-engine compile` for the device's own architecture
# (registers and spills beside the times), `gdm-engine validate` and `gdm-engine bench` with
# compiled kernels, results to bench/results/<date>-<gpu>{-compile,-validate,}.json and .md (and
# copies under $OUT when the device tool runs it). Usage on any CUDA machine: bash bench/run_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ ! -x .venv/bin/gdm-engine ]; then
  make setup TORCH="${TORCH:-torch}"
fi
gpu=$(.venv/bin/python -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
stem="bench/results/$(date +%F)-$gpu"
mkdir -p bench/results
arch=$(.venv/bin/python -c "import torch; print('sm_%d%d' % torch.cuda.get_device_capability())")
.venv/bin/gdm-engine compile --arch "$arch" --json "$stem-compile.json" || true  # report, go on
.venv/bin/gdm-engine info
.venv/bin/gdm-engine validate --json "$stem-validate.json"
.venv/bin/gdm-engine bench --json "$stem.json" --markdown "$stem.md"
if [ -n "${OUT:-}" ]; then cp "$stem"* "$OUT"/; fi
