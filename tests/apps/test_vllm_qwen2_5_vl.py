"""vLLM's ``LLM.generate`` on the compressed Qwen2.5-VL equals transformers + vtcompress.

Every engine runs in a process of its own (tests/helpers/vllm_qwen_runner.py) on the same tiny
float32 weights and the same processor the transformers reference loads. One engine (prefix
caching on, chunked prefill with a 64-token step, so longer runs are split across steps) serves
every method and ratio through per-request ``mm_processor_kwargs``, the known bug shapes of
position bookkeeping, and the refusals; a second one runs with caching and chunking off.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_qwen import ARCH, IMAGE, VIDEO, hf_generate, prompt, request, run_vllm  # noqa: E402
from vtcompress.integrations.vllm.qwen_tiny import save_tiny_qwen_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow

FAMILY = "qwen2_5_vl"
SERVER = {"method": "uniform", "ratio": 0.25}  # the engine's own setting (--hf-overrides)
STEP = 64  # max_num_batched_tokens: prefill chunks of 64 tokens
IMAGE_METHODS = ["divprune", "downsample", "pitome", "random", "tome", "uniform"]
VIDEO_METHODS = ["evs", "vidcom2", "dycoke_ttm", "visionzip_video", "uniform", "pitome"]
RATIOS = [0.5, 0.25, 0.1]
PICTURE = (252, 196, 0)  # 9 x 7 merged tokens
CLIP = (112, 140, 8, 1)  # 4 temporal patches of 4 x 5 merged tokens
LONG_CLIP = (224, 224, 16, 2)  # 8 temporal patches of 8 x 8: 512 tokens, many prefill steps
LOGPROB_ATOL = 1e-4  # float32, two runtimes, the same kept tokens

CASES = {}
for m in IMAGE_METHODS:
    for r in RATIOS + [1.0]:
        CASES[f"image-{m}-{r}"] = request(prompt(IMAGE), images=[PICTURE], settings={"method": m, "ratio": r})
for m in VIDEO_METHODS:
    for r in RATIOS:
        CASES[f"clip-{m}-{r}"] = request(prompt(VIDEO), videos=[CLIP], settings={"method": m, "ratio": r})
SHAPES = {
    # image then video, video then image: text after each run continues from the right place
    "image-then-video": request(
        prompt(IMAGE, VIDEO),
        images=[(200, 160, 3)],
        videos=[CLIP],
        settings={"method": "random", "ratio": 0.5},
    ),
    "video-then-image": request(
        prompt(VIDEO, IMAGE),
        videos=[CLIP],
        images=[(200, 160, 3)],
        settings={"method": "uniform", "ratio": 0.25},
    ),
    # the same across the turns of a conversation
    "conversation-image-then-video": request(
        f"USER: {IMAGE}What is it?\nASSISTANT: a box\nUSER: {VIDEO}And now?\nASSISTANT:",
        images=[(200, 160, 6)],
        videos=[(112, 112, 6, 7)],
        settings={"method": "tome", "ratio": 0.25},
    ),
    "conversation-video-then-image": request(
        f"USER: {VIDEO}What happens?\nASSISTANT: it moves\nUSER: {IMAGE}And here?\nASSISTANT:",
        videos=[(112, 112, 6, 8)],
        images=[(200, 160, 9)],
        settings={"method": "divprune", "ratio": 0.1},
    ),
    "two-clips-of-different-lengths": request(
        prompt(VIDEO, VIDEO), videos=[(112, 112, 12, 4), CLIP], settings={"method": "evs", "ratio": 0.25}
    ),
    "clip-across-prefill-chunks": request(
        prompt(VIDEO), videos=[LONG_CLIP], settings={"method": "vidcom2", "ratio": 0.5}
    ),
    "clip-uncompressed-across-chunks": request(
        prompt(VIDEO), videos=[LONG_CLIP], settings={"method": "evs", "ratio": 1.0}
    ),
    "two-images": request(
        prompt(IMAGE, IMAGE), images=[PICTURE, (140, 308, 5)], settings={"method": "pitome", "ratio": 0.25}
    ),
}
ALL = {**CASES, **SHAPES}
BAD = {
    "ratio": (request(prompt(IMAGE), images=[PICTURE], settings={"ratio": 1.5}), "ratio"),
    "method": (request(prompt(IMAGE), images=[PICTURE], settings={"method": "nope"}), "nope"),
    "not-served": (request(prompt(IMAGE), images=[PICTURE], settings={"method": "globalcom2"}), "globalcom2"),
    "in-language-model": (request(prompt(IMAGE), images=[PICTURE], settings={"method": "fastv"}), "fastv"),
    "video-method-on-image": (
        request(prompt(IMAGE), images=[PICTURE], settings={"method": "evs", "ratio": 0.25}),
        "videos only",
    ),
    "content-dependent": (
        request(prompt(VIDEO), videos=[CLIP], settings={"method": "vidcom2", "allocation": "paper"}),
        "allocation",
    ),
    "not-an-object": (request(prompt(IMAGE), images=[PICTURE], settings="uniform"), "JSON object"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_qwen_for_vllm(FAMILY, tmp_path_factory.mktemp("vllm") / "tiny-qwen2.5-vl")


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
    """Every case in one batch (images and clips mixed), then the server setting alone, repeats
    (prefix-cache hits), a precomputed embedding and each bad request, one per batch."""
    names = list(ALL)
    server_only = request(prompt(IMAGE), images=[PICTURE])
    batches = [[ALL[n] for n in names], [server_only], [ALL[n] for n in names[:3]]]
    batches += [[{**request(prompt(IMAGE)), "image_embeds": True}]]
    batches += [[req] for req, _ in BAD.values()]
    results = run_vllm(tmp_path_factory.mktemp("run"), engine_spec(checkpoint, batches, cached=True))
    n = len(names)
    return {
        "cases": dict(zip(names, results[:n])),
        "server": results[n],
        "repeats": results[n + 1 : n + 4],
        "embeds": results[n + 4],
        "bad": dict(zip(BAD, results[n + 5 :])),
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
    """Prompt lengths by the count rule, computed here from the geometry alone: an image of
    9 x 7 merged tokens keeps floor(63 r); the clip (4 frames of 20 tokens) keeps
    max(4, floor(80 r)) frame by frame, and max(20, floor(80 r)) with EVS (frame 0 whole)."""
    base = served["cases"]["image-uniform-1.0"]["prompt_len"] - 63
    for r in RATIOS:
        kept = math.floor(80 * r + 1e-9)
        assert served["cases"][f"image-uniform-{r}"]["prompt_len"] == base + math.floor(63 * r + 1e-9)
        assert served["cases"][f"clip-uniform-{r}"]["prompt_len"] == base + max(4, kept)
        assert served["cases"][f"clip-evs-{r}"]["prompt_len"] == base + max(20, kept)


def test_the_comparison_can_tell_methods_apart(served):
    """The checks above have teeth: different methods at one ratio give different log-probabilities."""
    a, b = served["cases"]["image-random-0.1"], served["cases"]["image-uniform-0.1"]
    assert abs(a["logprobs"][0] - b["logprobs"][0]) > 10 * LOGPROB_ATOL


def test_server_setting_applies_without_request_options(served, reference):
    assert_same_generation(served["server"], reference["server"], SERVER)


def test_repeated_requests_hit_the_same_result(served):
    for got, name in zip(served["repeats"], list(ALL)[:3]):
        first = served["cases"][name]
        assert got["tokens"] == first["tokens"] and got["prompt_len"] == first["prompt_len"], name
        assert got["logprobs"] == pytest.approx(first["logprobs"], abs=LOGPROB_ATOL)


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
    picks = ["image-pitome-0.25", "clip-vidcom2-0.25", "video-then-image", "clip-across-prefill-chunks"]
    spec = engine_spec(checkpoint, [[ALL[n] for n in picks]], cached=False)
    for name, got in zip(picks, run_vllm(tmp_path_factory.mktemp("nocache"), spec)):
        want = served["cases"][name]
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], name
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL), name


def test_ratio_one_images_equal_plain_vllm(checkpoint, served, tmp_path_factory):
    """Off, an image goes through vLLM's own Qwen2.5-VL unchanged (positions included: for
    images transformers' rule and vLLM's agree)."""
    picks = ["image-uniform-1.0", "image-pitome-1.0"]
    plain = [{**ALL[n], "mm_processor_kwargs": None} for n in picks]  # the stock processor
    spec = {**engine_spec(checkpoint, [plain], cached=False), "hf_overrides": None}
    for name, got in zip(picks, run_vllm(tmp_path_factory.mktemp("plain"), spec)):
        want = served["cases"][name]
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], name
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL), name
