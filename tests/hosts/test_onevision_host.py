"""The LLaVA-OneVision host on the tiny offline model: what the conformance suite does not reach
(anyres_max shrinking, multi-image prompts of single views, refusals and host defaults, the loader)."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout
from vtcompress.integrations.llava_onevision.loader import onevision_config

torch.set_num_threads(1)
PROMPT = "<|im_start|>user\n{images}What is here?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny():
    from vtcompress.integrations.llava_onevision.tiny import build_tiny_onevision

    return build_tiny_onevision(seed=0)


@pytest.fixture
def model(tiny):
    model, _ = tiny
    assert vtc.get_handle(model) is None
    yield model
    handle = vtc.get_handle(model)
    if handle is not None:
        handle.remove()


def inputs(processor, images, per_prompt=None):
    """One prompt per image, or ``per_prompt`` = images per prompt (a nested list: multi-image)."""
    if per_prompt is None:
        texts = [PROMPT.format(images="<image>\n") for _ in images]
        return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))
    nested, texts, cursor = [], [], 0
    for n in per_prompt:
        nested.append(images[cursor : cursor + n])
        texts.append(PROMPT.format(images="<image>\n" * n))
        cursor += n
    return dict(processor(images=nested, text=texts, return_tensors="pt", padding=True))


@pytest.fixture(scope="module")
def big(tiny):
    """A 1920 x 1080 image: 3 x 5 crops, unpadded 75 x 135, shrunk by anyres_max_9 to 60 x 108."""
    _, processor = tiny
    return inputs(processor, [make_image(1920, 1080)])


@torch.no_grad()
def test_shrunk_image_keeps_the_rule_count_of_real_lm_tokens(tiny, model, big):
    """Compression works on the tokens the LM would see: every kept token is a stock token, in
    stock order, and every newline of the shrunk map stays."""
    stock = model.model.get_image_features(
        big["pixel_values"], big["image_sizes"], batch_num_images=big["batch_num_images"]
    )
    stock = stock.pooler_output[0]
    handle = vtc.compress(model, "uniform", ratio=0.25)
    logits = model(**big).logits
    image = handle.last_stats.images[0]
    n = 729 + 60 * 108
    assert (image.tokens_before, image.tokens_after) == (n, keep_count(n, 0.25))
    assert (image.newlines_before, image.newlines_after) == (60, 60)
    assert logits.shape[1] == big["input_ids"].shape[1] - (n - keep_count(n, 0.25))
    # Map every kept cell of every tile back to the stock sequence: 729 thumbnail tokens, then
    # 60 rows of 108 tokens + a newline.
    index = [r * 27 + c for r, c in image.views[0].positions]
    for tile, view in enumerate(image.views[1:]):
        for r, c in view.positions:
            row, col = (tile // 4) * 27 + r - 10, (tile % 4) * 27 + c  # map rows 10..69 of 81
            assert 0 <= row < 60 and col < 108
            index.append(729 + row * 109 + col)
    index += [729 + row * 109 + 108 for row in range(60)]
    thumb = len(image.views[0].positions)
    expected = stock[index[:thumb] + sorted(index[thumb:])]
    compressed = model.model.get_image_features(
        big["pixel_values"], big["image_sizes"], batch_num_images=big["batch_num_images"]
    ).pooler_output[0]
    assert torch.equal(compressed, expected)


@torch.no_grad()
def test_shrunk_image_at_ratio_one_and_after_remove_is_bit_identical(tiny, model, big):
    reference = model(**big).logits
    with vtc.compressed(model, "globalcom2", ratio=1.0, score="mean_cos") as handle:
        assert torch.equal(model(**big).logits, reference)
        assert handle.last_stats.tokens_after == handle.last_stats.tokens_before == 729 + 60 * 108
    vtc.compress(model, onevision_config("globalcom2", 0.3)).remove()
    assert torch.equal(model(**big).logits, reference)


@torch.no_grad()
def test_globalcom2_on_a_shrunk_image_keeps_the_budget_per_view(tiny, model, big):
    handle = vtc.compress(model, onevision_config("globalcom2", 0.3))
    model(**big)
    image = handle.last_stats.images[0]
    assert image.tokens_after == keep_count(729 + 60 * 108, 0.3)
    assert image.views[0].kept == keep_count(729, 0.3)  # the thumbnail's share, as on LLaVA-NeXT
    assert all(v.kept <= v.original for v in image.views)
    assert [v.original for v in image.views[-4:]] == [16 * 27] * 4  # partial bottom tiles


@torch.no_grad()
def test_multi_image_prompt_compresses_each_single_view(tiny, model):
    """Images of a multi-image prompt are one 27 x 27 view + one newline each (no crops)."""
    _, processor = tiny
    batch = inputs(processor, [make_image(640, 480), make_image(300, 900, 1)], per_prompt=[2])
    assert batch["input_ids"].eq(model.config.image_token_id).sum() == 2 * 730
    handle = vtc.compress(model, "random", ratio=0.3)
    logits = model(**batch).logits
    images = handle.last_stats.images
    assert [(im.tokens_before, im.tokens_after, im.newlines_after) for im in images] == [(729, 218, 1)] * 2
    assert logits.shape[1] == batch["input_ids"].shape[1] - 2 * (729 - 218)
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


@pytest.mark.parametrize(
    ("config", "fix"),
    [
        ("fastervlm", "SigLIP has no [CLS]"),
        ("tokencorr", "SigLIP has no [CLS]"),
        (vtc.GlobalCom2Config(), "use score='mean_cos'"),
        (vtc.PiToMeConfig(), "use metric='projected'"),
        (vtc.ToMeConfig(), "use metric='projected'"),
    ],
    ids=["fastervlm", "tokencorr", "globalcom2-config", "pitome-config", "tome-config"],
)
def test_methods_needing_cls_or_vision_states_are_refused_naming_the_fix(model, config, fix):
    with pytest.raises(ValueError, match="does not provide") as err:
        vtc.compress(model, config)
    assert fix in str(err.value) and "LlavaOnevisionHost" in str(err.value)
    assert vtc.get_handle(model) is None


@pytest.mark.parametrize(
    ("method", "option", "default"),
    [("globalcom2", "score", "mean_cos"), ("pitome", "metric", "projected"), ("tome", "metric", "projected")],
)
def test_a_method_name_gets_the_host_default_and_an_explicit_option_wins(model, method, option, default):
    handle = vtc.compress(model, method, ratio=0.5)
    assert getattr(handle.config, option) == default and handle.config.ratio == 0.5
    assert vtc.config_for(model, method, ratio=0.5) == handle.config
    handle.remove()
    explicit = {"score": "cls"} if method == "globalcom2" else {"metric": "vision"}
    with pytest.raises(ValueError, match="does not provide"):  # the caller's choice is kept, and refused
        vtc.compress(model, method, **explicit)


def test_host_defaults_apply_to_names_never_to_passed_configs():
    assert onevision_config("globalcom2").score == "mean_cos"
    assert onevision_config("pitome", 0.5).metric == "projected"
    assert onevision_config("globalcom2", method_options={"score": "cls"}).score == "cls"
    passed = vtc.GlobalCom2Config(ratio=0.4)
    made = onevision_config(passed, ratio=0.2)
    assert (passed.score, passed.ratio) == ("cls", 0.4) and (made.score, made.ratio) == ("cls", 0.2)


def test_loader_builds_the_tiny_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    model, processor = vtc.load_compressed_onevision("tiny", ratio=0.5)
    handle = vtc.get_handle(model)
    assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert handle.config.method == "globalcom2" and handle.config.score == "mean_cos"
    batch = inputs(processor, [make_image(500, 300)])
    with torch.no_grad():
        model(**batch)
    layout = OneVisionLayout.for_image((300, 500))
    assert handle.last_stats.images[0].tokens_after == keep_count(layout.num_tokens(), 0.5)
    assert (tmp_path / "tiny-llava-onevision-random" / "vtcompress.json").exists()


@torch.no_grad()
def test_batch_of_shrunk_anyres_and_multi_image_samples_equals_one_by_one(tiny, model):
    """A batch mixing a shrunk anyres image, a small one and a two-image sample (left padding,
    views padded to the batch's largest image) gives each sample what it gets alone."""
    _, processor = tiny
    images = [
        make_image(1920, 1080),
        make_image(640, 480, 1),
        make_image(300, 900, 2),
        make_image(500, 500, 3),
    ]
    per_prompt = [1, 1, 2]
    handle = vtc.compress(model, onevision_config("globalcom2", 0.3))
    batch = model(**inputs(processor, images, per_prompt)).logits[:, -1]
    together = [[v.positions for v in im.views] for im in handle.last_stats.images]
    alone, cursor = [], 0
    for b, n in enumerate(per_prompt):
        single = model(**inputs(processor, images[cursor : cursor + n], [n])).logits[:, -1]
        torch.testing.assert_close(batch[b : b + 1], single, atol=2e-4, rtol=1e-4)
        alone += [[v.positions for v in im.views] for im in handle.last_stats.images]
        cursor += n
    assert together == alone
    assert [im.grid for im in handle.last_stats.images] == [(0, 0), (0, 0)]  # the two-image sample


@torch.no_grad()
def test_sdpa_stays_on_and_no_attention_weights_are_requested(tiny, model):
    _, processor = tiny
    batch = inputs(processor, [make_image(500, 300)])
    handle = vtc.compress(model, "uniform", ratio=0.5)
    out = model(**batch)
    assert model.config._attn_implementation == "sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert out.attentions is None
    handle.remove()
