"""The same tiny weights as a llava package model and as transformers' LLaVA-NeXT: same kept
positions per view and the same logits under every method, for image sizes where the two
codebases agree on the grid and the unpadding (where they do not, see test_llava_pkg_layout.py:
each host follows its own codebase's count).

The llava half runs here (``.venv-llava``, transformers 4.x); the LLaVA-NeXT half runs in the
transformers-5 venv (``VTCOMPRESS_HF_PYTHON``, default ``.venv/bin/python``) as a subprocess on
the same checkpoint and pixels (tests/llava_pkg/hf_side.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("llava.model.language_model.llava_llama")

import tiny_llava  # noqa: E402  (tests/llava_pkg/tiny_llava.py)
import torch  # noqa: E402
import transformers  # noqa: E402

import vtcompress as vtc  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from vtcompress.integrations.llava_pkg.host import IMAGE_TOKEN_INDEX  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
HF_PYTHON = Path(os.environ.get("VTCOMPRESS_HF_PYTHON", ROOT / ".venv" / "bin" / "python"))
SIZES = [(200, 150), (150, 200), (300, 90), (500, 333), (1000, 500)]  # (width, height)
RATIOS = [1.0, 0.5, 0.25, 0.1]
# Uncompressed logits are bit-identical from transformers 4.38 on (tested: 4.57.6); 4.36 computes
# attention differently (float32 rounding), so there they are only allclose.
EXACT = tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 38)
# every method with its defaults, and the merging methods inside the CLIP tower
VARIANTS = [(m, {}) for m in vtc.available_methods("image")] + [
    (m, {"placement": "tower"}) for m in ("pitome", "tome")
]
NAMES = [m + "".join(f"-{v}" for v in o.values()) for m, o in VARIANTS]
RUNS = [(m, r, o) for m, o in VARIANTS for r in RATIOS]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    if not HF_PYTHON.exists():
        pytest.skip(f"no transformers-5 venv at {HF_PYTHON} (set VTCOMPRESS_HF_PYTHON)")
    tokenizer, model, _ = tiny_llava.loaded(True)
    if vtc.get_handle(model) is not None:
        vtc.get_handle(model).remove()
    cases, ours = [], {}
    for c, size in enumerate(SIZES):
        inputs = tiny_llava.inputs(True, [make_image(*size, seed=c)], ["Where is the red square?"])
        ids = inputs["input_ids"][0]
        split = int((ids == IMAGE_TOKEN_INDEX).nonzero())
        assert not (ids == 0).any()  # id 0 stands for the image on the LLaVA-NeXT side
        cases.append(
            dict(pixel_values=inputs["images"][0], size=size, before=ids[:split], after=ids[split + 1 :])
        )
        for method, ratio, options in RUNS:
            with torch.no_grad(), vtc.compressed(model, method, ratio=ratio, **options) as handle:
                logits = model(**inputs).logits[0]
                views = handle.last_stats.images[0].views
                ours[(c, method + "".join(f"-{v}" for v in options.values()), ratio)] = {
                    "logits": logits,
                    "positions": [v.positions for v in views],
                }
    folder = tmp_path_factory.mktemp("cross")
    torch.save({"cases": cases, "runs": RUNS}, folder / "cases.pt")
    script = ROOT / "tests" / "llava_pkg" / "hf_side.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(HF_PYTHON), str(script), str(tiny_llava.checkpoint(True)), str(folder / "cases.pt"), str(folder / "hf.pt")],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return ours, torch.load(folder / "hf.pt")


@pytest.mark.parametrize("method", NAMES)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("case", range(len(SIZES)), ids=[f"{w}x{h}" for w, h in SIZES])
def test_same_kept_positions_and_logits(both, case, method, ratio):
    ours, theirs = both
    if not EXACT and method.startswith(("pitome", "tome")):
        # CLIP's attention rounds differently in 4.36 (eager) than in 5.x (SDPA), and the tiny
        # tower's merge energies tie within that rounding: merges may pick other pairs.
        pytest.skip("merging methods are compared on transformers >= 4.38")
    a, b = ours[(case, method, ratio)], theirs[(case, method, ratio)]
    assert a["positions"] == b["positions"]
    assert a["logits"].shape == b["logits"].shape
    if ratio == 1.0 and EXACT:
        assert torch.equal(a["logits"], b["logits"])
        return
    torch.testing.assert_close(a["logits"], b["logits"], atol=1e-4, rtol=1e-4)
    if ratio < 1.0:
        assert a["logits"].shape[0] < ours[(case, method, 1.0)]["logits"].shape[0]  # it compressed
