"""End-to-end behaviour of the LLaVA-NeXT adapter on the tiny offline model."""

import pytest
import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, inputs_for, logits, make_image, prompt
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS
from vtcompress.registry import _METHODS, register_method


def test_ratio_one_and_remove_are_bit_identical(model, processor):
    inputs = inputs_for(processor, [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["tall"]])
    reference = logits(model, inputs)
    with vtcompress.compressed(model, "globalcom2", ratio=1.0):
        assert torch.equal(logits(model, inputs), reference)
    handle = vtcompress.compress(model, "globalcom2", ratio=0.25)
    assert logits(model, inputs).shape[1] < reference.shape[1]
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(logits(model, inputs), reference)
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__


def test_compressing_twice_replaces_instead_of_stacking(model, processor):
    inputs = inputs_for(processor, [IMAGE_SIZES["wide"]])
    first = vtcompress.compress(model, "uniform", ratio=0.5)
    second = vtcompress.compress(model, "uniform", ratio=0.5)
    assert not first.active and second.active
    logits(model, inputs)
    assert second.last_stats.images[0].tokens_after == keep_count(
        second.last_stats.images[0].tokens_before, 0.5
    )
    assert len(model.model.vision_tower.encoder.layers[-1].self_attn.k_proj._forward_hooks) <= 1


@pytest.mark.parametrize("method", ["globalcom2", "random", "uniform", "fastervlm"])
@pytest.mark.parametrize("shape", list(IMAGE_SIZES))
def test_kept_counts_follow_the_exact_budget_rule(model, processor, method, shape):
    w, h = IMAGE_SIZES[shape]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    inputs = inputs_for(processor, [(w, h)])
    handle = vtcompress.compress(model, method, ratio=0.25)
    out = logits(model, inputs)
    stats = handle.last_stats.images[0]
    assert stats.tokens_before == layout.num_tokens()
    assert stats.tokens_after == keep_count(layout.num_tokens(), 0.25)
    assert stats.newlines_after == layout.num_newlines("unpadded")
    assert stats.views[0].kept == keep_count(576, 0.25) or method != "globalcom2"
    assert sum(v.kept for v in stats.views) == stats.tokens_after
    assert out.shape[1] == inputs["input_ids"].shape[1] - (stats.tokens_before - stats.tokens_after)
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    for j, view in enumerate(stats.views[1:]):  # kept crop positions lie in the unpadded region
        assert view.name == f"crop {j // layout.cols},{j % layout.cols}"
        assert view.kept <= view.original
        assert len(set(view.positions)) == view.kept
        crop_row, crop_col = divmod(j, layout.cols)
        for r, c in view.positions:
            assert top <= crop_row * layout.side + r < bottom, (view.name, r, c)
            assert left <= crop_col * layout.side + c < right, (view.name, r, c)


def test_paper_allocation_count_rule(model, processor):
    w, h = IMAGE_SIZES["letterbox_tall"]
    handle = vtcompress.compress(model, vtcompress.GlobalCom2Config.paper(ratio=0.25))
    logits(model, inputs_for(processor, [(w, h)]))
    stats = handle.last_stats.images[0]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    assert stats.views[0].kept == 144
    assert stats.newlines_after == layout.rows * layout.side  # one newline per padded row
    assert stats.tokens_after <= 144 + sum(int(v.original * 0.25 * (2 - 1 / 4)) for v in stats.views[1:])


def test_batch_equals_one_by_one(model, processor):
    sizes = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["tall"], IMAGE_SIZES["square"]]
    questions = ["What?", "Where is the red square in this picture?", "Count the shapes."]
    vtcompress.compress(model, "globalcom2", ratio=0.25)
    batch = inputs_for(processor, sizes, questions)
    batched = logits(model, batch)[:, -1]
    for i, (size, q) in enumerate(zip(sizes, questions)):
        # The batch drew image i with seed i: give the lone image the same pixels.
        single = processor(images=[make_image(*size, seed=i)], text=[prompt(q)], return_tensors="pt")
        alone = logits(model, single)[:, -1]
        assert torch.allclose(batched[i], alone[0], atol=1e-4), i


def test_generate_equals_greedy_forward_and_keeps_the_prompt(model, processor):
    vtcompress.compress(model, "globalcom2", ratio=0.25)
    inputs = inputs_for(processor, [IMAGE_SIZES["wide"]])
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(4):
        step = logits(model, {**inputs, "input_ids": ids, "attention_mask": mask})
        nxt = step[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, ids)


