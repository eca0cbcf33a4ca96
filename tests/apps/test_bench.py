"""The cost benchmark (evals/bench): tiny-model runs, the GPU preset's plan, the compressor-cost tool."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _bench(module: str):
    """Import ``evals.bench.<module>`` (evals/ is a folder of scripts, not an installed package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"evals.bench.{module}")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--decoder", "tiny", "--methods", "globalcom2", "--ratios", "0.25", "--batch-sizes", "2",
        "--grids", "2x2", "--decode-tokens", "2", "--no-plots", "--out", str(out),
    ]  # fmt: skip
    _bench("run").main(argv)
    return json.loads((out / "results.json").read_text()), out


def test_json_and_markdown_are_written(result):
    data, out = result
    assert {"machine", "model", "settings", "cases", "summary"} <= set(data)
    assert data["machine"]["torch"] == torch.__version__
    assert (out / "results.md").read_text().startswith("# vtcompress cost benchmark")
    assert [(c["method"], c["ratio"]) for c in data["cases"]] == [("none", 1.0), ("globalcom2", 0.25)]
    for case in data["cases"]:
        assert case["grid"] == [2, 2] and case["batch"] == 2 and case["views"] == 5
        for clock in ("seconds", "cpu_seconds"):
            for key in ("vision", "pack", "prefill", "decode_per_token", "generate"):
                assert case[clock][key] > 0, (case["method"], clock, key)


def test_token_counts(result):
    base, comp = result[0]["cases"]
    for im in base["tokens"]["images"]:
        assert im["after"] == im["before"] == 5 * 576  # a 672x672 image: thumbnail + 2x2 crops
    for im in comp["tokens"]["images"]:
        assert 0 < im["after"] < im["before"]
        assert im["after"] == pytest.approx(0.25 * im["before"], abs=2)
        assert sum(im["views_after"]) == im["after"]
    # The decoder really ran on the shortened prompts (one prefill of the padded batch).
    assert comp["tokens"]["prefill_lengths"] == [max(comp["tokens"]["sequence_after"])]
    assert base["tokens"]["prefill_lengths"] == [max(base["tokens"]["sequence_before"])]
    removed = [b - a for b, a in zip(comp["tokens"]["sequence_before"], comp["tokens"]["sequence_after"])]
    assert removed == [im["before"] - im["after"] + im["newlines_before"] - im["newlines_after"]
                       for im in comp["tokens"]["images"]]  # fmt: skip


def test_flops_follow_token_counts(result):
    data, _ = result
    base, comp = data["cases"]
    text = data["model"]["decoder"]
    d, m = text["hidden_size"], text["intermediate_size"]
    head_dim = d // text["num_attention_heads"]
    dq, dkv = d, text["num_key_value_heads"] * head_dim
    layers = data["model"]["decoder_layers_full"]

    def prefill(n):  # written out per layer, 2 FLOPs per multiply-add, independent of vtcompress.flops
        q, k, v, o = 2 * n * d * dq, 2 * n * d * dkv, 2 * n * d * dkv, 2 * n * dq * d
        scores, weighted_sum = 2 * n * n * dq, 2 * n * n * dq  # Q K^T and P V, full (not causal)
        gate, up, down = 2 * n * d * m, 2 * n * d * m, 2 * n * m * d
        return layers * (q + k + v + o + scores + weighted_sum + gate + up + down)

    for case in (base, comp):
        expected = sum(prefill(n) for n in case["tokens"]["sequence_after"])
        assert case["flops"]["decoder_prefill"] == pytest.approx(expected, rel=1e-12)
        assert case["flops"]["total"] == pytest.approx(
            case["flops"]["vision_tower"] + case["flops"]["projector"] + case["flops"]["decoder_prefill"]
        )
    # Non-tower methods leave the vision FLOPs alone; the decoder's shrink at least as fast as the
    # sequence (the attention term is quadratic) and at most as fast as its square.
    assert comp["flops"]["vision_tower"] == base["flops"]["vision_tower"] > 0
    length = sum(comp["tokens"]["sequence_after"]) / sum(base["tokens"]["sequence_after"])
    flops = comp["flops"]["decoder_prefill"] / base["flops"]["decoder_prefill"]
    assert length**2 <= flops <= length
    assert comp["kv_cache_bytes"] / base["kv_cache_bytes"] == pytest.approx(length)


def test_summary_rows(result):
    data, _ = result
    (row,) = data["summary"]["issue_table"]
    base, comp = data["cases"]
    assert row["flops_ratio"] == pytest.approx(
        comp["flops"]["decoder_prefill"] / base["flops"]["decoder_prefill"]
    )
    assert row["prefill_ratio_cpu"] == pytest.approx(
        comp["cpu_seconds"]["prefill"] / base["cpu_seconds"]["prefill"]
    )
    assert row["overhead"] == pytest.approx(comp["cpu_seconds"]["pack"] / base["cpu_seconds"]["vision"])
    assert row["overhead_target"] == 0.02 and row["overhead_kind"] == "selection"


