"""Compression on the DocOwl1.5 port: hook point before the H-Reducer, shortened runs, stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vtcompress as vtc
from tests.conftest import doc_image
from vtcompress.integrations.docowl import DocOwlLayout, mplug_owl2_prompt
from vtcompress.integrations.docowl.tiny import build_tiny_docowl, save_tiny_docowl
from vtcompress.scores import group_keys

torch.set_num_threads(1)
METHODS = ["tokencorr", "globalcom2", "random", "uniform", "fastervlm"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_docowl(seed=0)


@pytest.fixture(scope="module")
def batch(tiny):
    _, proc = tiny
    imgs = [doc_image(300, 120, 6, 1), doc_image(110, 260, 12, 2)]
    prompts = [mplug_owl2_prompt("What is the title?"), mplug_owl2_prompt("What is the total value?")]
    return imgs, prompts, proc(images=imgs, text=prompts)


@torch.no_grad()
@pytest.mark.parametrize("method", METHODS)
def test_ratio_one_and_remove_are_exact(tiny, batch, method):
    model, _ = tiny
    _, _, inputs = batch
    ref = model(**inputs).logits
    ref_gen = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    with vtc.compressed(model, method, ratio=1.0):
        assert torch.equal(model(**inputs).logits, ref)
        assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), ref_gen)
    handle = vtc.compress(model, method, ratio=0.3)
    assert model(**inputs).logits.shape[1] < ref.shape[1]
    handle.remove()
    handle.remove()  # idempotent
    assert model.view_compressor is None
    assert torch.equal(model(**inputs).logits, ref)


@torch.no_grad()
@pytest.mark.parametrize("method", ["globalcom2", "random", "uniform", "fastervlm"])
@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.07])
def test_counts_follow_the_ratio_and_runs_are_shortened(tiny, batch, method, ratio):
    model, _ = tiny
    _, _, inputs = batch
    per_view = model.config.tokens_per_view - 1  # 16 H-Reducer tokens in the tiny model
    with vtc.compressed(model, method, ratio=ratio) as handle:
        logits = model(**inputs).logits
    stats = handle.last_stats
    grids = inputs["image_grids"].tolist()
    assert [im.tokens_before for im in stats.images] == [(g + r * c) * per_view for g, r, c in grids]
    for im in stats.images:
        assert im.tokens_after == max(int(np.floor(ratio * im.tokens_before + 1e-9)), len(im.views))
        assert all(v.kept >= 1 for v in im.views)
        assert im.views[0].name == "global" and im.views[1].name == "crop 0,0"
        assert all(0 <= r < per_view // 2 and 0 <= c < 2 for v in im.views for r, c in v.positions)
    # Each sample's prompt lost exactly the dropped tokens of its own images; vit_eos stayed.
    dropped = [im.tokens_before - im.tokens_after for im in stats.images]
    lens = inputs["attention_mask"].sum(1)
    assert [s.length_before for s in stats.samples] == lens.tolist()
    assert [s.length_after for s in stats.samples] == [int(lens[i]) - dropped[i] for i in range(2)]
    assert all(s.flops_saved > 0 for s in stats.samples)
    assert logits.shape[1] == max(s.length_after for s in stats.samples)


@torch.no_grad()
def test_compressed_tokens_are_the_kept_hreducer_outputs_and_vit_eos(tiny, batch):
    """The model's decoder input equals H-Reducer outputs at the kept positions + vit_eos, and
    reducing only the kept 1x4 groups gives the same tokens (selection before == after)."""
    model, _ = tiny
    _, _, inputs = batch
    pv = inputs["pixel_values"]
    vit = model.model.vision_model(pv)
    full = model.model.vision2text(vit)  # [V, 17, H]
    with vtc.compressed(model, "uniform", ratio=0.25) as handle:
        merged = model.merge_inputs(inputs["input_ids"], inputs["attention_mask"], pv, inputs["image_grids"])
    views = [v for im in handle.last_stats.images for v in im.views]
    assert len(views) == pv.shape[0]
    expected, from_groups = [], []
    grid, group = model.config.vision_spec.grid, model.model.vision2text.group
    patches = vit[:, 1:].reshape(pv.shape[0], grid, grid // group, group, -1)
    for v, stats in enumerate(views):
        pos = torch.tensor([r * (grid // group) + c for r, c in stats.positions])
        expected.append(torch.cat([full[v, pos], full[v, -1:]]))
        kept = patches[v].reshape(-1, group, patches.shape[-1])[pos]
        from_groups.append(model.model.vision2text.reduce_groups(kept))
    got = merged["inputs_embeds"][merged["modality_indicators"].bool()]
    torch.testing.assert_close(got, torch.cat(expected))
    torch.testing.assert_close(
        torch.cat(from_groups), torch.cat([e[:-1] for e in expected]), rtol=1e-5, atol=1e-6
    )


@torch.no_grad()
@pytest.mark.parametrize("method", ["tokencorr", "globalcom2"])
def test_compressed_batch_equals_one_by_one(tiny, batch, method):
    model, proc = tiny
    imgs, prompts, inputs = batch
    with vtc.compressed(model, method, ratio=0.4):
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        n = inputs["input_ids"].shape[1]
        assert torch.equal(out[:, :n], inputs["input_ids"])  # the caller's prompt comes back
        for i in range(2):
            one = proc(images=imgs[i], text=prompts[i])
            single = model.generate(**one, max_new_tokens=5, do_sample=False)
            assert torch.equal(out[i, n:], single[0, one["input_ids"].shape[1] :])


@torch.no_grad()
def test_tokencorr_grouped_mode_keeps_global_view_and_reports_density(tiny, batch):
    model, _ = tiny
    _, _, inputs = batch
    with vtc.compressed(model, "tokencorr", ratio=0.5) as handle:
        model(**inputs)
    for im in handle.last_stats.images:
        glob, crops = im.views[0], im.views[1:]
        assert glob.kept == glob.original  # the global view stays whole by default
        assert all(1 <= v.kept <= v.original for v in crops)
        assert all("density" in v.info for v in crops)
    with vtc.compressed(model, "tokencorr", ratio=0.5, compress_global=True) as handle:
        model(**inputs)
    assert any(im.views[0].kept < im.views[0].original for im in handle.last_stats.images)


def test_group_keys_give_mean_patch_logits():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 1 + 64, 4, 8, generator=g)
    q = torch.randn(2, 4, 8, generator=g)
    pooled = group_keys(keys, patch_grid=(8, 8), group=(1, 4))
    assert pooled.shape == (2, 1 + 16, 4, 8)
    logits = torch.einsum("vhd,vthd->vht", q, keys)
    per_group = logits[:, :, 1:].reshape(2, 4, 8, 2, 4).mean(-1).reshape(2, 4, 16)
    torch.testing.assert_close(torch.einsum("vhd,vthd->vht", q, pooled)[:, :, 1:], per_group)


def test_layout_geometry():
    lay = DocOwlLayout(rows=2, cols=3, global_view=True, grid_h=32, grid_w=8)
    assert lay.num_views == 7 and lay.num_tokens() == 7 * 256 and lay.view_grid == (32, 8)
    assert lay.crop_valid_mask().shape == (6, 256) and lay.view_names()[:2] == ["global", "crop 0,0"]
    assert DocOwlLayout(1, 1, False, 32, 8).view_names() == ["crop 0,0"]


def test_bad_settings_name_the_fix(tiny):
    model, proc = tiny
    with pytest.raises(ValueError, match="ratio >= 1/16"):
        vtc.compress(model, "uniform", ratio=0.05)
    assert model.view_compressor is None
    img = doc_image(200, 100, 3)
    saved = proc.options.add_global_img
    proc.options.add_global_img = False
    try:
        inputs = proc(images=img, text=mplug_owl2_prompt("title?"))
    finally:
        proc.options.add_global_img = saved
    assert inputs["image_grids"][0, 0] == 0
    with vtc.compressed(model, "globalcom2", ratio=0.5), pytest.raises(ValueError, match="add_global_img"):
        model(**inputs)
    with vtc.compressed(model, "uniform", ratio=0.5) as handle:  # other methods work without it
        model(**inputs)
    assert handle.last_stats.images[0].views[0].name == "crop 0,0"


@torch.no_grad()
def test_load_compressed_docowl(tmp_path, batch):
    _, prompts, _ = batch
    save_tiny_docowl(tmp_path, seed=0)
    model, proc = vtc.load_compressed_docowl(str(tmp_path), method="globalcom2", ratio=0.25)
    handle = vtc.get_handle(model)
    assert handle is not None and handle.config.method == "globalcom2" and handle.config.ratio == 0.25
    inputs = proc(images=doc_image(300, 120, 6, 1), text=prompts[0])
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert handle.last_stats.tokens_after < handle.last_stats.tokens_before
