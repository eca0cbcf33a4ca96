"""What ``last_stats`` reports is what the language model received, for every method.

A forward pre-hook on the language model records the embeddings it gets; the image tokens among
them are counted and, for selection methods, compared with the stock (uncompressed) features at
the positions the stats name. Letterboxed images check that no method ever keeps padding.
"""

import pytest
import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, inputs_for, make_image, prompt
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS

ALL_METHODS = vtcompress.available_methods("image")
SELECTION = ["globalcom2", "uniform", "random", "fastervlm", "tokencorr"]
LETTERBOX = ["letterbox_wide", "letterbox_tall"]


def run_recording(model, inputs):
    """Logits and the inputs_embeds / attention_mask the language model got."""
    seen = {}

    def record(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
        seen["mask"] = kwargs.get("attention_mask")

    hook = model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(**inputs)
    finally:
        hook.remove()
    return out.logits, seen


def image_span(input_ids, image_token_id, fed_length):
    """Slice of the fed sequence holding the image tokens (one image, one unpadded sample)."""
    placeholders = (input_ids[0] == image_token_id).nonzero().squeeze(1)
    first, last = int(placeholders[0]), int(placeholders[-1])
    text_after = input_ids.shape[1] - 1 - last
    return slice(first, fed_length - text_after)


def stock_index(layout: AnyResLayout, image) -> list[int]:
    """Indices into LLaVA-NeXT's own packed sequence of the tokens the stats say were kept.

    Stock packing: 576-style thumbnail, then the unpadded full grid row by row, a newline after
    each row. Kept thumbnail tokens come in the order given; crop tokens and newlines by raster.
    """
    side = layout.side
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    width = right - left
    index = [r * side + c for r, c in image.views[0].positions]
    crop = []
    for j, view in enumerate(image.views[1:]):
        cr, cc = divmod(j, layout.cols)
        for r, c in view.positions:
            crop.append((cr * side + r - top) * (width + 1) + cc * side + c - left)
    newlines = [row * (width + 1) + width for row in range(bottom - top)]
    return index + [side * side + i for i in sorted(crop + newlines)]


@pytest.mark.parametrize("shape", LETTERBOX + ["wide"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_image_tokens_fed_to_the_language_model_match_the_stats(model, processor, method, shape):
    w, h = IMAGE_SIZES[shape]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    inputs = processor(images=[make_image(w, h)], text=[prompt()], return_tensors="pt")
    handle = vtcompress.compress(model, method, ratio=0.25)
    logits, seen = run_recording(model, inputs)
    stats = handle.last_stats
    (image,) = stats.images
    (sample,) = stats.samples
    span = image_span(inputs["input_ids"], model.config.image_token_id, seen["embeds"].shape[1])
    fed_image_tokens = span.stop - span.start
    assert fed_image_tokens == image.tokens_after + image.newlines_after
    assert image.tokens_before == layout.num_tokens() and image.newlines_before == layout.num_newlines()
    assert image.tokens_after == sum(v.kept for v in image.views) == stats.tokens_after
    assert [v.original for v in image.views] == layout.view_counts()
    assert sample.length_before == inputs["input_ids"].shape[1]
    assert sample.length_after == seen["embeds"].shape[1] == logits.shape[1]
    assert (
        f"image 0: {image.tokens_before} -> {image.tokens_after} visual tokens (+{image.newlines_after} newlines), {method} r=0.25"
        in stats.summary()
    )
    # No method keeps (or merges from) letterbox padding.
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    for j, view in enumerate(image.views[1:]):
        cr, cc = divmod(j, layout.cols)
        cells = list(view.positions) + [p for src in (view.sources or []) for p in src]
        for r, c in cells:
            assert top <= cr * layout.side + r < bottom and left <= cc * layout.side + c < right, (
                view.name,
                r,
                c,
            )
        assert len(set(view.positions)) == view.kept <= view.original
    for r, c in image.views[0].positions:
        assert 0 <= r < layout.side and 0 <= c < layout.side


@pytest.mark.parametrize("shape", LETTERBOX)
@pytest.mark.parametrize("method", SELECTION)
def test_selected_features_are_the_stock_features_at_the_reported_positions(model, processor, method, shape):
    w, h = IMAGE_SIZES[shape]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    inputs = processor(images=[make_image(w, h)], text=[prompt()], return_tensors="pt")
    with torch.no_grad():
        stock = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_sizes"], return_dict=True
        ).pooler_output[0]
    handle = vtcompress.compress(model, method, ratio=0.25)
    _, seen = run_recording(model, inputs)
    (image,) = handle.last_stats.images
    span = image_span(inputs["input_ids"], model.config.image_token_id, seen["embeds"].shape[1])
    fed = seen["embeds"][0, span]
    assert torch.allclose(fed, stock[stock_index(layout, image)], atol=1e-5)


def test_random_keeps_the_same_tokens_alone_and_in_a_batch(model, processor):
    sizes = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["square"]]
    handle = vtcompress.compress(model, "random", ratio=0.25, seed=7)
    with torch.no_grad():
        model(**inputs_for(processor, sizes))
    batch = [[v.positions for v in im.views] for im in handle.last_stats.images]
    for i, size in enumerate(sizes):
        with torch.no_grad():
            model(**processor(images=[make_image(*size, seed=i)], text=[prompt()], return_tensors="pt"))
        assert [v.positions for v in handle.last_stats.images[0].views] == batch[i]
    other = vtcompress.compress(model, "random", ratio=0.25, seed=8)
    with torch.no_grad():
        model(**inputs_for(processor, sizes))
    assert [[v.positions for v in im.views] for im in other.last_stats.images] != batch
