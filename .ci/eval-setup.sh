#!/usr/bin/env bash
# Install the evaluation environment (vtcompress[eval] + lmms-eval + pytest) into its own venv.
#
#   bash .ci/eval-setup.sh [VENV_DIR]        # default VENV_DIR: .venv-eval (git-ignored)
#   VENV_DIR/bin/python -m pytest -q tests/test_lmms_eval_*.py
#
# Separate from the main test venv because lmms-eval needs torchvision, and torchvision must match
# torch exactly (evals/constraints-eval.txt): on x86_64 this takes torch 2.14.1 + torchvision 0.29.1.
# Measured on the 2-core CI machine with no pip cache: 2.6 to 3.8 minutes (the machine's load
# decides), 7.0 GB in VENV_DIR (torch 2.14.1 is a CUDA build; most of it is CUDA libraries).
# A VENV_DIR that already imports lmms-eval only gets this checkout's vtcompress re-linked (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-eval}
start=$SECONDS

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import lmms_eval, torchvision.ops" 2>/dev/null; then
    echo "eval-setup: reusing $venv"
    "$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
else
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -c evals/constraints-eval.txt -e ".[eval]" "pytest>=8"
fi

# Fail here, not in the tests, if the pairing or the plugin registration is broken.
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

import torch
import torchvision
from torchvision.ops import nms  # the import that breaks with a mismatched torchvision

names = [ep.value for ep in md.entry_points(group="lmms_eval.models")]
assert "vtcompress.integrations.lmms_eval:model_manifests" in names, names
print(f"eval-setup: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"lmms-eval {md.version('lmms-eval')}, filelock {md.version('filelock')}")
PY
echo "eval-setup: $venv ready in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
