"""A tiny LLaVA-NeXT built offline and deterministically (random weights).

Real geometry (CLIP ViT/14 at 336 px: 24x24 tokens a view, LLaVA-NeXT's anyres pinpoints, the
real processor), toy widths and depth. Its answers are meaningless: it exists so that every
code path -- processor, compression, forward, generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations.tiny_models import cache_path, mark_random, seeded_model

TINY_NAME = "vtcompress/tiny-llava-next-random"
IMAGE_TOKEN = "<image>"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer():
    """Byte-level tokenizer: 256 byte tokens + specials, no merges (fully offline, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
        padding_side="left",
    )
    return tokenizer


def build_processor(tokenizer=None):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=PINPOINTS,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the [CLS] token, as in the llava-hf processor configs
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int, image_token_id: int, pad_token_id: int, **text_overrides):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
        projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        **text_overrides,
    )
    return LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def build_tiny_llava_next(
    seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32
):
    """Return ``(model, processor)``: a tiny random LLaVA-NeXT, identical for equal seeds."""
    from transformers import LlavaNextForConditionalGeneration

    processor = build_processor()
    tok = processor.tokenizer
    config = build_config(len(tok), tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.pad_token_id)
    config._attn_implementation = attn_implementation
    return seeded_model(LlavaNextForConditionalGeneration, config, seed, tok, dtype), processor


def default_tiny_path() -> Path:
    return cache_path("tiny-llava-next-random")


def save_tiny_llava_next(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = Path(path) if path is not None else default_tiny_path()
    model, processor = build_tiny_llava_next(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    mark_random(path, TINY_NAME, seed)
    return path
