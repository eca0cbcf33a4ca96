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


class LanguageModelCalls:
    """The position ids (and masks) the language model receives, call by call."""

    def __init__(self, model):
        self.calls: list[torch.Tensor] = []
        self.handle = model.model.language_model.register_forward_pre_hook(self.grab, with_kwargs=True)

    def grab(self, module, args, kwargs):
        self.calls.append(kwargs["position_ids"].clone())

    def close(self):
        self.handle.remove()


def expected_positions(model, call, stats) -> list[torch.Tensor]:
    """Per sample, long [3, n]: the uncompressed positions of the tokens that stay, in order."""
    positions, _ = model.model.get_rope_index(
        call["input_ids"],
        call["mm_token_type_ids"],
        image_grid_thw=call["image_grid_thw"],
        attention_mask=call["attention_mask"],
    )
    image_id = model.config.image_token_id
    # (index, token-grid width) of each image in batch order, from the processor's grid
    images = iter(enumerate(int(w) // 2 for w in call["image_grid_thw"][:, 2]))
    out = []
    for b in range(call["input_ids"].shape[0]):
        ids = call["input_ids"][b]
        keep = call["attention_mask"][b].bool() & (ids != image_id)
        placeholders = (ids == image_id).nonzero().flatten().tolist()
        while placeholders:
            index, cols = next(images)
            image = stats.images[index]
            run, placeholders = placeholders[: image.tokens_before], placeholders[image.tokens_before :]
            for row, col in image.views[0].positions:
                keep[run[row * cols + col]] = True
        out.append(positions[:, b, keep])
    return out


def real_columns(positions: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """The last ``n`` columns of sample ``b`` (left padding: the real tokens)."""
    return positions[-3:, b, positions.shape[-1] - n :]


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
