#!/usr/bin/env bash
# Packaging check: build the sdist and the wheel (the wheel from the sdist, so the sdist is
# complete), `twine check` both, install the wheel into a clean temporary venv and run
# `vtcompress run` offline from outside the checkout: the example images, integrations/ and
# kernels/ must all be inside the wheel, and every host registered in the source tree's
# pyproject.toml must import from the installed wheel. About 1-2 minutes; TORCH_SPEC as in
# scripts/run.sh.
#
#   bash scripts/check_package.sh      (uses the python of an active venv, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vtcompress-package.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

"$PY" -m build -q --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
"$PY" -m twine check --strict "$tmp"/dist/*
"$PY" -m venv "$tmp/venv"
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options
"$tmp/venv/bin/python" -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
"$tmp/venv/bin/python" -m pip install -q "$tmp"/dist/*.whl

# The hosts registered in the source tree (the names of its vtcompress.hosts entry points).
hosts=$(sed -n '/^\[project.entry-points."vtcompress.hosts"\]/,/^\[/p' pyproject.toml \
    | grep -E '^[A-Za-z0-9_.-]+ *=' | cut -d= -f1 | tr -d ' ' | tr '\n' ' ')
[ -n "$hosts" ] || { echo "no vtcompress.hosts entry points found in pyproject.toml"; exit 1; }

cd "$tmp"  # nothing may come from the checkout
export HF_HUB_OFFLINE=1 VTCOMPRESS_CACHE="$tmp/cache" OMP_NUM_THREADS=1
VTCOMPRESS_SOURCE_HOSTS="$hosts" "$tmp/venv/bin/python" - <<'PY'
import os
import sys

from vtcompress.hosts import host_specs

# Every host the source tree registers imports from the wheel: its declaration, host class, loaders,
# tiny model and prompt (the lmms-eval class needs the eval extra: its module must be in the wheel).
installed = {s.name: s for s in host_specs()}
expected = os.environ["VTCOMPRESS_SOURCE_HOSTS"].split()
missing = sorted(set(expected) - set(installed))
assert not missing, f"hosts registered in the source tree but not in the wheel: {missing}"
for name in expected:
    spec = installed[name]
    for what in ("host", "loader", "load_uncompressed", "tiny_checkpoint", "tiny_builder", "prompt", "demo_views"):
        if getattr(spec, what) is not None:
            obj = spec.load(what)
            module = sys.modules[obj.__module__]
            assert "site-packages" in module.__file__, f"{name}: {what} from {module.__file__}"
    if spec.lmms_eval_class:
        from importlib.util import find_spec

        assert find_spec(spec.lmms_eval_class.partition(":")[0]) is not None, (name, spec.lmms_eval_class)
print(f"hosts importable from the wheel: {' '.join(expected)}")
import vtcompress.integrations.docowl, vtcompress.integrations.lmms_eval, vtcompress.kernels  # noqa: F401
from vtcompress.examples import EXAMPLES
from vtcompress.hints import install_command

assert all(e.path.is_file() for e in EXAMPLES.values()), "example PNGs missing from the wheel"
assert install_command("demo") == 'pip install "vtcompress[demo]"', install_command("demo")
PY
"$tmp/venv/bin/vtcompress" run --repeats 1 --warmup 0 --max-new-tokens 2 >"$tmp/run.log" 2>&1 \
    || { cat "$tmp/run.log"; exit 1; }
grep -q "answer with compression" "$tmp/run.log" || { cat "$tmp/run.log"; exit 1; }
echo "package check: sdist + wheel built, twine check passed, the installed wheel runs offline ($((SECONDS - start)) s)"
