#!/usr/bin/env bash
# The command for the lent GPU machine (run from the repository root there, with .whl and
# data/fashion-mnist carried; see benchmarks/gpu/README.md):
#   bash benchmarks/gpu/run.sh [--only anchor,...] [--no-compile] [--budget-s N]
# The default budget (480 s for the script) fits a device call of timeout_s 560.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 KT_DATA_DIR=$PWD/data/fashion-mnist WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m benchmarks.gpu.studies --out "$OUT" --logs /tmp/gpu_logs --budget-s 480 --throughput-s 150 "$@" 2>&1 \
  | tee "$OUT/log.txt"
