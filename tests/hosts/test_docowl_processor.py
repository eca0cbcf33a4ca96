"""DocOwl1.5 processor: anchor rule, crops, prompt format, placeholders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vtcompress.integrations.docowl import DocOwlImageOptions, mplug_owl2_prompt, select_anchor
from vtcompress.integrations.docowl.processing import ANCHORS, CLIP_MEAN, CLIP_STD, crop_image
from vtcompress.integrations.docowl.tiny import build_tiny_docowl


@pytest.fixture(scope="module")
def proc():
    return build_tiny_docowl()[1]


def documented_rule(h: int, w: int, base: int = 448) -> tuple[int, int]:
    """Spec: all (rows, cols) with rows*cols <= 9; maximise 100 * shape-IoU + IoU (first max wins)."""

    def iou(a, b):  # boxes (width, height) at the origin
        inter = min(a[0], b[0]) * min(a[1], b[1])
        return inter / (a[0] * a[1] + b[0] * b[1] - inter + 1e-5)

    best, best_score = None, -1.0
    for r, c in ANCHORS["grid_9"]:
        box = (c * base, r * base)
        same_shape = (c * base, math.floor(h / w * c * base))
        score = 100 * iou(box, same_shape) + iou(box, (w, h))
        if score > best_score + 1e-6:
            best, best_score = (r, c), score
    return best


def test_grid_9_is_every_grid_up_to_9_crops():
    assert sorted(ANCHORS["grid_9"]) == sorted(
        (r, c) for r in range(1, 10) for c in range(1, 10) if r * c <= 9
    )


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((448, 448), (1, 1)),  # square, small: one crop
        ((1000, 1000), (2, 2)),  # square, larger: resolution picks 2x2 over 1x1 / 3x3
        ((1400, 1400), (3, 3)),
        ((448, 1792), (1, 4)),  # wide 1:4
        ((2000, 500), (4, 1)),  # tall 4:1
        ((600, 900), (2, 3)),  # 2:3
        ((300, 4000), (1, 9)),  # very wide: the widest anchor
        ((3508, 2480), (3, 2)),  # A4 portrait scan at 300 dpi
        ((720, 1280), (2, 4)),  # 16:9 screenshot
    ],
)
def test_anchor_examples(hw, expected):
    assert select_anchor(hw) == expected == documented_rule(*hw)


def test_anchor_rule_over_many_aspect_ratios():
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(60, 5000, (300, 2), generator=g).tolist()
    for h, w in sizes:
        assert select_anchor((h, w)) == documented_rule(h, w), (h, w)


def test_anchor_prefers_shape_over_resolution():
    # A tiny 1:3 image still gets three crops: shape first, then resolution.
    assert select_anchor((50, 150)) == (1, 3)


def test_crops_tile_the_resized_image_and_global_view_comes_first():
    opts = DocOwlImageOptions(image_size=112)
    img = Image.fromarray((np.random.default_rng(0).random((150, 400, 3)) * 255).astype(np.uint8))
    views, (rows, cols) = crop_image(img, opts)
    assert (rows, cols) == select_anchor((150, 400), base=112)
    assert views.shape == (1 + rows * cols, 3, 112, 112)
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]

    def norm(pil):
        return (torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1) - mean) / std

    torch.testing.assert_close(views[0], norm(img.resize((112, 112), Image.BICUBIC)))
    big = norm(img.resize((cols * 112, rows * 112), Image.BICUBIC))
    for r in range(rows):
        for c in range(cols):
            torch.testing.assert_close(
                views[1 + r * cols + c], big[:, r * 112 : (r + 1) * 112, c * 112 : (c + 1) * 112]
            )
    no_global, _ = crop_image(img, DocOwlImageOptions(image_size=112, add_global_img=False))
    torch.testing.assert_close(no_global, views[1:])


def test_mplug_owl2_prompt():
    assert mplug_owl2_prompt("What is it?") == "USER: <|image|>What is it? ASSISTANT:"
    assert (
        mplug_owl2_prompt("And?", history=[("Q1", "A1")])
        == "USER: <|image|>Q1 ASSISTANT: A1</s>USER: And? ASSISTANT:"
    )
    assert mplug_owl2_prompt("Hi", with_image=False) == "USER: Hi ASSISTANT:"


def test_prompt_expansion_with_textual_crop_indicators(proc):
    text = proc.expand_prompt(mplug_owl2_prompt("Q"), [(1, 2, 3)])
    views = "<global_img><|image|>" + "".join(
        f"<crop_img_row{r}_col{c}><|image|>" for r in range(2) for c in range(3)
    )
    assert text == "USER: " + views + "Q ASSISTANT:"


def test_placeholders_and_modality(proc):
    img = Image.new("RGB", (300, 100), "white")
    out = proc(images=img, text=mplug_owl2_prompt("What is the title?"))
    rows, cols = select_anchor((100, 300), base=112)
    n_views = 1 + rows * cols
    ids, mod = out["input_ids"][0], out["modality_indicators"][0]
    assert out["pixel_values"].shape[0] == n_views
    assert out["image_grids"].tolist() == [[1, rows, cols]]
    assert int(mod.sum()) == n_views * proc.options.tokens_per_view == n_views * 17
    assert torch.all(ids[mod.bool()] == proc.image_token_id)
    assert ids[0] == proc.tokenizer.bos_token_id and int((ids == proc.tokenizer.bos_token_id).sum()) == 1
    # Each view's run is contiguous and preceded by its indicator text.
    starts = torch.nonzero(torch.diff(mod, prepend=mod[:1] * 0) == 1).squeeze(1)
    assert len(starts) == n_views
    between = proc.tokenizer.decode(ids[int(starts[0]) + 17 : int(starts[1])])
    assert between.strip() == "<crop_img_row0_col0>"
    # Text pieces are tokenized chunk by chunk, as the official tokenizer_image_token does.
    tail = ids[int(starts[-1]) + 17 :].tolist()
    assert tail == proc.tokenizer("What is the title? ASSISTANT:", add_special_tokens=False)["input_ids"]


def test_batch_is_left_padded(proc):
    imgs = [Image.new("RGB", (300, 100), "white"), Image.new("RGB", (100, 100), "white")]
    out = proc(images=imgs, text=[mplug_owl2_prompt("a")] * 2)
    lens = out["attention_mask"].sum(1)
    assert lens[0] > lens[1]
    assert out["attention_mask"][1, : int(lens[0] - lens[1])].sum() == 0
    assert out["modality_indicators"][out["attention_mask"] == 0].sum() == 0
    assert out["image_grids"][:, 0].tolist() == [1, 1]


def test_marker_is_added_when_missing(proc):
    img = Image.new("RGB", (100, 100), "white")
    a = proc(images=img, text="USER: What? ASSISTANT:")
    b = proc(images=img, text="USER: <|image|>What? ASSISTANT:")
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_bad_inputs(proc):
    img = Image.new("RGB", (100, 100), "white")
    with pytest.raises(ValueError, match="markers for 2 images"):
        proc(images=[img, img], text="USER: <|image|>What? ASSISTANT:")
    with pytest.raises(ValueError, match="text is required"):
        proc(images=img)
    with pytest.raises(TypeError, match="PIL"):
        proc(images=["not an image"], text="<|image|>x")
    with pytest.raises(ValueError, match="positive"):
        select_anchor((0, 10))
