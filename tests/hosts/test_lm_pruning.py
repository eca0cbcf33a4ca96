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
from tests.conftest import IMAGE_SIZES, make_image, prompt
from tests.helpers.padding import right_padded
from vtcompress.budget import keep_count
from vtcompress.flops import decoder_prefill_flops

LAYERS = 4
K = 2
METHODS = ["fastv", "dart", "pyramiddrop"]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str], tuple[Any, Any]]  # attention implementation -> (model, processor)
    inputs: Callable[[Any, list[Any], list[str]], dict]  # (processor, images, questions)
    layers: int  # decoder layers of the tiny model

    @property
    def k(self) -> int:
        return min(K, self.layers - 1)

    def options(self, method: str) -> dict:
        """Stage settings scaled down to the tiny model's depth."""
        if method == "pyramiddrop":
            return {"layers": tuple(range(1, self.layers))}
        return {"layer": self.k}


def visual_placeholders(model, inputs) -> torch.Tensor:
    """bool [B, L]: the image placeholders that hold image features, not a newline, found with
    the stock model's own image features (one image per row): a newline is the row equal to the
    model's ``image_newline``."""
    image = inputs["input_ids"] == model.config.image_token_id
    newline = getattr(model.model, "image_newline", None)
    if newline is None:
        return image
    keys = ("pixel_values", "image_sizes", "batch_num_images")
    with torch.no_grad():
        features = model.model.get_image_features(**{k: inputs[k] for k in keys if k in inputs}).pooler_output
    visual = image.clone()
    for b, feats in enumerate(features):
        positions = image[b].nonzero().squeeze(1)
        assert positions.numel() == feats.shape[0]
        visual[b, positions] = ~(feats == newline).all(-1)
    return visual


@functools.cache
def _llava_next(attn: str):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, processor = build_tiny_llava_next(seed=0, attn_implementation=attn, num_hidden_layers=LAYERS)
    return model.eval(), processor


@functools.cache
def _onevision(attn: str):
    from vtcompress.integrations.llava_onevision.tiny import build_tiny_onevision

    model, processor = build_tiny_onevision(seed=0, attn_implementation=attn)
    return model.eval(), processor


@functools.cache
def _qwen(attn: str):
    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0, attn_implementation=attn)
    return model.eval(), processor


ONEVISION_PROMPT = "<|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _llava_next_inputs(processor, images, questions):
    texts = [prompt(q) for q in questions]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def _onevision_inputs(processor, images, questions):
    texts = [ONEVISION_PROMPT.format(question=q) for q in questions]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def _qwen_inputs(processor, images, questions):
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt as qwen_prompt

    texts = [qwen_prompt(q) for q in questions]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