def test_vision_flops_hand_computed():
    cost = _bench("cost")
    # 2x2-pixel views, 1-pixel patches: N = 4 patches, T = 5 tokens, C = 2, M = 4, one layer.
    vision = SimpleNamespace(
        hidden_size=2, intermediate_size=4, num_hidden_layers=1, image_size=2, patch_size=1
    )
    embed = 2 * 4 * 3 * 2  # 2 N (3 p^2) C
    layer = 5 * (2 * 4 * 2 * 2 + 2 * 2 * 2 * 4) + 2 * 2 * 5 * 5 * 2  # T(8C^2 + 4CM) + 4 T^2 C
    assert cost.vision_tower_flops(vision, views=3) == 3 * (embed + layer)
    text = SimpleNamespace(hidden_size=3)
    assert cost.projector_flops(vision, text, views=2) == 2 * 2 * 4 * (2 * 3 + 3 * 3)


def test_cut_tower_leaves_the_model_as_it_was():
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    models = _bench("models")
    run = _bench("run")
    model, processor = build_tiny_llava_next(seed=0)
    reference, _ = build_tiny_llava_next(seed=0)
    bench = models.BenchModel(model, processor, "tiny", True, 2, 2)
    inputs = run.make_inputs(bench, (1, 2), 1, torch.device("cpu"))
    call = {k: v for k, v in inputs.items() if not k.startswith("_")}
    # A cut run first: transformers installs its hidden-state hooks on the first call.
    with models.cut_vision_tower(model, 1):
        assert len(models.vision_encoder(model).layers) == 1
        with torch.no_grad():
            model(**call)
    assert len(models.vision_encoder(model).layers) == 2
    assert model.config.vision_config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.equal(model(**call).logits, reference(**call).logits)


# --- the compressor-cost tool (evals/bench/compressors.py) ------------------------------------
TINY_COMPRESSORS = ["--methods", "globalcom2,uniform", "--width", "16", "--repeats", "1"]


def test_compressor_costs_are_per_image():
    compressors = _bench("compressors")
    one = compressors.main([*TINY_COMPRESSORS, "--batch", "1", "--emulate", "--path", "per-image"])
    # On a CPU the torch reference runs anyway: forcing it changes nothing but must work.
    two = compressors.main(
        [*TINY_COMPRESSORS, "--batch", "2", "--emulate", "--reference-kernels", "--path", "per-image"]
    )
    assert [r["method"] for r in two] == ["globalcom2", "uniform"]
    counts = (
        "ops_per_image", "kernel_ops_per_image", "host_reads_per_image", "emulated_device_ops_per_image",
        "emulated_syncs_per_image", "emulated_h2d_per_image", "emulated_host_ops_per_image",
    )  # fmt: skip
    for a, b in zip(one, two):
        assert b["cpu_ms_per_batch"] > 0 and b["ms_per_batch"] > 0
        assert 0 < b["kernel_ops_per_image"] < b["ops_per_image"]  # views are not kernels
        assert b["emulated_device_ops_per_image"] > 0
        # Device -> host reads stall an accelerator: a handful per image, never one per view or token.
        assert b["host_reads_per_image"] <= 3
        # The same work for every image: counts do not depend on the batch size.
        assert {k: a[k] for k in counts} == {k: b[k] for k in counts}, a["method"]


def test_batched_compressor_costs_are_per_batch():
    """The batched path (the default) does the same work for a batch of 1 or 2: per image, half."""
    compressors = _bench("compressors")
    one = compressors.main([*TINY_COMPRESSORS, "--batch", "1"])
    two = compressors.main([*TINY_COMPRESSORS, "--batch", "2", "--path", "both"])
    batched = [r for r in two if r["path"] == "batched"]
    assert [r["method"] for r in batched] == ["globalcom2", "uniform"]
    for a, b in zip(one, batched):
        assert a["path"] == "batched" and a["host_reads_per_image"] == b["host_reads_per_image"] == 0
        assert a["ops_per_image"] == 2 * b["ops_per_image"]
    per_image = {r["method"]: r["ops_per_image"] for r in two if r["path"] == "per-image"}
    assert all(per_image[r["method"]] > r["ops_per_image"] for r in batched)


