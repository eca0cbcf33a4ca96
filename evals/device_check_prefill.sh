#!/usr/bin/env bash
# Short GPU check: GPU tests and the 7B-shape prefill benchmark (see evals/device_check.sh).
set -u
OUT=${OUT:-/tmp/vtcompress-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps -e .
timeout 60 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels_gpu.py tests/test_tokencorr_gpu.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
timeout 100 python3 evals/gpu_prefill.py --device cuda --layers 4 --repeats 5 2>&1 | tail -30 | tee "$OUT/gpu_prefill.txt"
