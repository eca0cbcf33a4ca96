#!/usr/bin/env bash
# Install the environment of the original LLaVA codebase (PyPI's llava-torch, import `llava`) with
# lmms-eval into its own venv, for tests/llava_pkg/ (the host and the vtcompress_llava lmms-eval model):
#
#   bash .ci/llava-setup.sh [VENV_DIR]        # default VENV_DIR: .venv-llava (git-ignored)
#   VENV_DIR/bin/python -m pytest -q tests/llava_pkg
#
# Separate from the main test venv because llava needs transformers 4.x and vtcompress's Hugging
# Face hosts need 5.x. llava-torch's own pins (torch 2.0.1, transformers 4.36.2, gradio, ...) would
# replace torch, so it goes in with --no-deps next to what its inference code imports; vtcompress
# also goes in with --no-deps (it declares transformers>=5 for its HF hosts; its core and this host
# import no transformers).
# - transformers 4.57.6 (LLAVA_TRANSFORMERS picks another 4.x; lmms-eval 0.7.3 needs >= 4.39.2,
#   the host alone also runs on llava-torch's own pin 4.36.2).
# - lmms-eval needs torchvision, which must match torch exactly: with lmms-eval the torch pair
#   comes from evals/constraints-eval.txt (torch 2.14.1 + torchvision 0.29.1 on x86_64, a CUDA
#   build: about 7 GB); sentencepiece 0.2.0 (0.2.3 wants a protobuf the resolver does not pick).
# - LLAVA_WITH_EVAL=0 builds a light venv without lmms-eval on the CPU torch 2.13.0 (about
#   1.2 GB); the lmms-eval tests then skip.
# A VENV_DIR that already imports llava only gets this checkout's vtcompress re-linked (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-llava}
transformers=${LLAVA_TRANSFORMERS:-4.57.6}
start=$SECONDS
check="import llava.model.language_model.llava_llama"
[ "${LLAVA_WITH_EVAL:-1}" = 1 ] && check="$check; import lmms_eval, torchvision.ops"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "llava-setup: reusing $venv"
else
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    if [ "${LLAVA_WITH_EVAL:-1}" = 1 ]; then
        "$venv/bin/pip" install -q -c evals/constraints-eval.txt "lmms-eval==0.7.3" torchvision "filelock<4" \
            "transformers==$transformers" "sentencepiece==0.2.0" protobuf "pytest>=8"
    else
        "$venv/bin/pip" install -q "torch==2.13.0"
        # sentencepiece: LLaMA tokenizers load slow (use_fast=False); protobuf: legacy=False tokenizers;
        # accelerate: load_pretrained_model passes low_cpu_mem_usage.
        "$venv/bin/pip" install -q "transformers==$transformers" sentencepiece protobuf accelerate pillow \
            numpy "pytest>=8"
    fi
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

try:
    lmms_eval = f", lmms-eval {md.version('lmms-eval')}"
    from torchvision.ops import nms  # the import that breaks with a mismatched torchvision
except md.PackageNotFoundError:
    lmms_eval = ", no lmms-eval"
print(f"llava-setup: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"llava-torch {md.version('llava-torch')}, vtcompress {md.version('vtcompress')}{lmms_eval}")
PY
echo "llava-setup: $venv ready in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
