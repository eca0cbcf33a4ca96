"""Benchmark models: LLaVA-NeXT with real dimensions and random weights, or a real checkpoint.

A random-weight model is built from configs (no download): CLIP ViT-L/14-336 on LLaVA-NeXT's
anyres views, LLaVA-NeXT's two-layer GELU projector, and a Llama-style decoder with the width of
Vicuna-7B / Mistral-7B / Vicuna-13B cut to a few layers. Mistral-7B is built as a Llama decoder
with Mistral's widths and grouped KV heads (its sliding window is 4096 tokens, longer than any
prompt here, so the cost is the same). The vocabulary is the offline byte-level tokenizer's
(a few hundred tokens): the embedding and the LM head do not depend on the number of visual
tokens, and ``generate`` computes logits for the last position only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Widths of the decoders LLaVA-NeXT ships with (hidden, MLP, heads, KV heads, full depth).
DECODERS: dict[str, dict[str, int]] = {
    "vicuna-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32),
    "vicuna-13b": dict(hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_key_value_heads=40, num_hidden_layers=40),
}  # fmt: skip

# CLIP ViT-L/14 at 336 px, LLaVA-NeXT's vision tower.
CLIP_L_336: dict[str, int] = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)

# llava-hf/llava-v1.6-*-hf: (height, width) of the anyres canvases.
LLAVA_V16_PINPOINTS: list[list[int]] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


@dataclass
class BenchModel:
    """A model ready to benchmark.

    full_vision_layers / full_decoder_layers: depth of the model the FLOPs are counted for (the
    real checkpoint's). vision_layers / decoder_layers: depth actually run.
    """

    model: nn.Module
    processor: Any
    name: str
    random_weights: bool
    full_vision_layers: int
    full_decoder_layers: int
    describe: dict[str, Any] = field(default_factory=dict)

    @property
    def inner(self) -> nn.Module:
        return self.model.model

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def vision_layers(self) -> int:
        return len(vision_encoder(self.model).layers)

    @property
    def decoder_layers(self) -> int:
        return self.config.text_config.num_hidden_layers

    @property
    def pinpoints(self) -> list[list[int]]:
        return [list(p) for p in self.config.image_grid_pinpoints]


def vision_encoder(model: nn.Module) -> nn.Module:
    """The CLIP encoder (holds ``.layers``) of a LlavaNextForConditionalGeneration."""
    vision = model.model.vision_tower
    return getattr(vision, "vision_model", vision).encoder


@contextlib.contextmanager
def cut_vision_tower(model: nn.Module, layers: int | None) -> Iterator[None]:
    """Run only the first ``layers`` CLIP layers inside the block (None: leave the tower alone).

    The features the compressor sees keep their shapes ([views, 576, D], the [CLS] q/k of the
    last layer run), so compression and the decoder cost exactly what they cost after the full
    tower. Attach ``vtcompress.compress`` inside the block (the adapter hooks the layers present
    when it attaches) and remove it before the block ends.
    """
    encoder = vision_encoder(model)
    full = encoder.layers
    if layers is None or layers >= len(full):
        yield
        return
    _install_output_hooks(model.model.vision_tower)
    # transformers resolves negative hidden-state indices with config.num_hidden_layers.
    configs = {id(c): c for c in (model.config.vision_config, model.model.vision_tower.config)}
    depth = {key: c.num_hidden_layers for key, c in configs.items()}
    encoder.layers = nn.ModuleList(list(full)[:layers])
    for c in configs.values():
        c.num_hidden_layers = layers
    try:
        yield
    finally:
        encoder.layers = full
        for key, c in configs.items():
            c.num_hidden_layers = depth[key]


def _install_output_hooks(tower: nn.Module) -> None:
    """transformers >= 5.2x records hidden states with hooks installed on the first call, on the
    layers present then: install them on the whole tower before a cut hides some layers."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older 5.x: the encoder collects hidden states itself
        return
    maybe_install_capturing_hooks(tower)


def _processor(pinpoints: list[list[int]]):
    from vtcompress.integrations.llava_next.tiny import build_processor

    processor = build_processor()
    processor.image_processor.image_grid_pinpoints = [list(p) for p in pinpoints]
    return processor


def build_random_llava_next(
    decoder: str = "vicuna-7b",
    decoder_layers: int = 2,
    vision_layers: int | None = None,
    pinpoints: list[list[int]] | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    device: torch.device | str = "cpu",
) -> BenchModel:
    """LLaVA-NeXT with real widths and random weights, decoder cut to ``decoder_layers`` layers.

    ``decoder`` is a key of :data:`DECODERS` or ``"tiny"`` (the package's tiny offline model,
    toy widths). ``vision_layers`` cuts CLIP too (None: all 24). The weights are initialised on
    ``device`` (on a GPU, a billion random weights take seconds instead of a minute on the CPU).
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next.tiny import IMAGE_TOKEN, build_config

    pinpoints = [list(p) for p in (pinpoints or LLAVA_V16_PINPOINTS)]
    processor = _processor(pinpoints)
    tok = processor.tokenizer
    image_id, pad_id = tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.pad_token_id
    if decoder == "tiny":
        config = build_config(len(tok), image_id, pad_id)
        full_text = config.text_config.num_hidden_layers
        full_vision = config.vision_config.num_hidden_layers
        config.text_config.num_hidden_layers = min(decoder_layers, full_text)
    else:
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join([*DECODERS, 'tiny'])}")
        widths = dict(DECODERS[decoder])
        full_text = widths.pop("num_hidden_layers")
        full_vision = CLIP_L_336["num_hidden_layers"]
        text = LlamaConfig(
            **widths,
            num_hidden_layers=decoder_layers,
            vocab_size=len(tok),
            max_position_embeddings=8192,
            pad_token_id=pad_id,
            bos_token_id=1,
            eos_token_id=2,
        )
        config = LlavaNextConfig(
            vision_config=CLIPVisionConfig(**CLIP_L_336),
            text_config=text,
            image_token_index=image_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
    config.image_grid_pinpoints = pinpoints
    if vision_layers is not None:
        config.vision_config.num_hidden_layers = min(vision_layers, full_vision)
    config._attn_implementation = attn_implementation
    device = torch.device(device)
    with torch.random.fork_rng(devices=None if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config)
    # Random weights would stop at a random EOS: generate exactly the tokens asked for.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = pad_id
    model = model.to(dtype).eval()
    return BenchModel(
        model,
        processor,
        name=f"llava-next-{decoder}-random" if decoder != "tiny" else "tiny-llava-next-random",
        random_weights=True,
        full_vision_layers=full_vision,
        full_decoder_layers=full_text,
        describe={
            "decoder_preset": decoder,
            "vision": "tiny CLIP" if decoder == "tiny" else "CLIP ViT-L/14-336",
            "vocab_size": len(tok),
        },
    )


def load_checkpoint(
    path_or_id: str, dtype: torch.dtype, device: str, attn_implementation: str | None = None
) -> BenchModel:
    """A real LLaVA-NeXT checkpoint (hub id or local directory; "tiny" for the offline tiny model)."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next import HOST
    from vtcompress.integrations.loading import resolve_model_path
    from vtcompress.integrations.tiny_models import is_random_tiny

    path = resolve_model_path(HOST, path_or_id)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = LlavaNextForConditionalGeneration.from_pretrained(path, **kwargs).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    if getattr(processor.tokenizer, "padding_side", "left") != "left":
        processor.tokenizer.padding_side = "left"
    text_layers = model.config.text_config.num_hidden_layers
    return BenchModel(
        model,
        processor,
        name=str(path_or_id),
        random_weights=is_random_tiny(path),
        full_vision_layers=len(vision_encoder(model).layers),
        full_decoder_layers=text_layers,
        describe={"checkpoint": str(path_or_id)},
    )
