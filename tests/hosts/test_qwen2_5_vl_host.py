"""Qwen2.5-VL host: token counts from the image size, refusals, loader, bad input."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from tests.conftest import tiny_qwen2_5_vl as tiny
from vtcompress.integrations.qwen2_5_vl import Qwen2_5_VLLayout, merged_grid

torch.set_num_threads(1)


@pytest.fixture
def model():
    yield from uncompressed(tiny()[0])


def inputs(width: int, height: int, question: str = "What is it?"):
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    _, processor = tiny()
    return dict(processor(images=[make_image(width, height)], text=[prompt(question)], return_tensors="pt"))


# (height, width) -> merged tokens: transformers' Qwen2-VL image processor defaults
# (min 56*56, max 28*28*1280 pixels), and the published checkpoints' max of 28*28*16384.
COUNTS = {
    (224, 224): 64,
    (300, 500): 198,
    (480, 640): 391,
    (1000, 1400): 1260,
    (2000, 3000): 1247,
    (1080, 1920): 1222,
    (3000, 4000): 1230,
}
COUNTS_LARGE = {(1080, 1920): 2691, (3000, 4000): 15301}


@pytest.mark.parametrize("size", list(COUNTS), ids=str)
def test_token_count_from_image_size(size):
    assert Qwen2_5_VLLayout.for_image(size).num_tokens() == COUNTS[size]


@pytest.mark.parametrize("size", list(COUNTS_LARGE), ids=str)
def test_token_count_under_the_checkpoints_pixel_limit(size):
    rows, cols = merged_grid(size, max_pixels=28 * 28 * 16384)
    assert rows * cols == COUNTS_LARGE[size]


@pytest.mark.parametrize("size", [(224, 224), (300, 500), (900, 300)], ids=str)
def test_processor_placeholders_match_the_layout(size):
    call = inputs(size[1], size[0])
    placeholders = int((call["input_ids"] == tiny()[0].config.image_token_id).sum())
    assert placeholders == Qwen2_5_VLLayout.for_image(size).num_tokens()


@torch.no_grad()
def test_kept_count_is_floor_of_ratio_times_merged_tokens(model):
    call = inputs(500, 300)  # 198 tokens (11 x 18)
    handle = vtc.compress(model, "uniform", ratio=0.3)
    logits = model(**call).logits
    image = handle.last_stats.images[0]
    assert (image.tokens_before, image.tokens_after) == (198, 59)
    assert logits.shape[1] == call["input_ids"].shape[1] - (198 - 59)
    assert image.views[0].name == "image" and len(image.views) == 1


REFUSALS = [
    ("globalcom2", {}, "global"),
    ("globalcom2", {"score": "mean_cos"}, "global"),
    ("fastervlm", {}, r"\[CLS\]"),
    ("tokencorr", {}, r"\[CLS\]"),
    ("pitome", {}, "metric='projected'"),
    ("tome", {}, "metric='projected'"),
    ("pitome", {"placement": "tower", "metric": "projected"}, "placement='projector'"),
]


@pytest.mark.parametrize("method,options,hint", REFUSALS, ids=lambda x: str(x))
def test_refused_methods_say_why_and_what_is_served(model, method, options, hint):
    config = vtc.registry.make_config(method, ratio=0.3, **options)
    before = config.to_dict()
    with pytest.raises(ValueError, match=hint) as err:
        vtc.compress(model, config)
    served = str(err.value).split("serves ", 1)[-1].split(", ")
    assert "Qwen2_5_VL" in str(err.value) and {"random", "uniform"} <= set(served)
    assert vtc.get_handle(model) is None
    assert config.to_dict() == before


def test_loader_refuses_a_method_before_loading(tmp_path):
    with pytest.raises(ValueError, match="global"):
        vtc.load_compressed_qwen2_5_vl(tmp_path / "missing", "globalcom2")


@torch.no_grad()
def test_loader_builds_and_loads_the_tiny_model(model, tmp_path, monkeypatch):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    loaded, processor = vtc.load_compressed_qwen2_5_vl("tiny", "tome", ratio=0.5)
    assert (tmp_path / "tiny-qwen2.5-vl-random" / "config.json").exists()
    handle = vtc.get_handle(loaded)
    # A method name gets the host's default metric (a config instance would be refused).
    assert (handle.config.method, handle.config.ratio, handle.config.metric) == ("tome", 0.5, "projected")
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    call = inputs(500, 300)
    again = processor(images=[make_image(500, 300)], text=[prompt("What is it?")], return_tensors="pt")
    assert set(again) == set(call) and all(torch.equal(again[k], call[k]) for k in call)
    assert vtc.compress(model, "tome", ratio=0.5).config == handle.config
    assert torch.equal(loaded(**call).logits, model(**call).logits)


@torch.no_grad()
def test_missing_token_types_are_refused(model):
    call = inputs(500, 300)
    del call["mm_token_type_ids"]
    vtc.compress(model, "uniform", ratio=0.5)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**call)


@torch.no_grad()
def test_two_dimensional_position_ids_are_refused(model):
    call = inputs(500, 300)
    vtc.compress(model, "uniform", ratio=0.5)
    with pytest.raises(ValueError, match="3-D position_ids"):
        model(**call, position_ids=torch.arange(call["input_ids"].shape[1])[None])
