"""``TokenCorrConfig.paper()`` (union of local draws and outliers) on both hosts, end to end."""

from __future__ import annotations

import math

import pytest
import torch

import vtcompress as vtc
from tests.conftest import IMAGE_SIZES, logits, make_image, prompt
from tests.helpers.tokencorr import blank_page, text_page
from vtcompress.integrations.docowl import mplug_owl2_prompt
from vtcompress.integrations.docowl.tiny import build_tiny_docowl
from vtcompress.methods.tokencorr import TokenCorrConfig

READINGS = [
    TokenCorrConfig.paper(),
    TokenCorrConfig.paper(combine="inside", group_outliers="group"),
    TokenCorrConfig(ratio=0.4, combine="union"),
]
IDS = ["paper", "paper-inside-groupsum", "exact-union"]


def llava_inputs(processor, images, questions):
    return processor(images=images, text=[prompt(q) for q in questions], return_tensors="pt", padding=True)


@pytest.mark.parametrize("cfg", READINGS, ids=IDS)
def test_llava_batch_equals_one_by_one(model, processor, cfg):
    images = [make_image(*IMAGE_SIZES["letterbox_wide"]), text_page(672), blank_page(672)]
    questions = ["What?", "Read the second line.", "Is the page empty?"]
    handle = vtc.compress(model, cfg)
    batched = logits(model, llava_inputs(processor, images, questions))[:, -1]
    stats = handle.last_stats.images
    for i, (image, q) in enumerate(zip(images, questions)):
        alone = logits(model, llava_inputs(processor, [image], [q]))[:, -1]
        one = handle.last_stats.images[0]
        assert [v.positions for v in one.views] == [v.positions for v in stats[i].views]
        assert torch.allclose(batched[i], alone[0], atol=1e-4), i


@torch.no_grad()
def test_llava_ratio_one_is_identical_for_every_reading(model, processor):
    inputs = llava_inputs(processor, [text_page(672), make_image(*IMAGE_SIZES["tall"])], ["a?", "b?"])
    reference = logits(model, inputs)
    for combine in ("union", "inside"):
        with vtc.compressed(model, TokenCorrConfig(ratio=1.0, combine=combine)):
            assert torch.equal(logits(model, inputs), reference)


@pytest.fixture(scope="module")
def docowl():
    return build_tiny_docowl(seed=0)


@pytest.fixture(scope="module")
def docowl_batch(docowl):
    _, proc = docowl
    imgs = [text_page(300).crop((0, 0, 300, 120)), text_page(260, seed=2).crop((0, 0, 110, 260))]
    prompts = [mplug_owl2_prompt("What is the title?"), mplug_owl2_prompt("What is the total?")]
    return imgs, prompts, proc(images=imgs, text=prompts)


@torch.no_grad()
@pytest.mark.parametrize("cfg", READINGS, ids=IDS)
def test_docowl_batch_equals_one_by_one(docowl, docowl_batch, cfg):
    model, proc = docowl
    imgs, prompts, inputs = docowl_batch
    with vtc.compressed(model, cfg) as handle:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        kept = [[v.positions for v in im.views] for im in handle.last_stats.images]
        n = inputs["input_ids"].shape[1]
        for i in range(2):
            one = proc(images=imgs[i], text=prompts[i])
            single = model.generate(**one, max_new_tokens=4, do_sample=False)
            assert [v.positions for v in handle.last_stats.images[0].views] == kept[i]
            assert torch.equal(out[i, n:], single[0, one["input_ids"].shape[1] :])


@torch.no_grad()
def test_docowl_paper_counts_per_crop(docowl, docowl_batch):
    model, _ = docowl
    _, _, inputs = docowl_batch
    with vtc.compressed(model, TokenCorrConfig.paper()) as handle:
        model(**inputs)
    for im in handle.last_stats.images:
        assert im.views[0].kept == im.views[0].original  # the global view stays whole
        for view in im.views[1:]:
            info = view.info
            assert info["budget"] == max(1, math.ceil(info["density"] * view.original - 1e-9))
            assert view.kept == len(info["global"]) + len(info["sampled"])
            assert info["budget"] <= view.kept <= info["budget"] + len(info["global"])


@torch.no_grad()
def test_docowl_ratio_one_is_identical_for_every_reading(docowl, docowl_batch):
    model, _ = docowl
    _, _, inputs = docowl_batch
    reference = model(**inputs).logits
    for kw in ({"combine": "union"}, {"group_outliers": "group"}):
        with vtc.compressed(model, TokenCorrConfig(ratio=1.0, **kw)):
            assert torch.equal(model(**inputs).logits, reference)