def test_generate_batch_with_left_padding(model, processor):
    vtcompress.compress(model, "fastervlm", ratio=0.1)
    inputs = inputs_for(
        processor, [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["square"]], ["Hi?", "A longer question here?"]
    )
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert out.sequences.shape == (2, inputs["input_ids"].shape[1] + 3)
    for i in range(2):
        single = processor(
            images=[make_image(*[IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["square"]][i], seed=i)],
            text=[prompt(["Hi?", "A longer question here?"][i])],
            return_tensors="pt",
        )
        alone = model.generate(**single, max_new_tokens=3, do_sample=False)
        assert torch.equal(out.sequences[i, -3:], alone[0, -3:])


@pytest.mark.filterwarnings("ignore:.*right-padding")
def test_generate_on_a_right_padded_batch(model, processor):
    """Right padding is the stock model's business (its padded rows continue after the padding);
    compression keeps it: exact at ratio 1.0, the prefill gets right-padded rows, and the row
    without padding generates what it generates alone."""
    sizes, questions = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["square"]], ["Hi?", "A longer question?"]
    side = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = "right"
    try:
        inputs = inputs_for(processor, sizes, questions)
    finally:
        processor.tokenizer.padding_side = side
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert mask[0, -1] == 0 and mask[:, 0].all()  # row 0 is padded, on the right
    greedy = dict(max_new_tokens=3, do_sample=False)
    stock = model.generate(**inputs, **greedy)
    with vtcompress.compressed(model, "uniform", ratio=1.0):
        assert torch.equal(model.generate(**inputs, **greedy), stock)
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True
    )
    handle = vtcompress.compress(model, "uniform", ratio=0.25)
    try:
        out = model.generate(**inputs, **greedy)
    finally:
        hook.remove()
    lengths = [s.length_after for s in handle.last_stats.samples]
    assert lengths[0] < lengths[1] and torch.equal(out[:, : ids.shape[1]], ids)
    assert seen[0].tolist() == [[1] * lengths[0] + [0] * (lengths[1] - lengths[0]), [1] * lengths[1]]
    alone = model.generate(
        **processor(images=[make_image(*sizes[1], seed=1)], text=[prompt(questions[1])], return_tensors="pt"),
        **greedy,
    )
    assert torch.equal(out[1, -3:], alone[0, -3:])


def test_hook_logits_equal_eager_attention(processor):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next
    from vtcompress.scores import cls_logits

    seen = {}

    class RecordConfig(vtcompress.FasterVLMConfig):
        pass

    with pytest.raises(ValueError, match="subclass it"):
        register_method("_record", vtcompress.FasterVLMConfig)(lambda tokens, config: [])

    @register_method("_record", RecordConfig)
    def record(tokens, config):
        seen["logits"] = cls_logits(tokens, tokens.score_layer)
        from vtcompress.tokens import keep_all

        return keep_all(tokens)

    try:
        model, _ = build_tiny_llava_next(attn_implementation="eager")
        inputs = inputs_for(processor, [IMAGE_SIZES["wide"]])
        vtcompress.compress(model, "_record", ratio=0.5)
        logits(model, inputs)
        vtcompress.get_handle(model).remove()
        with torch.no_grad():
            tower = model.model.vision_tower(inputs["pixel_values"][0], output_attentions=True)
        eager = tower.attentions[-1][:, :, 0, :]  # last layer: it consumes hidden state -2
        assert torch.allclose(seen["logits"].softmax(-1), eager, atol=1e-5)
    finally:
        _METHODS.pop("_record", None)


def test_sdpa_and_eager_agree_and_bf16_runs(processor):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    inputs = inputs_for(processor, [IMAGE_SIZES["letterbox_tall"]])
    results = {}
    for impl in ("sdpa", "eager"):
        model, _ = build_tiny_llava_next(attn_implementation=impl)
        vtcompress.compress(model, "globalcom2", ratio=0.25)
        results[impl] = logits(model, inputs)
    assert torch.allclose(results["sdpa"], results["eager"], atol=1e-4)
    # bf16 is the same model rounded: "uniform" keeps the same tokens whatever the precision, so
    # the logits must agree with fp32 up to bf16 rounding (8 bits of mantissa through 2+2 layers).
    reference, _ = build_tiny_llava_next()
    model, _ = build_tiny_llava_next(dtype=torch.bfloat16)
    vtcompress.compress(reference, "uniform", ratio=0.25)
    vtcompress.compress(model, "uniform", ratio=0.25)
    fp32 = logits(reference, inputs)
    out = logits(model, {**inputs, "pixel_values": inputs["pixel_values"].bfloat16()})
    assert out.dtype == torch.bfloat16 and out.shape == fp32.shape
    assert torch.allclose(out.float(), fp32, atol=0.02 * fp32.abs().max().item(), rtol=0)


