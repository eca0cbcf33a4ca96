"""vLLM's ``LLM.generate`` on the compressed LLaVA-OneVision equals transformers + vtcompress.

Every engine runs in a process of its own (tests/helpers/vllm_onevision_runner.py) on the same tiny
float32 weights the transformers reference (the OneVision host) loads. One engine serves every
served method and ratio on images and clips through per-request ``mm_processor_kwargs``, in one
batch that mixes image, clip and image+clip requests (prefix caching on; a 1024-token step
budget chunks the prefills), then refuses the bad requests one by one. The others: plain vLLM,
and the compressed model with prefix caching and chunked prefill off.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_common import until_eos  # noqa: E402
from tests.helpers.vllm_onevision import ARCH, hf_generate, prompt, request, run_vllm  # noqa: E402
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout  # noqa: E402
from vtcompress.integrations.vllm.onevision_settings import ServedOneVision  # noqa: E402
from vtcompress.integrations.vllm.onevision_tiny import save_tiny_onevision_for_vllm  # noqa: E402
from vtcompress.registry import make_config  # noqa: E402
from vtcompress.served import served_methods  # noqa: E402

pytestmark = pytest.mark.slow

SERVER = {"method": "globalcom2", "ratio": 0.25}  # the engine's own setting (--hf-overrides)
SERVED = served_methods(ServedOneVision)
IMAGE_METHODS = [m for m in SERVED if "image" in make_config(m).media]
VIDEO_METHODS = [m for m in SERVED if "image" not in make_config(m).media]
RATIOS = [0.5, 0.25, 0.1]
IMAGE = [500, 300, 0]  # (w, h, seed): a 1x2 crop grid, letterboxed, not shrunk
SHRUNK = [1600, 800, 1]  # anyres_max_9 shrinks its 3x5 crop map: tiles of the shrunk map
CLIP = [4, 320, 240, 2]  # (frames, w, h, seed)
FRAMES_PER_CLIP_TOKENS = 14 * 14  # 27x27 SigLIP tokens pooled 2x2


def case(method, ratio, images=(), videos=()):
    return {"method": method, "ratio": ratio, "images": list(images), "videos": list(videos)}


CASES = (
    [case(m, r, images=[IMAGE]) for m in IMAGE_METHODS for r in RATIOS]
    + [case(m, 0.25, images=[SHRUNK]) for m in IMAGE_METHODS]
    + [case(m, r, videos=[CLIP]) for m in VIDEO_METHODS for r in RATIOS]
    + [case(m, 0.25, videos=[CLIP]) for m in ("uniform", "divprune")]  # image methods, frame by frame
    + [case(m, r, images=[IMAGE], videos=[CLIP]) for m, r in (("uniform", 0.25), ("globalcom2", 0.5))]
)
FULL = [
    case("uniform", 1.0, images=[IMAGE]),
    case("uniform", 1.0, videos=[CLIP]),
    case("uniform", 1.0, [IMAGE], [CLIP]),
]
SERVER_CASES = [case(SERVER["method"], SERVER["ratio"], images=[IMAGE])]
LOGPROB_ATOL = 1e-4  # float32, two runtimes, the same kept tokens: log-probabilities this close
# Merging (pitome, tome) pairs near-identical tokens: two runtimes' rounding can change what
# merges, so only their tokens and counts are compared (as on LLaVA-NeXT).
MERGING = {"pitome", "tome"}


def label(c):
    media = "+".join(["image"] * len(c["images"]) + ["clip"] * len(c["videos"]))
    shrunk = "-shrunk" if SHRUNK in c["images"] else ""
    return f"{c['method']}-{c['ratio']}-{media}{shrunk}"


def refused(options, images=(IMAGE,), videos=()):
    return {"prompt": prompt(len(images), len(videos)), "images": list(images), "videos": list(videos),
            "mm_processor_kwargs": {"vtcompress": options}}  # fmt: skip


# (request options, media, words the one-line error must contain)
REFUSALS = [
    ({"ratio": 1.5}, {}, ["mm_processor_kwargs.vtcompress", "ratio"]),
    ({"method": "no-such-method"}, {}, ["mm_processor_kwargs.vtcompress", "no-such-method"]),
    ({"method": "fastervlm"}, {}, ["mm_processor_kwargs.vtcompress", "fastervlm", "[CLS]"]),
    ({"method": "fastv"}, {}, ["mm_processor_kwargs.vtcompress", "fastv"]),
    ({"method": "vidcom2", "ratio": 0.25}, {}, ["mm_processor_kwargs.vtcompress", "vidcom2", "videos only"]),
    (
        {"method": "vidcom2", "allocation": "paper"},
        {"images": [], "videos": [CLIP]},
        ["mm_processor_kwargs.vtcompress", "allocation='paper'"],
    ),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_onevision_for_vllm(tmp_path_factory.mktemp("vllm") / "tiny-llava-onevision")


def engine(enabled: bool) -> dict:
    budget = 1024 if enabled else 8192
    return {
        "enable_prefix_caching": enabled,
        "enable_chunked_prefill": enabled,
        "max_num_batched_tokens": budget,
    }


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):
    """Every case in one batch, the server setting alone, three repeats (prefix-cache hits);
    then the refusals one by one."""
    requests = [request(c) for c in CASES + FULL]
    requests += [request(c, per_request=False) for c in SERVER_CASES]
    requests += [request(c) for c in CASES[:3]]
    spec = {
        "model": str(checkpoint),
        "hf_overrides": {"architectures": [ARCH], "vtcompress": SERVER},
        "engine": engine(True),
        "requests": requests,
        "refused": [refused(o, **media) for o, media, _ in REFUSALS],
    }
    results = run_vllm(tmp_path_factory.mktemp("run"), spec)
    n, f, s = len(CASES), len(FULL), len(SERVER_CASES)
    return {
        "cases": results[:n],
        "full": results[n : n + f],
        "server": results[n + f : n + f + s],
        "repeats": results[n + f + s : n + f + s + 3],
        "refused": results[n + f + s + 3 :],
    }


@pytest.fixture(scope="module")
def reference(checkpoint):
    return hf_generate(checkpoint, CASES + FULL + SERVER_CASES)


def assert_same_generation(got, want, name, logprobs=True):
    assert "error" not in got, (name, got)
    assert until_eos(got["tokens"]) == want["tokens"], name
    assert got["prompt_len"] == want["prompt_len"], name
    if logprobs:
        for a, b in zip(got["logprobs"], want["logprobs"]):
            assert math.isclose(a, b, abs_tol=LOGPROB_ATOL), (name, got["logprobs"], want["logprobs"])


def test_every_served_method_is_covered():
    assert set(IMAGE_METHODS) == {
        "divprune",
        "downsample",
        "globalcom2",
        "pitome",
        "random",
        "tome",
        "uniform",
    }
    assert set(VIDEO_METHODS) == {"dycoke_ttm", "evs", "vidcom2", "visionzip_video"}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[label(c) for c in CASES])
def test_greedy_tokens_equal_transformers(served, reference, index):
    c = CASES[index]
    assert_same_generation(served["cases"][index], reference[index], label(c), c["method"] not in MERGING)


def clip_rule(method: str, ratio: float, frames: int, p: int = FRAMES_PER_CLIP_TOKENS) -> int:
    """Tokens a clip keeps by each method's documented count (docs/video.md), written out here."""
    n = frames * p
    if ratio == 1.0:
        return n
    if method == "evs":  # frame 0 whole
        return max(p, keep_count(n, ratio))
    if method == "visionzip_video":  # int(r P) a frame
        return frames * max(1, int(p * ratio))
    if method == "dycoke_ttm":  # an even clip: pairs, the second frame of each pruned to int(r P)
        assert frames % 2 == 0 and frames <= 4
        return frames // 2 * p + frames // 2 * int(p * ratio)
    return max(frames, keep_count(n, ratio))  # vidcom2's exact mode; image methods frame by frame


