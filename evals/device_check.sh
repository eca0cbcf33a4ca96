#!/usr/bin/env bash
# One prepared GPU check: GPU tests, kernel benchmark, LLaVA-NeXT-7B-shape prefill benchmark.
# Usage on a CUDA machine, from the repository root: OUT=/some/dir bash evals/device_check.sh
set -u
OUT=${OUT:-/tmp/vtcompress-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels_gpu.py tests/test_tokencorr_gpu.py 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
timeout 100 python3 evals/bench_kernels.py --device cuda --configs 1x576x1024 4x2304x1024 8x4096x1024 16x2880x64 4x4096x64 --k 1,8 2>&1 | tail -40 | tee "$OUT/bench_kernels_cuda.txt"
timeout 120 python3 evals/gpu_prefill.py --device cuda --layers 4 --repeats 5 2>&1 | tail -30 | tee "$OUT/gpu_prefill.txt"
