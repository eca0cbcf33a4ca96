"""vLLM's ``LLM.generate`` on the compressed LLaVA-NeXT equals transformers + vtcompress.

Every engine runs in a process of its own (tests/helpers/vllm_runner.py) on the same tiny float32
weights the transformers reference loads. One engine serves every method and ratio through
per-request ``mm_processor_kwargs``; the others are plain vLLM and the compressed model with
prefix caching and chunked prefill switched off.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_common import (  # noqa: E402
    ARCH,
    METHODS,
    PROMPT,
    RATIOS,
    SIZES,
    hf_generate,
    rule_count,
    run_vllm,
    text_tokens,
    until_eos,
)
from vtcompress.integrations.vllm.tiny import save_tiny_for_vllm  # noqa: E402

SERVER = {"method": "globalcom2", "ratio": 0.25}  # the engine's own setting (--hf-overrides)
COMPRESSED = [(m, r, size, seed) for m in METHODS for r in RATIOS for seed, size in enumerate(SIZES)]
FULL = [("globalcom2", 1.0, size, seed) for seed, size in enumerate(SIZES)]
LOGPROB_ATOL = 1e-4  # float32, two runtimes, the same kept tokens: log-probabilities this close
# Where the log-probabilities are not compared, only the tokens and counts:
# * merging (pitome, tome) pairs near-identical background tokens; 1e-6 noise on the pixels
#   changes what merges in transformers alone, so two runtimes' rounding does too;
# * one selection case whose top-k cutoff is a near-tie: 1e-6 relative noise on the vision
#   weights flips one kept token of crop (0, 1) in transformers alone.
MERGING = {"pitome", "tome"}
NEAR_TIES = {("globalcom2", 0.25, (500, 300))}


def request(method, ratio, size, seed, per_request=True):
    options = {"vtcompress": {"method": method, "ratio": ratio}} if per_request else None
    return {"size": list(size), "seed": seed, "prompt": PROMPT, "mm_processor_kwargs": options}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_for_vllm(tmp_path_factory.mktemp("vllm") / "tiny-llava-next")


@pytest.fixture(scope="module")
def compressed(checkpoint, tmp_path_factory):
    """Every case on one engine (prefix caching on; a 1024-token step budget chunks the
    longer prompts), plus the server setting alone and each image asked for twice."""
    requests = [request(*case) for case in COMPRESSED + FULL]
    requests += [request(*case, per_request=False) for case in FULL]  # server setting
    requests += [request(*case) for case in COMPRESSED[:3]]  # repeats: prefix-cache hits
    spec = {
        "model": str(checkpoint),
        "hf_overrides": {"architectures": [ARCH], "vtcompress": SERVER},
        "engine": {
            "enable_prefix_caching": True,
            "enable_chunked_prefill": True,
            "max_num_batched_tokens": 1024,
        },
        "requests": requests,
    }
    results = run_vllm(tmp_path_factory.mktemp("run"), spec)
    n, f = len(COMPRESSED), len(FULL)
    return {
        "compressed": results[:n],
        "full": results[n : n + f],
        "server": results[n + f : n + 2 * f],
        "repeats": results[n + 2 * f :],
    }


@pytest.fixture(scope="module")
def reference(checkpoint):
    return hf_generate(
        checkpoint, COMPRESSED + [(SERVER["method"], SERVER["ratio"], s, i) for i, s in enumerate(SIZES)]
    )


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def assert_same_generation(got, want, label, logprobs=True):
    assert until_eos(got["tokens"]) == want["tokens"], label
    if not logprobs:
        return
    assert len(got["logprobs"]) >= len(want["logprobs"]), label
    for a, b in zip(got["logprobs"], want["logprobs"]):
        assert math.isclose(a, b, abs_tol=LOGPROB_ATOL), (label, got["logprobs"], want["logprobs"])


@pytest.mark.parametrize(
    "index", range(len(COMPRESSED)), ids=[f"{m}-{r}-{w}x{h}" for m, r, (w, h), _ in COMPRESSED]
)
def test_greedy_tokens_equal_transformers(compressed, reference, index):
    method, ratio, size, _ = case = COMPRESSED[index]
    exact = method not in MERGING and (method, ratio, size) not in NEAR_TIES
    assert_same_generation(compressed["compressed"][index], reference[index], case, logprobs=exact)


def test_prompt_lengths_follow_the_rule(compressed, reference, tokenizer):
    base = text_tokens(tokenizer)
    for case, got, want in zip(COMPRESSED, compressed["compressed"], reference):
        method, ratio, (w, h), _ = case
        assert got["prompt_len"] == base + rule_count(w, h, ratio), case
        assert got["prompt_len"] == want["prompt_len"], case  # what transformers + vtcompress ran
    for got, (_, _, (w, h), _) in zip(compressed["full"], FULL):
        assert got["prompt_len"] == base + rule_count(w, h, 1.0)


def test_server_setting_applies_without_request_options(compressed, reference):
    server_ref = reference[len(COMPRESSED) :]
    for got, want, (_, _, size, _) in zip(compressed["server"], server_ref, FULL):
        exact = (SERVER["method"], SERVER["ratio"], size) not in NEAR_TIES
        assert_same_generation(got, want, (SERVER, size), logprobs=exact)


def test_repeated_images_hit_the_same_result(compressed):
    # The same tokens, prompt length and first log-probability (the prefill, a prefix-cache hit);
    # later decode steps run in another batch than the first request's, and vLLM's CPU kernels are
    # not batch-invariant in the last bits, so those log-probabilities agree to LOGPROB_ATOL.
    for got, first in zip(compressed["repeats"], compressed["compressed"][:3]):
        assert got["tokens"] == first["tokens"] and got["prompt_len"] == first["prompt_len"]
        assert got["logprobs"][0] == first["logprobs"][0]
        assert got["logprobs"] == pytest.approx(first["logprobs"], abs=LOGPROB_ATOL)


def test_the_comparison_can_tell_methods_apart(compressed):
    """The check above has teeth: at r = 0.1, different methods give different log-probabilities."""
    by_case = {case[:2] + (case[3],): res for case, res in zip(COMPRESSED, compressed["compressed"])}
    a, b = by_case[("globalcom2", 0.1, 2)], by_case[("uniform", 0.1, 2)]
    assert abs(a["logprobs"][0] - b["logprobs"][0]) > 10 * LOGPROB_ATOL


def test_ratio_one_equals_plain_vllm(checkpoint, compressed, tmp_path_factory):
    spec = {
        "model": str(checkpoint),
        "hf_overrides": None,  # vLLM's own LLaVA-NeXT
        "engine": {
            "enable_prefix_caching": False,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": 4096,
        },
        "requests": [request(*case, per_request=False) for case in FULL],
    }
    plain = run_vllm(tmp_path_factory.mktemp("plain"), spec)
    for got, want in zip(compressed["full"], plain):
        assert got["tokens"] == want["tokens"]
        assert got["prompt_len"] == want["prompt_len"]
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL)


def test_caching_and_chunking_off_give_the_same_tokens(checkpoint, compressed, tmp_path_factory):
    picks = [
        i for i, (m, r, _, _) in enumerate(COMPRESSED) if (m, r) in {("tokencorr", 0.1), ("pitome", 0.25)}
    ]
    spec = {
        "model": str(checkpoint),
        "hf_overrides": {"architectures": [ARCH], "vtcompress": SERVER},
        "engine": {
            "enable_prefix_caching": False,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": 4096,
        },
        "requests": [request(*COMPRESSED[i]) for i in picks],
    }
    results = run_vllm(tmp_path_factory.mktemp("nocache"), spec)
    for got, i in zip(results, picks):
        want = compressed["compressed"][i]
        assert got["tokens"] == want["tokens"] and got["prompt_len"] == want["prompt_len"], COMPRESSED[i]
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=LOGPROB_ATOL)
