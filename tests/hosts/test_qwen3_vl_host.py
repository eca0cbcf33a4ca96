"""Qwen3-VL host: token counts from the image size, refusals, loader, bad input (videos:
test_qwen3_vl_video.py)."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from vtcompress.integrations.qwen3_vl import Qwen3VLLayout, load_compressed_qwen3_vl, merged_grid
from vtcompress.integrations.qwen3_vl.prompt import prompt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    from vtcompress.integrations.qwen3_vl.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(seed=0)


@pytest.fixture
def model(tiny):
    yield from uncompressed(tiny[0])


def inputs(processor, width: int, height: int, question: str = "What is it?"):
    return dict(processor(images=[make_image(width, height)], text=[prompt(question)], return_tensors="pt"))


# (height, width) -> merged tokens (32 px per token; worked out by hand from smart_resize with the
# host's default limits: min 65536 px, max 32*32*1280 px).
COUNTS = {
    (300, 500): 144,  # 288 x 512 -> 9 x 16
    (900, 300): 252,  # 896 x 288 -> 28 x 9
    (420, 420): 169,  # 416 x 416
    (120, 200): 77,  # under the minimum: scaled up to 224 x 352
    (1000, 1400): 1260,  # over the maximum: scaled down to 960 x 1344
}


@pytest.mark.parametrize("size", list(COUNTS), ids=str)
def test_token_count_from_image_size(size):
    assert Qwen3VLLayout.for_image(size).num_tokens() == COUNTS[size]


def test_token_count_under_the_published_pixel_limit():
    assert merged_grid((3000, 4000), max_pixels=16777216) == (94, 125)  # 3008 x 4000 px


@pytest.mark.parametrize("size", [(300, 500), (900, 300), (120, 200)], ids=str)
def test_processor_placeholders_match_the_layout(tiny, size):
    model, processor = tiny
    call = inputs(processor, size[1], size[0])
    placeholders = int((call["input_ids"] == model.config.image_token_id).sum())
    assert placeholders == Qwen3VLLayout.for_image(size).num_tokens()
    assert call["image_grid_thw"].tolist() == [[1, *(2 * x for x in Qwen3VLLayout.for_image(size).grid)]]


@torch.no_grad()
def test_kept_count_is_floor_of_ratio_times_merged_tokens(model, tiny):
    call = inputs(tiny[1], 500, 300)  # 144 tokens (9 x 16)
    handle = vtc.compress(model, "uniform", ratio=0.3)
    logits = model(**call).logits
    image = handle.last_stats.images[0]
    assert (image.tokens_before, image.tokens_after) == (144, 43)
    assert image.image_size == (288, 512)  # what the model saw: 9 x 16 tokens of 32 px
    assert logits.shape[1] == call["input_ids"].shape[1] - (144 - 43)
    assert image.views[0].name == "image" and len(image.views) == 1


REFUSALS = [
    ("globalcom2", {}, "global"),
    ("fastervlm", {}, r"\[CLS\]"),
    ("tokencorr", {}, r"\[CLS\]"),
    ("pitome", {}, "metric='projected'"),
    ("tome", {}, "metric='projected'"),
    ("pitome", {"placement": "tower", "metric": "projected"}, "placement='projector'"),
    # DeepStack adds features at the visual positions after the first decoder layers: no IN_LM.
    ("fastv", {}, "inside the language model"),
    ("pyramiddrop", {}, "inside the language model"),
]


@pytest.mark.parametrize("method,options,hint", REFUSALS, ids=lambda x: str(x))
def test_refused_methods_say_why_and_what_is_served(model, method, options, hint):
    config = vtc.registry.make_config(method, ratio=0.3, **options)
    before = config.to_dict()
    with pytest.raises(ValueError, match=hint) as err:
        vtc.compress(model, config)
    message = str(err.value)
    served = message.split("this host serves ", 1)[-1].split(", ")
    assert "Qwen3VL" in message and "qwen3-vl.md" in message
    assert {"random", "uniform", "vidcom2", "evs"} <= set(served)
    assert not {"fastv", "globalcom2"} & set(served)
    assert vtc.get_handle(model) is None
    assert config.to_dict() == before


def test_the_declaration_is_what_the_apps_find():
    """One declaration (the ``vtcompress.hosts`` entry point) makes the family known by its tiny
    model's name, its checkpoints' model_type, its host class and its named loader."""
    from vtcompress.hosts import host_spec, spec_for_model_type, spec_for_tiny
    from vtcompress.integrations.qwen3_vl import HOST, Qwen3VLHost

    assert host_spec("qwen3_vl") is HOST
    assert spec_for_tiny("tiny-qwen3-vl") is HOST and spec_for_model_type("qwen3_vl") is HOST
    assert HOST.host_class() is Qwen3VLHost and Qwen3VLHost.name_defaults == HOST.name_defaults
    assert vtc.load_compressed_qwen3_vl is load_compressed_qwen3_vl


def test_loader_refuses_a_method_before_loading(tmp_path):
    with pytest.raises(ValueError, match="global"):
        load_compressed_qwen3_vl(tmp_path / "missing", "globalcom2")


def test_loader_names_the_fix_for_missing_weights(tmp_path):
    with pytest.raises(OSError, match="model='tiny'"):
        load_compressed_qwen3_vl(tmp_path / "missing", "uniform")


@torch.no_grad()
def test_loader_builds_and_loads_the_tiny_model(model, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    loaded, processor = load_compressed_qwen3_vl("tiny", "tome", ratio=0.5)
    assert (tmp_path / "tiny-qwen3-vl-random" / "config.json").exists()
    from vtcompress.integrations.tiny_models import is_random_tiny

    assert is_random_tiny(tmp_path / "tiny-qwen3-vl-random")
    handle = vtc.get_handle(loaded)
    # A method name gets the host's default metric (a config instance would be refused).
    assert (handle.config.method, handle.config.ratio, handle.config.metric) == ("tome", 0.5, "projected")
    call = inputs(tiny[1], 500, 300)
    again = inputs(processor, 500, 300)
    assert set(again) == set(call) and all(torch.equal(again[k], call[k]) for k in call)
    assert vtc.compress(model, "tome", ratio=0.5).config == handle.config
    assert torch.equal(loaded(**call).logits, model(**call).logits)


@torch.no_grad()
def test_missing_token_types_are_refused(model, tiny):
    call = inputs(tiny[1], 500, 300)
    del call["mm_token_type_ids"]
    vtc.compress(model, "uniform", ratio=0.5)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**call)


@torch.no_grad()
def test_two_dimensional_position_ids_are_refused(model, tiny):
    call = inputs(tiny[1], 500, 300)
    vtc.compress(model, "uniform", ratio=0.5)
    with pytest.raises(ValueError, match="3-D position_ids"):
        model(**call, position_ids=torch.arange(call["input_ids"].shape[1])[None])