def test_labels_and_position_ids_are_cut_alike(model, processor):
    # Two samples of different lengths, left padded: the language model must get each row's
    # position ids renumbered contiguously (pads keep their value), and the labels cut like the ids.
    inputs = inputs_for(
        processor, [IMAGE_SIZES["wide"], IMAGE_SIZES["letterbox_tall"]], ["Hi?", "A longer question here?"]
    )
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    image = ids == model.config.image_token_id
    labels = torch.where(image | (mask == 0), -100, ids)
    position_ids = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
    seen = {}

    def record(module, args, kwargs):
        seen.update(kwargs)

    hook = model.model.register_forward_pre_hook(record, with_kwargs=True)
    handle = vtcompress.compress(model, "uniform", ratio=0.25)
    try:
        with torch.no_grad():
            out = model(**inputs, labels=labels, position_ids=position_ids)
    finally:
        hook.remove()
    new_mask = seen["attention_mask"]
    if isinstance(new_mask, dict):  # some transformers versions pass prepared masks
        new_mask = None
    removed = [
        (im.tokens_before + im.newlines_before) - (im.tokens_after + im.newlines_after)
        for im in handle.last_stats.images
    ]
    new_len = out.logits.shape[1]
    assert new_len == max(int(mask[b].sum()) - removed[b] for b in range(2))  # the longest cut row
    expected_pos = torch.ones(2, new_len, dtype=position_ids.dtype)
    expected_labels = torch.full((2, new_len), -100)
    for b in range(2):
        n = int(mask[b].sum()) - removed[b]  # real tokens left in row b
        expected_pos[b, new_len - n :] = torch.arange(n)
        text = ~image[b] & (mask[b] == 1)
        first_image = int(image[b].nonzero()[0])
        kept_image = int(image[b].sum()) - removed[b]
        row = torch.cat(
            [ids[b, text][: int(text[:first_image].sum())], torch.full((kept_image,), -100),
             ids[b, text][int(text[:first_image].sum()) :]]
        )  # fmt: skip
        expected_labels[b, new_len - n :] = row
        if new_mask is not None:
            assert new_mask[b].tolist() == [0] * (new_len - n) + [1] * n
    assert torch.equal(seen["position_ids"], expected_pos)
    # The loss the model reports is the one for the labels cut like the ids.
    shift_logits, shift_labels = out.logits[:, :-1].float(), expected_labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
    )
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-5)


def test_bad_input_errors_name_the_fix(model, processor):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        vtcompress.compress(model, "globalcom2", ratio=1.5)
    with pytest.raises(ValueError, match="known methods: .*globalcom2"):
        vtcompress.compress(model, "nope")
    with pytest.raises(TypeError, match="no option"):
        vtcompress.compress(model, "globalcom2", ratio=0.5, bogus=1)
    with pytest.raises(TypeError, match="no host for Linear"):
        vtcompress.compress(torch.nn.Linear(2, 2), "globalcom2")
    vtcompress.compress(model, "globalcom2", ratio=0.5)
    inputs = inputs_for(processor, [IMAGE_SIZES["wide"]])
    bad = dict(inputs)
    bad["input_ids"] = inputs["input_ids"][:, 5:]  # a placeholder run cut short
    bad["attention_mask"] = inputs["attention_mask"][:, 5:]
    bad["input_ids"][0, :3] = model.config.image_token_id
    with pytest.raises(ValueError, match="unmodified input_ids"):
        logits(model, bad)


def test_one_by_one_grid_image(processor):
    """A 1x1 crop grid (pinpoint 336x336) is compressed with the thumbnail guiding one crop."""
    from transformers import LlavaNextProcessor

    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, proc = build_tiny_llava_next()
    model.config.image_grid_pinpoints = [[336, 336]]
    proc.image_processor.image_grid_pinpoints = [[336, 336]]
    assert isinstance(proc, LlavaNextProcessor)
    inputs = proc(images=[make_image(336, 336)], text=[prompt()], return_tensors="pt")
    handle = vtcompress.compress(model, "globalcom2", ratio=0.25)
    logits(model, inputs)
    stats = handle.last_stats.images[0]
    assert stats.grid == (1, 1) and stats.tokens_before == 1152 and stats.tokens_after == 288