CASES = [
    Case("llava_next", _llava_next, _llava_next_inputs, LAYERS),
    Case("onevision", _onevision, _onevision_inputs, 2),
    Case("qwen2_5_vl", _qwen, _qwen_inputs, 2),
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


def _image_counts(model, inputs) -> list[int]:
    return visual_placeholders(model, inputs).sum(1).tolist()


def _greedy(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=4, do_sample=False, **kwargs)


# Two pictures of different sizes (different token counts) and prompts of different lengths.
BATCH = [make_image(*IMAGE_SIZES["letterbox_wide"], seed=0), make_image(*IMAGE_SIZES["tall"], seed=1)]
SINGLE = BATCH[:1]
QUESTIONS = ["What is in the image?", "Describe it"]


def _compress(c: Case, model, method: str, ratio: float):
    return vtcompress.compress(model, method, ratio=ratio, **c.options(method))


@pytest.mark.parametrize("method", METHODS)
def test_ratio_one_is_bit_identical(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    with torch.no_grad():
        reference = model(**inputs).logits
        tokens = _greedy(model, inputs)
        _compress(c, model, method, 1.0)
        assert torch.equal(model(**inputs).logits, reference)
        assert torch.equal(_greedy(model, inputs), tokens)


@pytest.mark.parametrize("method", METHODS)
def test_layers_from_k_cache_only_the_kept_tokens(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, SINGLE, QUESTIONS[:1])
    length = inputs["input_ids"].shape[1]
    (n,) = _image_counts(model, inputs)
    handle = _compress(c, model, method, 0.25)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    kept = keep_count(n, handle.config.stages()[-1][1])
    short = length - n + kept
    k = handle.config.stages()[0][0]
    lengths = [layer.keys.shape[2] for layer in out.past_key_values.layers]
    assert lengths[:k] == [length] * k
    assert lengths[-1] == short and all(short <= x < length for x in lengths[k:])
    assert out.logits.shape[1] == lengths[-1]
    sample = handle.last_stats.samples[0]
    assert (sample.length_before, sample.length_after) == (length, short)
    assert handle.last_stats.images[0].tokens_after == kept
    # Layers before K run at the full length: pruning there saves less than dropping as many
    # tokens before the language model.
    cfg = model.config.text_config
    expected = sum(decoder_prefill_flops(cfg, x, layers=1) for x in lengths)
    assert sample.prefill_flops_after == pytest.approx(expected)
    assert sample.prefill_flops_after > decoder_prefill_flops(cfg, short)


@pytest.mark.parametrize("method", ["fastv", "pyramiddrop"])
def test_kept_tokens_are_those_the_eager_attention_row_ranks_highest(case, method):
    """FastV keeps the image tokens the last token attends to most in layer K-1, PyramidDrop's
    first stage those it attends to most in layer K (its own projections on its input): the
    reference is the stock model in eager attention with output_attentions."""
    c, model, processor = case
    eager, _ = c.build("eager")
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    visual = visual_placeholders(model, inputs)
    handle = _compress(c, model, method, 0.1)
    k, fraction = handle.config.stages()[0]
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions
        model(**inputs)
    scored = k - 1 if method == "fastv" else k
    row = attentions[scored][:, :, -1].mean(1)  # [B, L]: the last token's attention, head mean
    kept = handle._host.lm_pruner.last_kept[0]
    for b in range(len(BATCH)):
        n = keep_count(int(visual[b].sum()), fraction)
        expected = torch.topk(row[b].masked_fill(~visual[b], float("-inf")), n).indices.sort().values
        assert torch.equal(kept[b].nonzero().squeeze(1), expected)


@pytest.mark.parametrize("method", METHODS)
def test_greedy_generate_equals_a_forward_loop_with_the_cache(case, method):
    c, model, processor = case
    inputs = c.inputs(processor, SINGLE, QUESTIONS[:1])
    _compress(c, model, method, 0.25)
    generated = _greedy(model, inputs)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        tokens = []
        for _ in range(4):  # one unpadded row: no mask needed (Qwen2.5-VL then continues its positions)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(nxt)
            out = model(input_ids=nxt, cache=out.past_key_values, use_cache=True)
    assert torch.equal(generated[:, inputs["input_ids"].shape[1] :], torch.cat(tokens, dim=1))


@pytest.mark.parametrize("method", METHODS)
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
    _compress(c, model, method, 0.25)
    inputs = c.inputs(processor, BATCH, QUESTIONS)
    kwargs = {"do_sample": False, **mode}
    copies = mode.get("num_return_sequences", 1)
    with torch.no_grad():
        new = model.generate(**inputs, max_new_tokens=4, **kwargs)[:, inputs["input_ids"].shape[1] :]
        for b, (image, question) in enumerate(zip(BATCH, QUESTIONS)):
            alone = c.inputs(processor, [image], [question])
            start = alone["input_ids"].shape[1]
            single = model.generate(**alone, max_new_tokens=4, **kwargs)[:, start:]
            assert torch.equal(new[b * copies : (b + 1) * copies], single)
            if mode.get("do_sample"):
                greedy = model.generate(**alone, max_new_tokens=4, do_sample=False)[:, start:]
                assert torch.equal(single, greedy.expand_as(single))


@pytest.mark.parametrize("method", METHODS)
def test_a_right_padded_batch_keeps_what_each_row_keeps_alone(case, method):
    """Each row is scored by its own last real token, not by the padding after it."""
    c, model, processor = case
    handle = _compress(c, model, method, 0.25)
    inputs = right_padded(c.inputs(processor, BATCH, QUESTIONS))
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        model(**inputs)
        batch = list(handle._host.lm_pruner.last_kept)
        for b, (image, question) in enumerate(zip(BATCH, QUESTIONS)):
            model(**c.inputs(processor, [image], [question]))
            alone = handle._host.lm_pruner.last_kept
            assert len(alone) == len(batch)
            for kept, kept_alone in zip(batch, alone):
                assert kept[b].any() and torch.equal(kept[b][real[b]], kept_alone[0])


def test_bad_layers_and_static_caches_are_refused(case):
    c, model, processor = case
    with pytest.raises(ValueError, match="layer must be a decoder layer index >= 1"):
        vtcompress.compress(model, "fastv", layer=0)
    with pytest.raises(ValueError, match=f"stage layers must increase and lie in 1..{c.layers - 1}"):
        vtcompress.compress(model, "fastv", layer=c.layers)
    assert not any(
        h for layer in model.model.language_model.layers for h in layer._forward_pre_hooks.values()
    )
    _compress(c, model, "fastv", 0.5)
    inputs = c.inputs(processor, SINGLE, QUESTIONS[:1])
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


def _original_positions(model, inputs) -> torch.Tensor:
    """Rotary positions of the uncompressed prompt: [1, L] (LLaVA) or [3, 1, L] (Qwen2.5-VL M-RoPE)."""
    if hasattr(model.model, "get_rope_index"):
        positions, _ = model.model.get_rope_index(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        return positions
    return torch.arange(inputs["input_ids"].shape[1])[None]


@pytest.mark.parametrize("method", METHODS)
def test_kept_tokens_run_the_later_layers_at_their_original_positions(case, method):
    """The last logits equal a hand-run of the stock layers: layers < K on every token (the stock
    model's hidden states), then the kept tokens alone through layers >= K with the rotary
    positions of the uncompressed prompt, causal attention, the final norm and the head."""
    c, model, processor = case
    inputs = c.inputs(processor, SINGLE, QUESTIONS[:1])
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    handle = _compress(c, model, method, 0.25)
    with torch.no_grad():
        pruned = model(**inputs).logits[0, -1]
    handle_stages = handle.config.stages()
    lm = model.model.language_model
    kept_per_stage = handle._host.lm_pruner.last_kept
    image = inputs["input_ids"][0] == model.config.image_token_id
    visual = visual_placeholders(model, inputs)[0]
    positions = _original_positions(model, inputs)
    first = handle_stages[0][0]
    with torch.no_grad():
        hidden = states[first]  # the input of layer K_0, every token
        index = torch.arange(hidden.shape[1])
        for s, (k, _) in enumerate(handle_stages):
            end = handle_stages[s + 1][0] if s + 1 < len(handle_stages) else len(lm.layers)
            keep = (~visual | kept_per_stage[s][0])[index]  # image tokens outside the kept set go
            assert int((kept_per_stage[s][0] & image).sum()) == keep_count(
                int(visual.sum()), handle_stages[s][1]
            )
            hidden, index = hidden[:, keep], index[keep]
            cos, sin = lm.rotary_emb(hidden, positions[..., index])
            for layer in lm.layers[k:end]:
                hidden = layer(hidden, attention_mask=None, position_embeddings=(cos, sin))
        expected = model.lm_head(lm.norm(hidden))[0, -1]
    torch.testing.assert_close(pruned, expected, atol=1e-4, rtol=1e-4)
