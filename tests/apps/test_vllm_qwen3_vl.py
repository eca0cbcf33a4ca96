"""vLLM's ``LLM.generate`` on the compressed Qwen3-VL equals transformers + vtcompress.

As tests/apps/test_vllm_qwen2_5_vl.py, for Qwen3-VL: images and clips compressed with their
DeepStack levels cut by the same kept indices; a clip's frames are runs of their own between
timestamp text, each sized by the method's per-frame count (a frame that keeps nothing keeps its
timestamp and an empty marker pair), and methods that split a clip over its frames by content
(EVS, VidCom²) are refused. One engine with prefix caching and 64-token prefill chunks; a second
with both off.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_qwen import ARCH, IMAGE, VIDEO, hf_generate, prompt, request, run_vllm  # noqa: E402
from vtcompress.integrations.vllm.qwen_tiny import save_tiny_qwen_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow

FAMILY = "qwen3_vl"
SERVER = {"method": "uniform", "ratio": 0.25}
STEP = 64
IMAGE_METHODS = ["divprune", "downsample", "pitome", "random", "tome", "uniform"]
CLIP_METHODS = IMAGE_METHODS + ["dycoke_ttm", "visionzip_video"]  # every method served on clips
RATIOS = [0.5, 0.25, 0.1]
CLIP_RATIOS = [0.5, 0.1]  # 0.1: 4 of 48 tokens, frames of 2, 1 and 1
PICTURE = (320, 256, 0)  # 8 x 10 merged tokens of 32 px
CLIP = (128, 128, 6, 1)  # 3 temporal patches of 4 x 4 merged tokens, timestamps between them
CLIP_TOKENS = 48
LOGPROB_ATOL = 1e-4
OFF = {"method": "uniform", "ratio": 1.0}

CASES = {}
for m in IMAGE_METHODS:
    for r in RATIOS + [1.0]:
        CASES[f"image-{m}-{r}"] = request(prompt(IMAGE), images=[PICTURE], settings={"method": m, "ratio": r})
for m in CLIP_METHODS:
    for r in CLIP_RATIOS:
        CASES[f"clip-{m}-{r}"] = request(prompt(VIDEO), videos=[CLIP], settings={"method": m, "ratio": r})
SHAPES = {
    "two-images": request(
        prompt(IMAGE, IMAGE), images=[PICTURE, (256, 384, 3)], settings={"method": "tome", "ratio": 0.25}
    ),
    "clip-uncompressed": request(prompt(VIDEO), videos=[CLIP], settings=OFF),
    "image-then-clip-uncompressed": request(
        prompt(IMAGE, VIDEO), images=[PICTURE], videos=[CLIP], settings=OFF
    ),
    "clip-then-image-uncompressed": request(
        prompt(VIDEO, IMAGE), videos=[CLIP], images=[PICTURE], settings=OFF
    ),
    "image-then-clip": request(
        prompt(IMAGE, VIDEO), images=[PICTURE], videos=[CLIP], settings={"method": "random", "ratio": 0.5}
    ),
    "clip-then-image": request(
        prompt(VIDEO, IMAGE), videos=[CLIP], images=[PICTURE], settings={"method": "pitome", "ratio": 0.1}
    ),
    "two-clips": request(
        prompt(VIDEO, VIDEO),
        videos=[(128, 96, 10, 2), CLIP],
        settings={"method": "dycoke_ttm", "ratio": 0.25},
    ),
}
ALL = {**CASES, **SHAPES}
BAD = {
    "clip-evs": (request(prompt(VIDEO), videos=[CLIP], settings={"method": "evs"}), "evs splits"),
    "clip-vidcom2": (request(prompt(VIDEO), videos=[CLIP], settings={"method": "vidcom2"}), "vidcom2 splits"),
    "video-method-on-image": (
        request(prompt(IMAGE, VIDEO), images=[PICTURE], videos=[CLIP], settings={"method": "dycoke_ttm"}),
        "videos only",
    ),
    "not-served": (request(prompt(IMAGE), images=[PICTURE], settings={"method": "visionzip"}), "visionzip"),
    "ratio": (request(prompt(IMAGE), images=[PICTURE], settings={"ratio": 0}), "ratio"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_qwen_for_vllm(FAMILY, tmp_path_factory.mktemp("vllm") / "tiny-qwen3-vl")


def engine_spec(checkpoint, batches, cached: bool) -> dict:
    return {
        "model": str(checkpoint),
        "hf_overrides": {"architectures": [ARCH[FAMILY]], "vtcompress": SERVER},
        "engine": {
            "enable_prefix_caching": cached,
            "enable_chunked_prefill": cached,
            "max_num_batched_tokens": STEP if cached else 4096,
            "enable_mm_embeds": True,
        },
        "batches": batches,
    }


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):
    names = list(ALL)
    batches = [[ALL[n] for n in names], [request(prompt(IMAGE), images=[PICTURE])]]
    batches += [[{**request(prompt(IMAGE)), "image_embeds": True}]]
    batches += [[req] for req, _ in BAD.values()]
    results = run_vllm(tmp_path_factory.mktemp("run"), engine_spec(checkpoint, batches, cached=True))
    n = len(names)
    return {
        "cases": dict(zip(names, results[:n])),
        "server": results[n],
        "embeds": results[n + 1],
        "bad": dict(zip(BAD, results[n + 2 :])),
    }


@pytest.fixture(scope="module")
def reference(checkpoint):
    names = list(ALL)
    server = request(prompt(IMAGE), images=[PICTURE], settings=SERVER)
    results = hf_generate(checkpoint, FAMILY, [ALL[n] for n in names] + [server])
    return {"cases": dict(zip(names, results)), "server": results[-1]}


def assert_same_generation(got, want, label):
    assert "error" not in got, (label, got)
    assert got["tokens"][: len(want["tokens"])] == want["tokens"], label
    assert got["prompt_len"] == want["prompt_len"], label
    for a, b in zip(got["logprobs"], want["logprobs"]):
        assert math.isclose(a, b, abs_tol=LOGPROB_ATOL), (label, got["logprobs"], want["logprobs"])


@pytest.mark.parametrize("name", list(ALL))
def test_greedy_tokens_equal_transformers(served, reference, name):
    assert_same_generation(served["cases"][name], reference["cases"][name], name)


def test_placeholder_counts_follow_the_declared_counts(served):
    base = served["cases"]["image-uniform-1.0"]["prompt_len"] - 80
    for r in RATIOS:
        assert served["cases"][f"image-uniform-{r}"]["prompt_len"] == base + math.floor(80 * r + 1e-9)


@pytest.mark.parametrize("method", ["uniform", "dycoke_ttm", "visionzip_video"])
def test_clip_runs_follow_the_declared_frame_counts(served, method):
    # per frame, 16 tokens: uniform at 0.1 keeps max(3, 4) = 4; TTM at 0.5 keeps frame 0 whole,
    # 8 of frame 1 and none of the unpaired frame 2; VisionZip int(16 r) of each frame
    kept = {
        "uniform": {0.5: 24, 0.1: 4},
        "dycoke_ttm": {0.5: 24, 0.1: 17},
        "visionzip_video": {0.5: 24, 0.1: 3},
    }
    base = served["cases"]["clip-uncompressed"]["prompt_len"] - CLIP_TOKENS
    for r in CLIP_RATIOS:
        assert served["cases"][f"clip-{method}-{r}"]["prompt_len"] == base + kept[method][r], (method, r)


def test_server_setting_applies_without_request_options(served, reference):
    assert_same_generation(served["server"], reference["server"], SERVER)


def test_precomputed_embeddings_are_refused(served):
    error = served["embeds"].get("error", "")
    assert error.startswith("ValueError") and "image_embeds" in error, served["embeds"]


@pytest.mark.parametrize("name", list(BAD))
def test_bad_settings_are_refused_naming_the_field(served, name):
    _, words = BAD[name]
    error = served["bad"][name].get("error", "")
    assert error.startswith("ValueError"), served["bad"][name]
    assert "mm_processor_kwargs.vtcompress" in error and words in error, error


def test_caching_and_chunking_off_give_the_same_tokens(checkpoint, served, tmp_path_factory):
    picks = ["image-pitome-0.25", "two-images", "clip-then-image-uncompressed", "clip-dycoke_ttm-0.1"]
    spec = engine_spec(checkpoint, [[ALL[n] for n in picks]], cached=False)
    for name, got in zip(picks, run_vllm(tmp_path_factory.mktemp("nocache"), spec)):
        want = served["cases"][name]
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], name
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL), name