def test_emulated_accelerator_counts_launches_syncs_and_copies():
    compressors = _bench("compressors")
    x = compressors.DeviceTensor(torch.arange(6.0))
    with compressors.Emulator() as mode:
        total = (x * 2).sum()  # two launches
        assert total.item() == 30.0  # one sync
        positions = torch.tensor([2, 0]).flip(0).to(compressors.EMULATED)  # a host op, one copy in
        picked = x[positions]  # one launch
        assert picked.tolist() == [0.0, 2.0]  # one sync
        (x > 3).nonzero()  # two launches, one sync: the output size is read back
    assert mode.syncs == 3 and mode.h2d == 1
    assert sum(mode.device_ops.values()) == 5, mode.device_ops
    assert mode.host_ops == 1


def test_compressor_tool_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit, match="no CUDA device"):
        _bench("compressors").main([*TINY_COMPRESSORS, "--device", "cuda"])


# --- the GPU preset of the cost benchmark --------------------------------------------------------
def test_gpu_preset_plan():
    run, models = _bench("run"), _bench("models")
    args = run.parse_args(["--preset", "gpu"])
    assert (args.device, args.dtype, args.decoder, args.decoder_layers) == (
        "cuda",
        "bfloat16",
        "vicuna-7b",
        4,
    )
    assert args.vision_layers is None  # the whole CLIP tower
    assert (args.repeats, args.decode_tokens, args.reuse_vision) == (5, 1, False)
    grids, settings = run.plan_settings(args, models.LLAVA_V16_PINPOINTS, 336)
    assert grids == [(2, 2)] and settings == [((2, 2), 1)]  # a 672x672 image at batch 1
    # Options on the command line win over the preset.
    args = run.parse_args(["--preset", "gpu", "--batch-sizes", "1,8", "--decoder-layers", "32"])
    assert args.decoder_layers == 32 and args.batch_sizes == [1, 8]
    assert run.plan_settings(args, models.LLAVA_V16_PINPOINTS, 336)[1] == [((2, 2), 1), ((2, 2), 8)]
    with pytest.raises(SystemExit):
        run.parse_args(["--preset", "gpu", "--quick"])


def test_gpu_preset_refuses_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit, match="no CUDA device"):
        _bench("run").main(["--preset", "gpu", "--decoder", "tiny", "--out", str(tmp_path)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_preset_and_compressor_counts_on_cuda(tmp_path):
    argv = ["--preset", "gpu", "--decoder", "tiny", "--methods", "uniform", "--ratios", "0.25",
            "--repeats", "1", "--no-plots", "--out", str(tmp_path)]  # fmt: skip
    data = _bench("run").main(argv)
    assert data["machine"]["device"] == "cuda" and "gpu" in data["machine"]
    base, comp = data["cases"]
    assert comp["seconds"]["prefill"] > 0 and comp["tokens"]["images"][0]["after"] == 5 * 576 // 4
    (row,) = _bench("compressors").main([*TINY_COMPRESSORS[2:], "--methods", "uniform", "--device", "cuda"])
    assert row["cuda_kernels_per_image"] > 0 and row["cuda_syncs_per_image"] >= 0


def test_in_lm_methods_count_the_layers_before_k_at_full_length(tmp_path):
    """FastV runs (its stage scaled to the run's depth) and its analytic FLOPs and KV cache count
    layers 0-1 at the full prompt and layers 2.. at the kept length, as the paper's K=2 says."""
    argv = [
        "--decoder", "tiny", "--methods", "fastv", "--ratios", "0.25", "--batch-sizes", "1",
        "--grids", "2x2", "--decode-tokens", "1", "--no-plots", "--out", str(tmp_path),
    ]  # fmt: skip
    _bench("run").main(argv)
    data = json.loads((tmp_path / "results.json").read_text())
    base, fastv = data["cases"]
    text = data["model"]["decoder"]
    d, m = text["hidden_size"], text["intermediate_size"]
    dkv = text["num_key_value_heads"] * (d // text["num_attention_heads"])
    layers = data["model"]["decoder_layers_full"]

    def layer(n):  # one layer's prefill, written out (2 FLOPs per multiply-add, full attention)
        return 2 * n * d * (2 * d + 2 * dkv) + 2 * 2 * n * n * d + 3 * 2 * n * d * m

    (image,) = fastv["tokens"]["images"]
    (full,) = fastv["tokens"]["sequence_before"]
    short = full - image["before"] + image["after"]
    assert image["after"] == int(0.25 * image["before"])
    assert fastv["tokens"]["sequence_after"] == [short]
    assert fastv["flops"]["decoder_prefill"] == pytest.approx(2 * layer(full) + (layers - 2) * layer(short))
    # Dropping as many tokens before the language model would cost less.
    assert fastv["flops"]["decoder_prefill"] > layers * layer(short)
    per_token = base["kv_cache_bytes"] / full
    assert fastv["kv_cache_bytes"] == pytest.approx(per_token * (2 * full + (layers - 2) * short) / layers)
