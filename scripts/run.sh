#!/usr/bin/env bash
# First run: set up ./.venv (created if missing) and run `vtcompress run` with the arguments given.
#
#   bash scripts/run.sh                       # offline example on the built-in tiny model
#   bash scripts/run.sh --image photo.jpg --question "What is on the table?" \
#        --model llava-hf/llava-v1.6-mistral-7b-hf
#
# - torch: if the venv has none, TORCH_SPEC is installed first (default "torch==2.13.0"; where
#   pip's index has a CPU build of it, as on the project's machines, that is a ~200 MB download;
#   plain PyPI on Linux serves the CUDA build, several GB). Another build, e.g. the CPU wheel from
#   PyTorch's own index:
#     TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash scripts/run.sh
#   A torch already in the venv is kept.
# - vtcompress itself: `pip install -e .` (no extras), skipped when already installed from here.
# - PYTHON: the interpreter that creates the venv (default python3, >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q --upgrade pip
    # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options
    "$VPY" -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
if ! "$VPY" -c "import vtcompress.integrations.cli.quickrun" 2>/dev/null \
    || [ "$("$VPY" -c 'from vtcompress.hints import source_checkout as s; print(s())')" != "$PWD" ]; then
    "$VPY" -m pip install -q -e .
fi
exec .venv/bin/vtcompress run "$@"
