"""Qwen2.5-VL: kept tokens keep their uncompressed 3-D rotary positions, in forward and generate.

The expected positions come from the model's own ``get_rope_index`` on the uncompressed prompt
and from which tokens the stats say were kept; the positions the language model actually
receives are captured with a hook on it.
"""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from tests.conftest import tiny_qwen2_5_vl as tiny
from tests.helpers.mrope import LanguageModelCalls, expected_positions, real_columns

torch.set_num_threads(1)
SERVED = {
    "random": {},
    "uniform": {},
    "pitome": {"metric": "projected"},
    "tome": {"metric": "projected"},
}


@pytest.fixture
def model():
    yield from uncompressed(tiny()[0])


def inputs(images, questions, per_prompt=None):
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    _, processor = tiny()
    per_prompt = per_prompt or [1] * len(questions)
    texts = [prompt(q, n) for q, n in zip(questions, per_prompt)]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def batch():
    """Three images of different grids in two prompts of different lengths (left padding)."""
    images = [make_image(500, 300, 0), make_image(300, 900, 1), make_image(420, 420, 2)]
    return inputs(images, ["What is it?", "Where are the red shapes in these two pictures?"], [1, 2])


@torch.no_grad()
@pytest.mark.parametrize("method", sorted(SERVED))
def test_forward_keeps_uncompressed_positions(model, method):
    call = batch()
    handle = vtc.compress(model, method, ratio=0.3, **SERVED[method])
    spy = LanguageModelCalls(model)
    try:
        model(**call)
    finally:
        spy.close()
    (got,) = spy.calls
    assert got.shape[0] == 3  # forward gets the three M-RoPE rows, as the stock forward computes them
    expected = expected_positions(model, call, handle.last_stats)
    assert [e.shape[1] for e in expected] == [s.length_after for s in handle.last_stats.samples]
    for b, want in enumerate(expected):
        assert torch.equal(real_columns(got, b, want.shape[1]), want)
    # a compression that keeps something from each image really dropped tokens
    assert all(im.tokens_after < im.tokens_before for im in handle.last_stats.images)


@torch.no_grad()
@pytest.mark.parametrize("method", ["uniform", "tome"])
def test_generate_keeps_uncompressed_positions_and_continues_after_them(model, method):
    call = batch()
    handle = vtc.compress(model, method, ratio=0.3, **SERVED[method])
    spy = LanguageModelCalls(model)
    try:
        model.generate(**call, max_new_tokens=3, do_sample=False)
    finally:
        spy.close()
    prefill, *steps = spy.calls
    assert prefill.shape[0] == 4 and len(steps) == 2
    expected = expected_positions(model, call, handle.last_stats)
    for b, want in enumerate(expected):
        assert torch.equal(real_columns(prefill, b, want.shape[1]), want)
        # New tokens continue from the uncompressed prompt's largest position, one a step.
        top = want.max()
        for j, step in enumerate(steps):
            assert step[1:, b, 0].tolist() == [int(top) + 1 + j] * 3


@torch.no_grad()
def test_ratio_one_positions_equal_stock(model):
    call = batch()
    spy = LanguageModelCalls(model)
    try:
        model(**call)
        stock = spy.calls.pop()
        with vtc.compressed(model, "uniform", ratio=1.0):
            model(**call)
        assert torch.equal(spy.calls.pop(), stock)
    finally:
        spy.close()


@torch.no_grad()
def test_forward_continues_from_the_cache(model):
    """A manual decode loop on the cache (no position ids) continues after the kept prompt."""
    call = inputs([make_image(500, 300, 0)], ["What is it?"])
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
def test_batched_greedy_generate_equals_a_greedy_forward_loop(model, method):
    """Left padding, mixed sizes, two images in one prompt: generate's carried positions equal
    the positions a forward recomputes from the uncompressed prompt at every step."""
    call = batch()
    vtc.compress(model, method, ratio=0.3, **SERVED[method])
    out = model.generate(**call, max_new_tokens=3, do_sample=False)
    step = dict(call)
    for _ in range(3):
        nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
        step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
        step["attention_mask"] = torch.cat([step["attention_mask"], torch.ones_like(nxt)], 1)
        step["mm_token_type_ids"] = torch.cat([step["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
    assert torch.equal(out, step["input_ids"])
