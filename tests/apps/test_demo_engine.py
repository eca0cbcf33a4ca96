"""The demo's engine, overlays and examples (no gradio needed)."""

import struct
import threading
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

import vtcompress
from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.demo import overlay
from vtcompress.integrations.demo.engine import DemoEngine, InputError, Limits, format_flops
from vtcompress.integrations.demo.examples import examples, write_examples
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS, build_tiny_llava_next
from vtcompress.registry import _METHODS, register_method
from vtcompress.tokens import ViewOutput


@pytest.fixture(scope="module")
def engine():
    model, processor = build_tiny_llava_next(seed=0)
    return DemoEngine(model, processor, "tiny", random_weights=True, max_new_tokens=4)


def png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` (no pixel data): cheap huge-image input."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# --- overlays ----------------------------------------------------------------------------------
def test_overlay_shows_kept_dropped_and_padding_tokens():
    side, patch = 4, 8
    pixels = np.full((side * patch, side * patch, 3), 200, dtype=np.uint8)
    valid = np.ones((side, side), bool)
    valid[3] = False  # last row is letterbox padding
    img = np.asarray(overlay.render_view(pixels, side, [(0, 0), (2, 3)], valid))

    def cell(r, c):  # interior of a cell, away from the frame on its top/left edge
        return img[r * patch + 2 : (r + 1) * patch - 1, c * patch + 2 : (c + 1) * patch - 1]

    assert (cell(0, 0) == 200).all() and (cell(2, 3) == 200).all()  # kept: untouched pixels
    assert cell(0, 1).max() < 80 and cell(1, 2).max() < 80  # dropped: dimmed
    assert set(np.unique(cell(3, 1))) <= {40, 70}  # padding: two-tone stripes, not the image
    assert img[0, 0].tolist() != [200, 200, 200]  # kept cells are framed


def test_overlay_colours_each_merged_region_and_sizes_tint():
    side, patch = 4, 6
    pixels = np.full((side * patch, side * patch, 3), 128, dtype=np.uint8)
    sources = [[(0, 0), (0, 1), (1, 0)], [(3, 3), (3, 2)], [(2, 0)]]
    kept = [(0, 0), (3, 2), (2, 0)]
    img = np.asarray(overlay.render_view(pixels, side, kept, sources=sources))
    a, b = img[patch + 3, 3], img[3 * patch + 3, 2 * patch + 3]  # inside regions 0 and 1
    assert a.tolist() != b.tolist() and a.tolist() != [128] * 3
    assert (img[0, patch - 1] == img[0, patch - 2]).all()  # same region: no border inside
    assert img[2 * patch + 3, 3].tolist() == [128] * 3  # single-patch token: untinted
    assert img[patch + 3, 3 * patch + 3].max() < 80  # dropped
    tinted = np.asarray(overlay.render_view(pixels, side, kept, sizes=[3, 2, 1]))
    assert tinted[3, 3, 0] > tinted[3 * patch + 3, 2 * patch + 3, 0] > 128  # more merged: stronger
    assert tinted[2 * patch + 3, 3].tolist() == [128] * 3


def test_overlay_of_a_rectangular_grid():
    """Qwen2.5-VL's one view is rows x cols tokens: cell (r, c) is at pixel rows r*patch..."""
    rows, cols, patch = 2, 3, 5
    pixels = np.full((rows * patch, cols * patch, 3), 200, dtype=np.uint8)
    img = np.asarray(overlay.render_view(pixels, (rows, cols), [(1, 2)]))
    assert img.shape == pixels.shape
    assert (img[patch + 1 :, 2 * patch + 1 :] == 200).all()  # kept cell (1, 2), inside its frame
    assert img[1:patch, 2 * patch + 1 :].max() < 80  # cell (0, 2) above it: dropped
    assert img[patch + 1 :, 1:patch].max() < 80  # cell (1, 0): dropped
    with pytest.raises(ValueError, match="does not split into 3x2"):
        overlay.render_view(pixels, (3, 2), [])


def test_overlay_rejects_a_view_that_does_not_tile():
    with pytest.raises(ValueError, match="24x24"):
        overlay.render_view(np.zeros((100, 100, 3), np.uint8), 24, [])


def test_unnormalize_recovers_the_pixels_the_processor_saw(engine):
    image = Image.new("RGB", (336, 336), (10, 128, 250))
    pixel_values = engine.processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
    ip = engine.processor.image_processor
    views = [
        overlay.unnormalize(v.numpy(), ip.image_mean, ip.image_std, ip.rescale_factor) for v in pixel_values
    ]
    assert all(v.shape == (336, 336, 3) for v in views)
    assert np.abs(views[0].astype(int) - [10, 128, 250]).max() <= 1  # the thumbnail
    for crop in views[1:]:  # the image or black letterbox padding
        near = np.abs(crop.astype(int) - [10, 128, 250]).max(-1) <= 1
        assert near.any() and (near | (crop.max(-1) == 0)).all()


def test_examples_are_deterministic_pngs(tmp_path):
    first = [np.asarray(e.image) for e in examples()]
    second = [np.asarray(e.image) for e in examples()]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    written = write_examples(tmp_path)
    assert len(written) == 3 and all(q.endswith("?") for _, q in written)
    for (path, _), pixels in zip(written, first):
        assert np.array_equal(np.asarray(Image.open(path)), pixels)
    # three different anyres grids: 2x2, 2 rows x 1 col, 1 row x 3 cols
    grids = {(im.shape[0], im.shape[1]): AnyResLayout.for_image(im.shape[:2], PINPOINTS) for im in first}
    assert sorted((g.rows, g.cols) for g in grids.values()) == [(1, 3), (2, 1), (2, 2)]


# --- comparisons --------------------------------------------------------------------------------
def test_compare_reports_counts_views_and_flops(engine):
    image = make_image(500, 300)
    c = engine.compare(image, "What is in the image?", "uniform", 0.25)
    layout = AnyResLayout.for_image((300, 500), PINPOINTS)
    assert c.tokens_before == layout.num_tokens()
    assert c.tokens_after == keep_count(layout.num_tokens(), 0.25)
    assert c.newlines_before == c.newlines_after == layout.num_newlines("unpadded")
    assert [v.name for v in c.views][:2] == ["thumbnail", "crop 0,0"]
    assert len(c.views) == layout.num_views
    assert [v.original for v in c.views] == layout.view_counts()
    assert sum(v.kept for v in c.views) == c.tokens_after
    assert all(v.image.size == (336, 336) for v in c.views)
    # the language model really saw the shorter prompt
    assert c.uncompressed.prompt_tokens - c.compressed.prompt_tokens == c.tokens_before - c.tokens_after
    assert c.flops_before > c.flops_after > 0
    assert c.compressed.new_tokens == c.uncompressed.new_tokens == 4
    assert c.compressed.first_token_seconds <= c.compressed.total_seconds
    assert vtcompress.get_handle(engine.model) is None  # compression is scoped to the request


def test_ratio_one_gives_the_uncompressed_answer(engine):
    c = engine.compare(make_image(672, 672), "What?", "globalcom2", 1.0)
    assert c.compressed.answer == c.uncompressed.answer
    assert c.compressed.prompt_tokens == c.uncompressed.prompt_tokens
    assert c.tokens_after == c.tokens_before and "off" in c.note
    assert c.flops_saved == 0


def test_long_strip_is_compressed(engine):
    """A receipt-like strip: unpadding leaves no crop token, the thumbnail carries the budget."""
    c = engine.compare(make_image(700, 30), "What?", "globalcom2", 0.25)
    assert c.tokens_after == keep_count(c.tokens_before, 0.25)
    assert sum(v.kept for v in c.views) == c.tokens_after


@pytest.mark.parametrize(
    "make_input, question, method, ratio, expected",
    [
        (lambda p: None, "q", "uniform", 0.5, "upload an image"),
        (lambda p: "", "q", "uniform", 0.5, "upload an image"),
        (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", "q", "uniform", 0.5, "as an image"),
        (lambda p: (p / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0") and p / "half.png", "q", "uniform", 0.5, "as an image"),
        (lambda p: p / "missing.png", "q", "uniform", 0.5, "as an image"),
        (lambda p: Image.new("RGB", (8, 8)), "q", "uniform", 0.5, "too small"),
        (lambda p: png_header_only(p / "big.png", 8000, 6000), "q", "uniform", 0.5, "48.0 megapixels"),
        (lambda p: png_header_only(p / "bomb.png", 30000, 30000), "q", "uniform", 0.5, "too large"),
        (lambda p: make_image(400, 300), "   ", "uniform", 0.5, "type a question"),
        (lambda p: make_image(400, 300), "q" * 3000, "uniform", 0.5, "under 2000"),
        (lambda p: make_image(400, 300), "q", "nope", 0.5, "Unknown method"),
        (lambda p: make_image(400, 300), "q", "uniform", 0.0, "ratio must be in (0, 1]"),
        (lambda p: make_image(400, 300), "q", "uniform", "abc", "Invalid setting"),
    ],
    ids=[
        "no-image", "empty-path", "text-file", "truncated-png", "missing-file", "tiny",
        "huge", "decompression-bomb", "empty-question", "long-question", "unknown-method", "zero-ratio",
        "non-numeric-ratio",
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_message(engine, tmp_path, make_input, question, method, ratio, expected):
    with pytest.raises(
        InputError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")
    ):
        engine.compare(make_input(tmp_path), question, method, ratio)


def test_limits_are_configurable(tmp_path):
    model, processor = build_tiny_llava_next()
    strict = DemoEngine(model, processor, limits=Limits(max_pixels=100_000))
    with pytest.raises(InputError, match="0.1 megapixels"):
        strict.load_image(make_image(400, 300))
    assert strict.load_image(make_image(300, 300)).size == (300, 300)


def test_engine_refuses_an_already_compressed_model():
    model, processor = build_tiny_llava_next()
    vtcompress.compress(model, "uniform", ratio=0.5)
    with pytest.raises(ValueError, match="uncompressed"):
        DemoEngine(model, processor)


def test_engine_refuses_a_model_that_does_not_generate():
    model, processor = build_tiny_llava_next()
    with pytest.raises(ValueError, match="ForConditionalGeneration classes.*got LlavaNextModel"):
        DemoEngine(model.model, processor)


def test_concurrent_requests_each_get_their_own_compression(engine):
    image = make_image(672, 336)
    expected = {r: engine.compare(image, "What?", "uniform", r) for r in (0.25, 0.5, 1.0)}
    results, errors = {}, []

    def ask(ratio):
        try:
            results[ratio] = engine.compare(image, "What?", "uniform", ratio)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=ask, args=(r,)) for r in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request never finished"
    assert not errors
    assert sorted(results) == sorted(expected)  # every request answered, none lost
    for r, c in results.items():
        assert c.tokens_after == expected[r].tokens_after
        assert c.compressed.prompt_tokens == expected[r].compressed.prompt_tokens
        assert c.uncompressed.prompt_tokens == expected[r].uncompressed.prompt_tokens  # never compressed
        assert c.compressed.answer == expected[r].compressed.answer
    assert vtcompress.get_handle(engine.model) is None


@dataclass
class PairMergeConfig(vtcompress.CompressionConfig):
    """Test-only merging method: every crop token merges with its right neighbour."""


def test_merging_methods_show_regions(engine):
    def pair_merge(tokens, config):
        outs = []
        valid = [torch.arange(tokens.features.shape[1])]
        if tokens.layout.has_crops:
            valid += [m.nonzero().squeeze(1) for m in tokens.layout.crop_valid_mask()]
        for v, pos in enumerate(valid):
            groups = [pos[i : i + 2] for i in range(0, len(pos), 2)]
            reps = torch.stack([g[0] for g in groups])
            outs.append(
                ViewOutput(
                    reps,
                    tokens.features[v].index_select(0, reps),
                    torch.tensor([len(g) for g in groups]),
                    groups,
                )
            )
        return outs

    register_method("demo_pair_merge", PairMergeConfig)(pair_merge)
    try:
        c = engine.compare(make_image(672, 672), "What?", "demo_pair_merge", 0.5)
    finally:
        _METHODS.pop("demo_pair_merge", None)
    assert c.tokens_after == c.tokens_before // 2
    assert "colour" in c.legend
    thumb = np.asarray(c.views[0].image)
    # patches (0,0) and (0,1) are one region; (0,2) starts the next one, in another colour
    assert not np.array_equal(thumb[7, 7], thumb[7, 14 * 2 + 7])


def test_format_flops():
    assert format_flops(3.25e9) == "3.25 GFLOPs"
    assert format_flops(314e6) == "314 MFLOPs"
    assert format_flops(0) == "0 FLOPs"
