"""``decoder_prefill_flops`` against an independent count: torch's FlopCounterMode on real decoders.

Conventions of ``vtcompress.flops`` (and of FlopCounterMode, which counts 2 FLOPs per
multiply-add of every matmul): projections and MLP matmuls; the attention scores Q K^T and the
weighted sum P V over the full n x n matrix (eager attention computes it whole, so there is no
causal halving); no embeddings, norms, rotary or activations (elementwise, not counted); no LM
head (it lies outside the decoder layers, 2 * n * d * vocab). Grouped-query attention repeats
the keys to every query head before the matmul, so the attention terms scale with the query width.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vtcompress.flops import decoder_prefill_flops


def _decoder(**overrides):
    from transformers import LlamaConfig, LlamaModel

    shape = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    cfg = LlamaConfig(**{**shape, **overrides})
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return LlamaModel(cfg).eval(), cfg


def _counted(module, **inputs) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(**inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("n", [1, 7, 40])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_key_value_heads": 4}, {"head_dim": 24}],  # GQA, plain MHA, head_dim * heads != hidden
    ids=["gqa", "mha", "wide-heads"],
)
def test_prefill_flops_equal_the_matmuls_torch_counts(n, overrides):
    model, cfg = _decoder(**overrides)
    counted = _counted(model, input_ids=torch.arange(n)[None] % cfg.vocab_size)
    assert decoder_prefill_flops(cfg, n) == counted


def test_configs_without_head_dim_or_kv_heads_default_to_multi_head_attention():
    from types import SimpleNamespace

    model, cfg = _decoder(num_key_value_heads=4)
    bare = SimpleNamespace(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4
    )  # an older config: no head_dim, no num_key_value_heads
    counted = _counted(model, input_ids=torch.arange(9)[None])
    assert decoder_prefill_flops(bare, 9) == counted
    none = SimpleNamespace(**vars(bare), head_dim=None, num_key_value_heads=None)
    assert decoder_prefill_flops(none, 9) == counted


def test_flops_of_the_language_model_inside_a_compressed_llava_match_its_prompt(processor):
    """The FLOPs the stats report are those of the prompt the language model really ran."""
    import vtcompress
    from tests.conftest import IMAGE_SIZES, inputs_for
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, _ = build_tiny_llava_next(attn_implementation="eager")
    inputs = inputs_for(processor, [IMAGE_SIZES["letterbox_wide"]])
    handle = vtcompress.compress(model, "uniform", ratio=0.25)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(**inputs)
    lm = {k: v for k, v in counter.get_flop_counts().items() if k.endswith("model.language_model")}
    (lm_flops,) = [sum(v.values()) for v in lm.values()]
    (sample,) = handle.last_stats.samples
    assert sample.length_after == out.logits.shape[1] < sample.length_before
    assert sample.prefill_flops_after == lm_flops
    assert sample.prefill_flops_before == decoder_prefill_flops(
        model.config.text_config, sample.length_before
    )
