"""Paths users take that once had no test: several return sequences, ``run --ratio 1.0``, a
config passed to the loader keeping its ratio.
"""

import pytest
import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, inputs_for, make_image


def test_generate_with_several_return_sequences_keeps_each_prompt(model, processor):
    inputs = inputs_for(
        processor, [IMAGE_SIZES["wide"], IMAGE_SIZES["letterbox_tall"]], ["Hi?", "What is it?"]
    )
    vtcompress.compress(model, "globalcom2", ratio=0.25)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=True, num_return_sequences=2)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape == (4, prompt_len + 2)
    # Rows 0, 1 answer prompt 0; rows 2, 3 prompt 1: each starts with its caller's own prompt ids.
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"].repeat_interleave(2, dim=0))


def test_cli_run_at_ratio_one_reports_every_token_kept(tmp_path, capsys):
    from vtcompress.integrations.cli import main

    image = tmp_path / "img.png"
    make_image(640, 400).save(image)
    argv = [
        "run",
        "--image",
        str(image),
        "--question",
        "What?",
        "--ratio",
        "1.0",
        "--max-new-tokens",
        "1",
        "--repeats",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every token kept: 2016 -> 2016 (100.0% kept" in out


def test_a_config_passed_to_the_loader_keeps_its_ratio(tmp_path, monkeypatch):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    model, _ = vtcompress.load_compressed_llava("tiny", method=vtcompress.UniformConfig(ratio=0.5))
    assert vtcompress.get_handle(model).config.ratio == 0.5


def test_compress_with_a_config_keeps_it_and_overrides_only_what_is_named(model):
    config = vtcompress.GlobalCom2Config(ratio=0.4, alpha=0.3)
    handle = vtcompress.compress(model, config)
    assert handle.config == config
    handle = vtcompress.compress(model, config, ratio=0.2)
    assert handle.config.ratio == 0.2 and handle.config.alpha == 0.3
    assert config.ratio == 0.4  # the caller's object is never altered
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        vtcompress.compress(model, config, ratio=0.0)
