"""Qwen3-VL: kept tokens keep their uncompressed 3-D rotary positions, in forward and generate.

The expected positions come from the model's own ``get_rope_index`` on the uncompressed prompt
and from which tokens the stats say were kept; the positions the language model actually
receives are captured with a hook on it.
"""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from tests.helpers.mrope import LanguageModelCalls, expected_positions, real_columns
from vtcompress.integrations.qwen3_vl.prompt import prompt

torch.set_num_threads(1)
METHODS = ["random", "uniform", "pitome", "tome"]


@pytest.fixture(scope="module")
def tiny():
    from vtcompress.integrations.qwen3_vl.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(seed=0)


@pytest.fixture
def model(tiny):
    yield from uncompressed(tiny[0])


def batch(processor):
    """Three images of different grids (one taller than wide) in two prompts of different lengths
    (left padding)."""
    images = [make_image(500, 300, 0), make_image(300, 900, 1), make_image(420, 420, 2)]
    texts = [prompt("What is it?", 1), prompt("Where are the red shapes in these two pictures?", 2)]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def spy_on(model, run):
    spy = LanguageModelCalls(model)
    try:
        run()
    finally:
        spy.close()
    return spy.calls


@torch.no_grad()
@pytest.mark.parametrize("method", METHODS)
def test_forward_keeps_uncompressed_positions(model, tiny, method):
    call = batch(tiny[1])
    handle = vtc.compress(model, method, ratio=0.3)
    (got,) = spy_on(model, lambda: model(**call))
    assert got.shape[0] == 3  # forward gets the three M-RoPE rows, as the stock forward computes them
    expected = expected_positions(model, call, handle.last_stats)
    assert [e.shape[1] for e in expected] == [s.length_after for s in handle.last_stats.samples]
    for b, want in enumerate(expected):
        assert torch.equal(real_columns(got, b, want.shape[1]), want)
    # a compression that keeps something from each image really dropped tokens
    assert all(im.tokens_after < im.tokens_before for im in handle.last_stats.images)


@torch.no_grad()
def test_text_after_an_image_continues_from_the_uncompressed_maximum(model, tiny):
    """Sample 0 is ``USER: <vs>`` + a 9 x 16 image + ``<ve>What is it?...``: the image's tokens sit
    at t = s, h = s + row, w = s + col (s = the start), the text after it from s + 16 on."""
    call = batch(tiny[1])
    vtc.compress(model, "uniform", ratio=0.3)
    (got,) = spy_on(model, lambda: model(**call))
    ids = call["input_ids"][0, call["attention_mask"][0].bool()]
    start = int((ids == model.config.vision_start_token_id).nonzero()[0]) + 1
    n_after = len(ids) - int((ids == model.config.vision_end_token_id).nonzero()[0])
    after = real_columns(got, 0, n_after)
    assert after[:, 0].tolist() == [start + 16] * 3  # <|vision_end|>
    assert after[0].tolist() == list(range(start + 16, start + 16 + n_after))


@torch.no_grad()
@pytest.mark.parametrize("method", ["uniform", "tome"])
def test_generate_keeps_uncompressed_positions_and_continues_after_them(model, tiny, method):
    call = batch(tiny[1])
    handle = vtc.compress(model, method, ratio=0.3)
    prefill, *steps = spy_on(model, lambda: model.generate(**call, max_new_tokens=3, do_sample=False))
    assert prefill.shape[0] == 4 and len(steps) == 2
    expected = expected_positions(model, call, handle.last_stats)
    for b, want in enumerate(expected):
        assert torch.equal(real_columns(prefill, b, want.shape[1]), want)
        top = want.max()  # new tokens continue from the uncompressed prompt's largest position
        for j, step in enumerate(steps):
            assert step[1:, b, 0].tolist() == [int(top) + 1 + j] * 3


@torch.no_grad()
def test_ratio_one_positions_equal_stock(model, tiny):
    call = batch(tiny[1])
    (stock,) = spy_on(model, lambda: model(**call))
    with vtc.compressed(model, "uniform", ratio=1.0):
        (got,) = spy_on(model, lambda: model(**call))
    assert torch.equal(got, stock)


@torch.no_grad()
def test_forward_continues_from_the_cache(model, tiny):
    """A manual decode loop on the cache (no position ids) continues after the kept prompt."""
    call = dict(tiny[1](images=[make_image(500, 300, 0)], text=[prompt("What is it?")], return_tensors="pt"))
    vtc.compress(model, "uniform", ratio=0.3)
    first = model(**call, use_cache=True)
    nxt = first.logits[:, -1].argmax(-1, keepdim=True)
    step = model(input_ids=nxt, cache=first.cache, use_cache=True).logits[:, -1]
    whole = dict(call)
    whole["input_ids"] = torch.cat([call["input_ids"], nxt], 1)
    whole["attention_mask"] = torch.cat([call["attention_mask"], torch.ones_like(nxt)], 1)
    whole["mm_token_type_ids"] = torch.cat([call["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
    torch.testing.assert_close(step, model(**whole).logits[:, -1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("method", ["uniform", "pitome"])
def test_batched_greedy_generate_equals_a_greedy_forward_loop(model, tiny, method):
    """Left padding, mixed sizes, two images in one prompt: generate's carried positions (and its
    DeepStack features, expanded per sample) equal what a forward recomputes at every step."""
    call = batch(tiny[1])
    vtc.compress(model, method, ratio=0.3)
    out = model.generate(**call, max_new_tokens=3, do_sample=False)
    step = dict(call)
    for _ in range(3):
        nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
        step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
        step["attention_mask"] = torch.cat([step["attention_mask"], torch.ones_like(nxt)], 1)
        step["mm_token_type_ids"] = torch.cat([step["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
    assert torch.equal(out, step["input_ids"])
