"""Every method on models of the original LLaVA codebase (``llava`` package), loaded through
``load_pretrained_model`` from tiny checkpoints in its own format: the conformance cases of the
other hosts (tests/conformance/test_conformance.py) for LLaVA-1.6 anyres and LLaVA-1.5.

Runs in ``.venv-llava`` (``.ci/llava-setup.sh``); skips where ``llava`` is not importable.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llava.model.language_model.llava_llama")

import tiny_llava  # noqa: E402  (tests/llava_pkg/tiny_llava.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import vtcompress as vtc  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_pkg.host import IMAGE_TOKEN_INDEX, LlavaPackageHost  # noqa: E402
from vtcompress.integrations.llava_pkg.layout import LlavaPackageLayout  # noqa: E402
from vtcompress.integrations.llava_pkg.tiny import PINPOINTS  # noqa: E402
from vtcompress.packing import pack_views  # noqa: E402
from vtcompress.tokens import keep_all  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore")
METHODS = vtc.available_methods("image")
RATIO = 0.3
# (width, height), as PIL and the llava package give sizes
SIZES = [(200, 150), (150, 200), (300, 90), (500, 333), (1000, 500), (3000, 4), (4, 3000)]


LAYOUTS = {True: "llava-1.6-anyres", False: "llava-1.5-pad"}
# globalcom2 needs a thumbnail: refused on LLaVA-1.5's one view
# (test_globalcom2_is_refused_on_one_view_and_served_on_anyres).
SERVED = [(anyres, m) for anyres in LAYOUTS for m in METHODS if anyres or m != "globalcom2"]


def pytest_generate_tests(metafunc):
    """Tests of ``anyres`` and ``method`` run on the pairs the host serves."""
    if "anyres" not in metafunc.fixturenames:
        return
    ids = LAYOUTS.get
    given = {a.strip() for m in metafunc.definition.iter_markers("parametrize") for a in m.args[0].split(",")}
    if "method" in metafunc.fixturenames and "method" not in given:
        metafunc.parametrize(("anyres", "method"), SERVED, ids=lambda v: ids(v, v), indirect=["anyres"])
    else:
        metafunc.parametrize("anyres", list(LAYOUTS), ids=ids, indirect=True)


@pytest.fixture
def anyres(request):
    yield request.param
    _, model, _ = tiny_llava.loaded(request.param)
    model.config.tokenizer_padding_side = "right"
    if vtc.get_handle(model) is not None:
        vtc.get_handle(model).remove()


def model_of(anyres: bool):
    _, model, _ = tiny_llava.loaded(anyres)
    if vtc.get_handle(model) is not None:
        vtc.get_handle(model).remove()
    return model


def attach(anyres: bool, method: str, ratio: float = RATIO):
    model = model_of(anyres)
    return model, vtc.compress(model, vtc.registry.make_config(method, ratio=ratio))


def picture(width: int, height: int, seed: int = 0):
    return make_image(width, height, seed)


def _runs(flags: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool tensor."""
    edges = torch.diff(torch.cat([torch.tensor([0]), flags.int(), torch.tensor([0])]))
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))


def generate(model, inputs: dict, **kwargs):
    """The llava package's own calling convention: the prompt ids positional."""
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    return model.generate(inputs["input_ids"], **rest, **kwargs)


def test_supports_only_llava_package_classes():
    model = model_of(True)
    assert vtc.api.find_host(model) is LlavaPackageHost
    assert not LlavaPackageHost.supports(torch.nn.Linear(2, 2))


def test_globalcom2_is_refused_on_one_view_and_served_on_anyres():
    with pytest.raises(ValueError, match="globalcom2.*global.*image_aspect_ratio='pad'.*fastervlm"):
        vtc.compress(model_of(False), "globalcom2", ratio=0.25)
    assert vtc.get_handle(model_of(False)) is None
    model = model_of(True)
    handle = vtc.compress(model, "globalcom2", ratio=0.25)
    with torch.no_grad():
        model(**tiny_llava.inputs(True, [picture(500, 333)]))
    image = handle.last_stats.images[0]
    assert image.tokens_after == keep_count(image.tokens_before, 0.25) and not image.passthrough
    handle.remove()


def test_unsupported_merge_type_is_refused():
    model = model_of(True)
    model.config.mm_patch_merge_type = "spatial"
    try:
        with pytest.raises(ValueError, match="spatial_unpad"):
            vtc.compress(model, "fastervlm")
    finally:
        model.config.mm_patch_merge_type = "spatial_unpad"


