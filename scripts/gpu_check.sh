#!/bin/bash
# The GPU checks in one go, for a lent GPU machine (15 minutes of device time in all): the CUDA
# runs of tests/fedsim/test_device.py against the CPU, then the population benchmark on the GPU.
# Prepare here with `bash scripts/gpu_wheels.sh`, then run there (the .whl folder carried):
#   bash scripts/gpu_check.sh            # writes gpu-check.txt, tests.txt and bench.txt under $OUT
# SKIP_INSTALL=1 DEVICE=cpu bash scripts/gpu_check.sh   # a dry run of the same steps on a CPU machine
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
device=${DEVICE:-cuda}
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{
  date -u; uptime; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$out/gpu-check.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/fedsim/test_device.py -k "not ray" -rs 2>&1 \
  | tee "$out/tests.txt"
timeout 360 python3 benchmarks/bench_population.py --device "$device" --ues 1000 10000 --rounds 100 --arms pop8 \
  --per-ue-max 0 2>&1 | tee "$out/bench.txt"
