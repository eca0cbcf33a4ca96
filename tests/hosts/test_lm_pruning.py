"""Pruning inside the language model (fastv, dart, pyramiddrop) on the transformers hosts.

Each host case builds a tiny model with enough decoder layers for the stages, the same model in
eager attention (the test-only reference for FastV's attention row), and processor inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, inputs_for
from vtcompress.budget import keep_count
from vtcompress.flops import decoder_prefill_flops

LAYERS = 4
K = 2


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[..., Any]
    inputs: Callable[[Any, list[tuple[int, int]], list[str] | None], dict]
    newlines: Callable[[Any, dict], list[int]]  # per row: image placeholders that are newlines
    image_token: Callable[[Any], int]
    visual: Callable[[Any, dict, int], torch.Tensor]  # bool [L]: row b's placeholders holding features


def _llava_next_newlines(model, inputs) -> list[int]:
    from vtcompress.integrations.llava_next.layout import AnyResLayout

    cfg = model.config
    return [
        AnyResLayout.for_config(cfg, tuple(int(x) for x in size)).num_newlines("unpadded")
        for size in inputs["image_sizes"]
    ]


@functools.cache
def _llava_next(attn: str):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, processor = build_tiny_llava_next(seed=0, attn_implementation=attn, num_hidden_layers=LAYERS)
    return model.eval(), processor


CASES = [
    Case(
        "llava_next",
        _llava_next,
        lambda processor, sizes, questions=None: inputs_for(processor, sizes, questions),
        _llava_next_newlines,
        lambda model: model.config.image_token_id,
        lambda model, inputs, b: _llava_next_visual(model, inputs, b),
    ),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request):
    c = request.param
    model, processor = c.build("sdpa")
    handle = vtcompress.get_handle(model)
    if handle is not None:
        handle.remove()
    yield c, model, processor
    handle = vtcompress.get_handle(model)
    if handle is not None:
        handle.remove()


def _image_counts(c: Case, model, inputs) -> list[int]:
    placeholders = (inputs["input_ids"] == c.image_token(model)).sum(1).tolist()
    return [p - n for p, n in zip(placeholders, c.newlines(model, inputs))]


def _greedy(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=4, do_sample=False, **kwargs)


SINGLE = [IMAGE_SIZES["letterbox_wide"]]
BATCH = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["tall"]]
QUESTIONS = ["What is in the image?", "Describe it"]


@pytest.mark.parametrize("method", ["fastv"])
def test_ratio_one_is_bit_identical(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    with torch.no_grad():
        reference = model(**inputs).logits
        tokens = _greedy(model, inputs)
        with vtcompress.compressed(model, method, ratio=1.0):
            assert torch.equal(model(**inputs).logits, reference)
            assert torch.equal(_greedy(model, inputs), tokens)


@pytest.mark.parametrize("method", ["fastv"])
def test_layers_from_k_cache_only_the_kept_tokens(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, SINGLE)
    length = inputs["input_ids"].shape[1]
    (n,) = _image_counts(c, model, inputs)
    handle = vtcompress.compress(model, method, ratio=0.25)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    kept = keep_count(n, 0.25)
    lengths = [layer.keys.shape[2] for layer in out.past_key_values.layers]
    assert lengths == [length] * K + [length - n + kept] * (LAYERS - K)
    assert out.logits.shape[1] == length - n + kept
    sample = handle.last_stats.samples[0]
    assert (sample.length_before, sample.length_after) == (length, length - n + kept)
    assert handle.last_stats.images[0].tokens_after == kept
    # Layers before K run at the full length: FastV saves less than dropping as many tokens up front.
    cfg = model.config.text_config
    expected = decoder_prefill_flops(cfg, length, layers=K) + decoder_prefill_flops(
        cfg, length - n + kept, layers=LAYERS - K
    )
    assert sample.prefill_flops_after == pytest.approx(expected)
    assert sample.prefill_flops_after > decoder_prefill_flops(cfg, length - n + kept)


def test_fastv_keeps_the_tokens_the_eager_attention_row_ranks_highest(case):
    c, model, processor = case
    eager, _ = c.build("eager")
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions
    row = attentions[K - 1][:, :, -1].mean(1)  # [B, L]: the last token's attention in layer K-1
    handle = vtcompress.compress(model, "fastv", ratio=0.1)
    with torch.no_grad():
        model(**inputs)
    kept = handle._adapter.lm_pruner.last_kept[0]
    for b, n in enumerate(_image_counts(c, model, inputs)):
        k = keep_count(n, 0.1)
        visual = c.visual(model, inputs, b)
        assert int(visual.sum()) == n
        scores = row[b].masked_fill(~visual, float("-inf"))
        expected = torch.topk(scores, k).indices.sort().values
        assert torch.equal(kept[b].nonzero().squeeze(1), expected)


def _llava_next_visual(model, inputs, b: int) -> torch.Tensor:
    """bool [L]: row b's image placeholders that hold image features, not a newline (LLaVA-NeXT
    packing, written out here independently of the pruner: the base view has no newline, each
    unpadded row of the crop grid ends with one)."""
    from vtcompress.integrations.llava_next.layout import AnyResLayout

    image = inputs["input_ids"][b] == model.config.image_token_id
    positions = image.nonzero().squeeze(1)
    total = positions.numel()
    layout = AnyResLayout.for_config(model.config, tuple(int(x) for x in inputs["image_sizes"][b]))
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    width = right - left
    pattern = [False] * (side * side)
    for _ in range(bottom - top):
        pattern += [False] * width + [True]
    assert len(pattern) == total
    image[positions] = ~torch.tensor(pattern)
    return image


@pytest.mark.parametrize("method", ["fastv"])
def test_greedy_generate_equals_a_forward_loop_with_the_cache(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, SINGLE)
    vtcompress.compress(model, method, ratio=0.25)
    generated = _greedy(model, inputs)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        tokens, mask = [], inputs["attention_mask"]
        for _ in range(4):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(nxt)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            out = model(
                input_ids=nxt, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True
            )
    assert torch.equal(generated[:, inputs["input_ids"].shape[1] :], torch.cat(tokens, dim=1))


def _alone(c, processor, size, question):
    return c.inputs(processor, [size], [question])


@pytest.mark.parametrize("method", ["fastv"])
@pytest.mark.parametrize(
    "mode",
    [
        {},
        {"num_beams": 2},
        {"num_beams": 2, "num_return_sequences": 2},
        {"do_sample": True, "top_k": 1},
        {"do_sample": True, "top_k": 1, "num_return_sequences": 2},
    ],
    ids=["greedy", "beams", "beams-2-returns", "sampling", "sampling-2-returns"],
)
def test_every_generation_mode_gives_each_row_what_it_gets_alone(case, method, mode):
    """A left-padded batch of different images and prompts == each sample alone, in every mode
    (sampling with top_k=1 must also equal greedy)."""
    c, model, processor = case
    vtcompress.compress(model, method, ratio=0.25)
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    kwargs = {"do_sample": False, **mode}
    with torch.no_grad():
        batch = model.generate(**inputs, max_new_tokens=4, **kwargs)
        copies = mode.get("num_return_sequences", 1)
        new = batch[:, inputs["input_ids"].shape[1] :]
        for b, (size, question) in enumerate(zip(BATCH, QUESTIONS)):
            alone = _alone(c, processor, size, question)
            single = model.generate(**alone, max_new_tokens=4, **kwargs)[:, alone["input_ids"].shape[1] :]
            assert torch.equal(new[b * copies : (b + 1) * copies], single)
            if mode.get("do_sample"):
                greedy = model.generate(**alone, max_new_tokens=4, do_sample=False)
                assert torch.equal(single, greedy[:, alone["input_ids"].shape[1] :].expand_as(single))


def test_bad_layers_and_static_caches_are_refused(case):
    c, model, processor = case
    with pytest.raises(ValueError, match="layer must be a decoder layer index >= 1"):
        vtcompress.compress(model, "fastv", layer=0)
    with pytest.raises(ValueError, match=f"stage layers must increase and lie in 1..{LAYERS - 1}"):
        vtcompress.compress(model, "fastv", layer=LAYERS)
    vtcompress.compress(model, "fastv", ratio=0.5)
    inputs = c.inputs(processor, SINGLE)
    with pytest.raises(ValueError, match="use the default DynamicCache"):
        model.generate(**inputs, max_new_tokens=2, cache_implementation="static")


def test_vllm_refuses_in_lm_methods_in_one_line():
    from vtcompress.integrations.vllm.settings import HOST, PROVIDES
    from vtcompress.pipeline import check_applicable
    from vtcompress.registry import make_config

    with pytest.raises(ValueError) as err:
        check_applicable(make_config("fastv"), HOST, PROVIDES, 23, 24)
    message = str(err.value)
    assert "\n" not in message
    assert "inside the language model" in message and "KV layout" in message