@torch.no_grad()
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_counts_follow_the_rule(anyres, method, size):
    reference = model_of(anyres)(**tiny_llava.inputs(anyres, [picture(*size)])).logits
    model, handle = attach(anyres, method)
    logits = model(**tiny_llava.inputs(anyres, [picture(*size)])).logits
    image = handle.last_stats.images[0]
    assert image.tokens_after == keep_count(image.tokens_before, RATIO)
    assert sum(v.kept for v in image.views) == image.tokens_after
    assert all(v.kept <= v.original for v in image.views)
    expected_before = LlavaPackageLayout.for_image(size, PINPOINTS, 112, 14) if anyres else None
    if anyres:
        assert image.tokens_before == expected_before.num_tokens()
    else:
        assert image.tokens_before == 64 and image.newlines_before == 0
    removed = (image.tokens_before - image.tokens_after) + (image.newlines_before - image.newlines_after)
    assert logits.shape[1] == reference.shape[1] - removed
    sample = handle.last_stats.samples[0]
    assert sample.length_before == reference.shape[1]
    assert sample.length_before - sample.length_after == removed
    assert torch.isfinite(logits).all()
    handle.remove()


@torch.no_grad()
def test_ratio_one_and_remove_are_bit_identical(anyres, method):
    model = model_of(anyres)
    inputs = tiny_llava.inputs(anyres, [picture(1000, 500), picture(300, 900, seed=1)])
    reference = model(**inputs).logits
    greedy = generate(model, inputs, max_new_tokens=3, do_sample=False)
    model, handle = attach(anyres, method, ratio=1.0)
    if handle.config.is_off:
        assert torch.equal(model(**inputs).logits, reference)
        assert torch.equal(generate(model, inputs, max_new_tokens=3, do_sample=False), greedy)
        assert handle.last_stats.tokens_after == handle.last_stats.tokens_before
    attach(anyres, method)[1].remove()
    assert torch.equal(model(**inputs).logits, reference)
    assert torch.equal(generate(model, inputs, max_new_tokens=3, do_sample=False), greedy)
    assert "prepare_inputs_labels_for_multimodal" not in model.__dict__
    assert "encode_images" not in model.__dict__


@torch.no_grad()
def test_greedy_generate_equals_greedy_forward(anyres, method):
    model, handle = attach(anyres, method)
    inputs = tiny_llava.inputs(anyres, [picture(1000, 500)])
    out = generate(model, inputs, max_new_tokens=3, do_sample=False)
    new = out[:, -3:]  # llava's generate returns the new tokens (after BOS on transformers < 4.38)
    step = dict(inputs)
    for _ in range(3):
        nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
        step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
        step["attention_mask"] = torch.cat([step["attention_mask"], torch.ones_like(nxt)], 1)
    assert torch.equal(new, step["input_ids"][:, -3:])
    assert handle.last_stats.images[0].tokens_after == keep_count(
        handle.last_stats.images[0].tokens_before, RATIO
    )
    handle.remove()


@torch.no_grad()
def test_mixed_size_batch_equals_one_by_one(anyres, method):
    model, handle = attach(anyres, method)
    model.config.tokenizer_padding_side = "left"  # what batched generation needs (docs)
    images = [picture(672, 672), picture(1000, 500, seed=1), picture(300, 900, seed=2)]
    questions = ["What?", "Where is the red square in this picture?", "Count the shapes."]
    batch = model(**tiny_llava.inputs(anyres, images, questions)).logits[:, -1]
    batch_stats = handle.last_stats
    out = generate(model, tiny_llava.inputs(anyres, images, questions), max_new_tokens=3, do_sample=False)
    for i, image in enumerate(images):
        single = model(**tiny_llava.inputs(anyres, [image], [questions[i]])).logits[:, -1]
        torch.testing.assert_close(batch[i : i + 1], single, atol=2e-4, rtol=1e-4)
        alone = handle.last_stats.images[0]
        assert [v.positions for v in alone.views] == [v.positions for v in batch_stats.images[i].views]
        one = generate(
            model, tiny_llava.inputs(anyres, [image], [questions[i]]), max_new_tokens=3, do_sample=False
        )
        assert torch.equal(out[i, -3:], one[0, -3:])
    handle.remove()


