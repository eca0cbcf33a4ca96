"""Loading DocOwl1.5 checkpoints saved in the official layout (tiny model, offline)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vtcompress.integrations.docowl import DocOwlForConditionalGeneration, load_docowl, mplug_owl2_prompt
from vtcompress.integrations.docowl.loader import weight_files
from vtcompress.integrations.docowl.tiny import build_tiny_docowl, save_tiny_docowl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference():
    model, proc = build_tiny_docowl(seed=0)
    inputs = proc(
        images=Image.new("RGB", (260, 120), (10, 200, 90)), text=mplug_owl2_prompt("What is the title?")
    )
    with torch.no_grad():
        return inputs, model(**inputs).logits


@pytest.mark.parametrize("safetensors", [False, True])
def test_official_layout_loads_exactly(tmp_path, reference, safetensors):
    inputs, logits = reference
    save_tiny_docowl(tmp_path, seed=0, safetensors=safetensors)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "mplug_docowl" and "visual_config" in cfg and "rope_parameters" not in cfg
    index = json.loads(next(tmp_path.glob("*.index.json")).read_text())["weight_map"]
    assert any(k.endswith("self_attn.rotary_emb.inv_freq") for k in index)  # as transformers 4.31 saved
    assert len(weight_files(tmp_path)) == 2
    model, proc = load_docowl(tmp_path)
    again = proc(
        images=Image.new("RGB", (260, 120), (10, 200, 90)), text=mplug_owl2_prompt("What is the title?")
    )
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**again).logits, logits)


def test_from_pretrained_and_auto_classes(tmp_path, reference):
    from transformers import AutoConfig, AutoModelForCausalLM

    inputs, logits = reference
    save_tiny_docowl(tmp_path, seed=0)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mplug_docowl"
    for cls in (DocOwlForConditionalGeneration, AutoModelForCausalLM):
        model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
        assert isinstance(model, DocOwlForConditionalGeneration)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, logits)


def test_load_in_bfloat16(tmp_path, reference):
    inputs, logits = reference
    save_tiny_docowl(tmp_path, seed=0)
    model, _ = load_docowl(tmp_path, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    with torch.no_grad():
        out = model(**inputs).logits.float()
    assert (out - logits).abs().max() < 0.1


def test_wrong_model_type_is_rejected(tmp_path):
    save_tiny_docowl(tmp_path, seed=0)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "llava_next"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mplug_docowl"):
        load_docowl(tmp_path)


def test_missing_weights_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights"):
        weight_files(tmp_path)