def rule_count(c) -> int:
    """Visual placeholders of a case: floor(r N) + newlines per image (docs/budget.md, from the
    transformers host's layout); the method's clip count + 1 newline per clip."""
    total = 0
    for w, h, _ in c["images"]:
        layout = OneVisionLayout.for_image((h, w))
        total += keep_count(layout.num_tokens(), c["ratio"]) + layout.num_newlines("unpadded")
    for frames, *_ in c["videos"]:
        total += clip_rule(c["method"], c["ratio"], frames) + 1
    return total


def test_prompt_lengths_follow_the_rule(served, checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    for c, got in zip(CASES + FULL, served["cases"] + served["full"]):
        text = len(tokenizer(prompt(len(c["images"]), len(c["videos"])))["input_ids"])
        media = len(c["images"]) + len(c["videos"])  # each <image> / <video> token is replaced
        assert got["prompt_len"] == text - media + rule_count(c), label(c)


def test_ratio_one_and_server_setting_equal_transformers(served, reference):
    n = len(CASES)
    for c, got, want in zip(FULL, served["full"], reference[n : n + len(FULL)]):
        assert_same_generation(got, want, label(c))
    for c, got, want in zip(SERVER_CASES, served["server"], reference[n + len(FULL) :]):
        assert_same_generation(got, want, ("server", label(c)))


def test_repeated_requests_hit_the_same_result(served):
    for got, first in zip(served["repeats"], served["cases"][:3]):
        assert got["tokens"] == first["tokens"] and got["prompt_len"] == first["prompt_len"]
        assert got["logprobs"] == pytest.approx(first["logprobs"], abs=LOGPROB_ATOL)


def test_the_comparison_can_tell_methods_apart(served):
    """The checks above have teeth: at r = 0.1 two methods give different log-probabilities."""
    by = {label(c): r for c, r in zip(CASES, served["cases"])}
    for a, b in (("globalcom2-0.1-image", "uniform-0.1-image"), ("vidcom2-0.1-clip", "evs-0.1-clip")):
        assert abs(by[a]["logprobs"][0] - by[b]["logprobs"][0]) > 10 * LOGPROB_ATOL, (a, b)


@pytest.mark.parametrize("index", range(len(REFUSALS)), ids=[str(o) for o, _, _ in REFUSALS])
def test_bad_requests_are_refused_naming_the_field(served, index):
    got = served["refused"][index]
    assert "error" in got, got
    assert got["error"].startswith("ValueError"), got  # vllm serve answers a ValueError with 400
    for word in REFUSALS[index][2]:
        assert word in got["error"], (word, got["error"])


EMBEDS = {"prompt": prompt(1), "image_embeds": [100, 128, 7], "mm_processor_kwargs": None}  # 128: text width


@pytest.fixture(scope="module")
def plain(checkpoint, tmp_path_factory):
    """vLLM's own OneVision: the ratio-1.0 cases and precomputed image embeddings."""
    spec = {
        "model": str(checkpoint),
        "hf_overrides": None,
        "engine": {**engine(False), "enable_mm_embeds": True},
    }
    spec["requests"] = [request(c, per_request=False) for c in FULL] + [EMBEDS]
    return run_vllm(tmp_path_factory.mktemp("plain"), spec)


@pytest.fixture(scope="module")
def uncached(checkpoint, tmp_path_factory):
    """The compressed model with prefix caching and chunked prefill off: PICKS and the embeddings."""
    picks = [i for i, c in enumerate(CASES) if label(c) in PICKS]
    assert len(picks) == len(PICKS)
    spec = {
        "model": str(checkpoint),
        "hf_overrides": {"architectures": [ARCH], "vtcompress": SERVER},
        "engine": {**engine(False), "enable_mm_embeds": True},
        "requests": [request(CASES[i]) for i in picks] + [EMBEDS],
    }
    return dict(zip(picks + ["embeds"], run_vllm(tmp_path_factory.mktemp("nocache"), spec)))


PICKS = {"globalcom2-0.1-image", "divprune-0.25-image-shrunk", "vidcom2-0.25-clip", "uniform-0.25-image+clip"}


def test_ratio_one_equals_plain_vllm(served, plain):
    for c, got, want in zip(FULL, served["full"], plain):
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], label(c)
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL), label(c)


def test_caching_and_chunking_off_give_the_same_tokens(served, uncached):
    for i, got in uncached.items():
        if i == "embeds":
            continue
        want = served["cases"][i]
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], label(CASES[i])
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL), label(CASES[i])


def test_precomputed_embeddings_are_used_as_given(plain, uncached, checkpoint):
    """A compressed server takes image_embeds at their own length, untouched: as plain vLLM does."""
    from transformers import AutoTokenizer

    text = len(AutoTokenizer.from_pretrained(checkpoint)(prompt(1))["input_ids"])
    got, want = uncached["embeds"], plain[-1]
    assert got["prompt_len"] == want["prompt_len"] == text - 1 + EMBEDS["image_embeds"][0]
    assert got["tokens"] == want["tokens"]
    assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL)
