#!/usr/bin/env bash
# Install the environment of the original LLaVA codebase (PyPI's llava-torch, import `llava`) into
# its own venv, for tests/llava_pkg/:
#
#   bash .ci/llava-setup.sh [VENV_DIR]        # default VENV_DIR: .venv-llava (git-ignored)
#   VENV_DIR/bin/python -m pytest -q tests/llava_pkg
#
# Separate from the main test venv because llava needs transformers 4.x and vtcompress's Hugging
# Face hosts need 5.x. llava-torch's own pins (torch 2.0.1, transformers 4.36.2, gradio, ...) would
# replace torch, so it goes in with --no-deps next to what its inference code imports; vtcompress
# also goes in with --no-deps (it declares transformers>=5 for its HF hosts; its core and this host
# import no transformers symbol that 4.x lacks). LLAVA_TRANSFORMERS picks the 4.x release
# (default 4.57.6; 4.36.2 is llava-torch's own pin).
# A VENV_DIR that already imports llava only gets this checkout's vtcompress re-linked (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-llava}
transformers=${LLAVA_TRANSFORMERS:-4.57.6}
start=$SECONDS

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llava.model.language_model.llava_llama" 2>/dev/null; then
    echo "llava-setup: reusing $venv"
else
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "torch==2.13.0"
    # sentencepiece: LLaMA tokenizers load slow (use_fast=False); protobuf: legacy=False tokenizers;
    # accelerate: load_pretrained_model passes low_cpu_mem_usage.
    "$venv/bin/pip" install -q "transformers==$transformers" sentencepiece protobuf accelerate pillow \
        numpy "pytest>=8"
    "$venv/bin/pip" install -q --no-deps "llava-torch==1.2.2.post1"
fi
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e .

# Fail here, not in the tests, if llava or vtcompress cannot be imported.
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

import torch
import transformers
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM  # the real error, if any

import vtcompress
from vtcompress.integrations.llava_pkg.host import LlavaPackageHost

print(f"llava-setup: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"llava-torch {md.version('llava-torch')}, vtcompress {md.version('vtcompress')}")
PY
echo "llava-setup: $venv ready in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