@torch.no_grad()
def test_labels_are_cut_with_the_prompt(anyres, method):
    model, handle = attach(anyres, method)
    inputs = tiny_llava.inputs(anyres, [picture(1000, 500)])
    ids = inputs["input_ids"]
    labels = ids.masked_fill(ids == IMAGE_TOKEN_INDEX, -100)
    labels[0, :3] = -100  # a masked prompt prefix stays masked
    out = model(**inputs, labels=labels)
    image = handle.last_stats.images[0]
    ((start, stop),) = _runs(ids[0] == IMAGE_TOKEN_INDEX)
    short = torch.cat(
        [labels[0, :start], torch.full((image.tokens_after + image.newlines_after,), -100), labels[0, stop:]]
    )
    assert short.shape[0] == out.logits.shape[1]
    expected = F.cross_entropy(out.logits[0, :-1].float(), short[1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-4, rtol=1e-4)
    handle.remove()


@torch.no_grad()
def test_several_images_in_one_prompt(anyres, method):
    reference = model_of(anyres)
    inputs = tiny_llava.inputs(anyres, [picture(672, 672), picture(300, 900, seed=1)], per_prompt=[2])
    full = reference(**inputs).logits.shape[1]
    model, handle = attach(anyres, method)
    logits = model(**inputs).logits
    stats = handle.last_stats
    assert len(stats.images) == 2
    removed = sum(
        (im.tokens_before - im.tokens_after) + (im.newlines_before - im.newlines_after) for im in stats.images
    )
    assert logits.shape[1] == full - removed
    assert all(im.tokens_after == keep_count(im.tokens_before, RATIO) for im in stats.images)
    handle.remove()


@torch.no_grad()
@pytest.mark.parametrize("size", [(200, 150), (150, 200), (300, 90), (500, 333), (112, 112), (64, 64)])
def test_keep_all_packing_is_the_stock_sequence(size):
    """pack_views with every token kept rebuilds the llava package's own visual run exactly."""
    model = model_of(True)
    inputs = tiny_llava.inputs(True, [picture(*size)])
    ids = inputs["input_ids"]
    out = model.prepare_inputs_labels_for_multimodal(
        ids, None, inputs["attention_mask"], None, ids.clone(), inputs["images"], inputs["image_sizes"]
    )
    embeds, marks = out[4][0], out[5][0]
    stock = embeds[marks == -100]
    layout = LlavaPackageLayout.for_image(size, PINPOINTS, 112, 14)
    features = model.encode_images(inputs["images"][0])
    from vtcompress.tokens import ImageTokens

    outs = keep_all(ImageTokens(features, layout))
    packed = pack_views(
        layout, [o.positions for o in outs], [o.features for o in outs], model.model.image_newline
    )
    assert torch.equal(packed, stock)


@torch.no_grad()
@pytest.mark.parametrize("method", ["pitome", "tome"])
@pytest.mark.parametrize(
    "options", [{"placement": "tower"}, {"metric": "projected"}], ids=["tower", "projected"]
)
def test_merging_placements(anyres, method, options):
    """Merging inside the CLIP tower (fewer tokens per view than the stock code expects) and
    after the projector: counts follow the rule, generate runs, remove restores the model."""
    model = model_of(anyres)
    inputs = tiny_llava.inputs(anyres, [picture(500, 333)])
    reference = model(**inputs).logits
    handle = vtc.compress(model, method, ratio=RATIO, **options)
    logits = model(**inputs).logits
    image = handle.last_stats.images[0]
    if (
        "placement" in options
    ):  # every view leaves the tower with floor(n^2 r) tokens (docs/methods/merging.md)
        assert 0 < image.tokens_after < image.tokens_before
        assert all(v.kept <= keep_count(64, RATIO) for v in image.views)
    else:
        assert image.tokens_after == keep_count(image.tokens_before, RATIO)
    assert logits.shape[1] == reference.shape[1] - (image.tokens_before - image.tokens_after) - (
        image.newlines_before - image.newlines_after
    )
    assert generate(model, inputs, max_new_tokens=2, do_sample=False).shape[1] >= 2
    handle.remove()
    assert torch.equal(model(**inputs).logits, reference)


@torch.no_grad()
def test_one_view_images_as_a_list_equal_the_stacked_tensor():
    """LLaVA-1.5 takes images stacked [B, 3, S, S] or as a list of [3, S, S] (the 'flat' path)."""
    model = model_of(False)
    inputs = tiny_llava.inputs(False, [picture(500, 333), picture(300, 900, seed=1)])
    handle = vtc.compress(model, "fastervlm", ratio=RATIO)
    stacked = model(**inputs).logits
    listed = model(**{**inputs, "images": list(inputs["images"])}).logits
    assert torch.equal(stacked, listed)
    assert handle.last_stats.images[1].tokens_after == keep_count(64, RATIO)
    handle.remove()
