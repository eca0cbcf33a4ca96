"""A tiny LLaVA-OneVision built offline and deterministically (random weights).

Real geometry (SigLIP/14 at 384 px: 27x27 tokens a view, no [CLS]; OneVision's 36 anyres
pinpoints and ``anyres_max_9``; the real image processor), toy widths and depth. Its answers
are meaningless: it exists so that every code path -- processor, compression, forward,
generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations.llava_onevision.processing import build_processor
from vtcompress.integrations.tiny_models import cache_path, mark_random, seeded_model

TINY_NAME = "vtcompress/tiny-llava-onevision-random"
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, VIDEO_TOKEN]
# Qwen2-style turns, as in the llava-hf OneVision chat templates.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
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
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN, VIDEO_TOKEN],
        padding_side="left",
    )


def build_config(vocab_size: int, image_token_id: int, video_token_id: int, pad_token_id: int):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=16384,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def build_tiny_onevision(
    seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32
):
    """Return ``(model, processor)``: a tiny random LLaVA-OneVision, identical for equal seeds."""
    from transformers import LlavaOnevisionForConditionalGeneration

    processor = build_processor(build_tokenizer(), chat_template=CHAT_TEMPLATE)
    tok = processor.tokenizer
    config = build_config(
        len(tok),
        tok.convert_tokens_to_ids(IMAGE_TOKEN),
        tok.convert_tokens_to_ids(VIDEO_TOKEN),
        tok.pad_token_id,
    )
    config._attn_implementation = attn_implementation
    return seeded_model(LlavaOnevisionForConditionalGeneration, config, seed, tok, dtype), processor


def default_tiny_path() -> Path:
    return cache_path("tiny-llava-onevision-random")


def save_tiny_onevision(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = Path(path) if path is not None else default_tiny_path()
    model, processor = build_tiny_onevision(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    mark_random(path, TINY_NAME, seed)
    return path
