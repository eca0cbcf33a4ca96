#!/usr/bin/env bash
# The GPU check, in one run: the GPU tests, the kernel benchmark, the compressors' CUDA counts, the
# prefill preset of the cost benchmark and, where lmms-eval is installed, its models on the GPU.
# Raw outputs go to DIR (default evals/results/<machine>/, e.g. evals/results/h200/); a DIR that
# already holds a run is refused, so past records are never overwritten.
#
# Usage on a CUDA machine, from the repository root:
#     bash evals/device_check.sh [DIR]
# MACHINE=name sets <machine> (default: the GPU's name, lower case, "NVIDIA " dropped).
set -u
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "device_check.sh: no NVIDIA GPU visible (nvidia-smi); run it on a CUDA machine" >&2
    exit 2
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
MACHINE=${MACHINE:-$(echo "$GPU_NAME" | sed -e 's/^NVIDIA //' | tr '[:upper:] ' '[:lower:]-')}
DIR=${1:-evals/results/$MACHINE}
if [ -e "$DIR/gpu.txt" ]; then
    echo "device_check.sh: $DIR already holds a run; pass a new folder, e.g. bash evals/device_check.sh $DIR/run2" >&2
    exit 2
fi
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps -e .

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$DIR/gpu.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$DIR/gpu.txt"

timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider \
    tests/kernels/test_kernels_gpu.py tests/methods/test_tokencorr_gpu.py tests/apps/test_bench.py 2>&1 | tail -25 | tee "$DIR/gpu_tests.txt"
timeout 100 python3 evals/bench_kernels.py --device cuda --configs 1x576x1024 4x2304x1024 8x4096x1024 16x2880x64 4x4096x64 --k 1,8 \
    2>&1 | tail -40 | tee "$DIR/bench_kernels_cuda.txt"
timeout 100 python3 -m evals.bench.compressors --device cuda --repeats 20 2>&1 | tail -20 | tee "$DIR/compressors_cuda.txt"
timeout 240 python3 -m evals.bench --preset gpu --no-plots --out "$DIR/prefill" 2>&1 | tail -60 | tee "$DIR/prefill.txt"

if python3 -c "import lmms_eval" 2>/dev/null; then
    timeout 300 python3 evals/lmms_eval_device_check.py --out /tmp/vtc_device_check 2>&1 | tail -20 | tee "$DIR/lmms_eval_check.txt"
else
    echo "skipped: lmms-eval is not installed here (pip install \"vtcompress[eval]\")" | tee "$DIR/lmms_eval_check.txt"
fi
