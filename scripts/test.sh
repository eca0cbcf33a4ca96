#!/usr/bin/env bash
# Install vtcompress with its test dependencies into ./.venv (created if missing), then run the
# whole test suite. Extra pytest arguments are passed through: bash scripts/test.sh -k globalcom2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first, so that no CUDA build is pulled in by the dependencies.
python -m pip install -q "torch==2.13.0" || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e ".[dev]"
python -m pytest "$@"
