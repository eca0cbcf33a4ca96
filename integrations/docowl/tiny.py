"""A tiny, deterministic DocOwl1.5 built offline: same architecture, toy sizes, random weights.

``build_tiny_docowl()`` returns (model, processor); ``save_tiny_docowl(path)`` writes it in the
official checkpoint format (``config.json`` with ``model_type: mplug_docowl`` and
``visual_config``, weights under the official key names in sharded ``pytorch_model-*.bin`` files
with an index, or safetensors, plus the tokenizer), so the loader is tested on the format of the
real checkpoints. Nothing is downloaded; the tokenizer is a small LLaMA-style BPE (Metaspace,
byte fallback) whose vocabulary is written out here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vtcompress.integrations.docowl.configuration import DocOwlConfig
from vtcompress.integrations.docowl.modeling import DocOwlForConditionalGeneration
from vtcompress.integrations.docowl.processing import DocOwlImageOptions, DocOwlProcessor
from vtcompress.integrations.tiny_models import TEXT_SIZES, VISION_SIZES

# Words that get whole-word tokens (so prompts tokenize into a handful of ids).
_WORDS = (
    "USER ASSISTANT What is the title of this document page table chart value total year "
    "global_img crop_img_row col answer question text"
).split()


def tiny_config(**overrides: Any) -> DocOwlConfig:
    """Tiny sizes: ViT 2 layers x 32 wide at 112 px (8x8 patches -> 8x2 tokens + vit_eos = 17 per view)."""
    vocab = len(tiny_vocab()[0])
    kwargs: dict[str, Any] = dict(
        TEXT_SIZES,
        vocab_size=vocab,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        visual_config={
            "visual_model": {
                **VISION_SIZES,
                "image_size": 112,
                "patch_size": 14,
                "layer_norm_eps": 1e-6,
                "hidden_act": "quick_gelu",
                "model_type": "mplug_owl_vision_model",
            },
            "visual_hreducer": {
                "hidden_size": 32,
                "conv_shape": "1x4",
                "layer_norm_eps": 1e-6,
                "model_type": "mplug_docowl_hreducer",
            },
        },
        architectures=["MPLUGDocOwlLlamaForCausalLM"],
    )
    kwargs.update(overrides)
    return DocOwlConfig(**kwargs)


def tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """LLaMA-style vocabulary: <unk> <s> </s>, 256 byte tokens, printable ASCII, whole-word merges."""
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in ["▁"] + [chr(c) for c in range(33, 127)]:
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        piece = "▁" + word
        current = piece[0]
        for ch in piece[1:]:
            merged = current + ch
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((current, ch))
            current = merged
    return vocab, merges


def tiny_tokenizer():
    """A transformers ``LlamaTokenizer`` over :func:`tiny_vocab` (deterministic, offline)."""
    from transformers import LlamaTokenizer

    vocab, merges = tiny_vocab()
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_prefix_space=True)
    tok.pad_token = "<unk>"
    return tok


def build_tiny_docowl(
    seed: int = 0, **config_overrides: Any
) -> tuple[DocOwlForConditionalGeneration, DocOwlProcessor]:
    """Tiny model (fp32, eval mode, weights drawn from ``seed``) and its processor."""
    config = tiny_config(**config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DocOwlForConditionalGeneration(config)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            # Own draw (not transformers' init) so the weights depend only on the seed; norms
            # get non-trivial gains so the text/image copies of each multiway module differ.
            for name, p in sorted(model.named_parameters()):
                if name.endswith(("layernorm.weight", "norm.weight")) or (
                    ".multiway." in name and p.ndim == 1
                ):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    options = DocOwlImageOptions(
        image_size=config.vision_spec.image_size, tokens_per_view=config.tokens_per_view
    )
    return model, DocOwlProcessor(tiny_tokenizer(), options, config.image_token_id)


def official_state_dict(model: DocOwlForConditionalGeneration, with_rotary_buffers: bool = True) -> dict:
    """The model's weights under the official checkpoint keys (identical names), plus the
    ``self_attn.rotary_emb.inv_freq`` buffers transformers 4.31 saved in every layer."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if with_rotary_buffers:
        inv = model.model.rotary_emb.inv_freq.detach().clone()
        for i in range(model.config.num_hidden_layers):
            sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv.clone()
    return sd


def save_official_format(
    model: DocOwlForConditionalGeneration,
    path: str | os.PathLike,
    processor: DocOwlProcessor | None = None,
    safetensors: bool = False,
    shards: int = 2,
) -> Path:
    """Write ``model`` as the official checkpoints are laid out (config, sharded weights + index)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    # The official config is a flat LlamaConfig of transformers 4.31: rope as rope_theta/rope_scaling.
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
    cfg["rope_scaling"] = None
    cfg["model_type"] = "mplug_docowl"
    cfg["architectures"] = ["MPLUGDocOwlLlamaForCausalLM"]
    for key in ("image_token_id", "transformers_version", "dtype"):
        cfg.pop(key, None)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = official_state_dict(model)
    keys = list(sd)
    per = -(-len(keys) // shards)
    weight_map = {}
    ext = "safetensors" if safetensors else "bin"
    prefix = "model" if safetensors else "pytorch_model"
    for s in range(shards):
        part = {k: sd[k].contiguous() for k in keys[s * per : (s + 1) * per]}
        name = f"{prefix}-{s + 1:05d}-of-{shards:05d}.{ext}"
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(path / name), metadata={"format": "pt"})
        else:
            torch.save(part, path / name)
        weight_map.update(dict.fromkeys(part, name))
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
        "weight_map": weight_map,
    }
    (path / f"{prefix}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    if processor is not None:
        processor.save_pretrained(path)
    return path


def save_tiny_docowl(path: str | os.PathLike, seed: int = 0, safetensors: bool = False) -> Path:
    """Build the tiny model and save it, with its processor, in the official format."""
    model, processor = build_tiny_docowl(seed)
    return save_official_format(model, path, processor, safetensors=safetensors)
