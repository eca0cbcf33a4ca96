"""A tiny Qwen2.5-VL built offline and deterministically (random weights).

Real geometry (14 px patches, 2x2 patch merger, 112 px attention windows with full-attention
blocks, 3-D multimodal rotary positions, the real image processor), toy widths and depth. Its
answers are meaningless: it exists so that every code path -- processor, compression, positions,
forward, generate -- runs without any download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vtcompress.integrations.tiny_models import cache_path, mark_random, seeded_model

TINY_NAME = "vtcompress/tiny-qwen2.5-vl-random"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN]
IMAGE_PROMPT = VISION_START + IMAGE_TOKEN + VISION_END
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def prompt(question: str, images: int = 1) -> str:
    """The tiny model's prompt for ``images`` images followed by ``question``."""
    return f"USER: {IMAGE_PROMPT * images}{question}\nASSISTANT:"


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
        additional_special_tokens=SPECIALS[4:],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def build_processor(tokenizer=None):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from vtcompress.integrations.qwen2_5_vl.processing import ImageOnlyQwen2_5_VLProcessor

    tokenizer = tokenizer or build_tokenizer()
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=64,
        fullatt_block_indexes=[1, 3],
        window_size=112,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
    )
    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    return Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids[IMAGE_TOKEN],
        video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )


def build_tiny_qwen2_5_vl(
    seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32
):
    """Return ``(model, processor)``: a tiny random Qwen2.5-VL, identical for equal seeds."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor = build_processor()
    tok = processor.tokenizer
    config = build_config(tok)
    config._attn_implementation = attn_implementation
    return seeded_model(Qwen2_5_VLForConditionalGeneration, config, seed, tok, dtype), processor


def default_tiny_path() -> Path:
    return cache_path("tiny-qwen2.5-vl-random")


def save_tiny_qwen2_5_vl(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``path`` (default: the user cache)."""
    path = Path(path) if path is not None else default_tiny_path()
    model, processor = build_tiny_qwen2_5_vl(seed)
    model.save_pretrained(path)
    # The image-only processor has no video processor to save: its parts are saved one by one
    # (processing.load_processor reads them back).
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.save_pretrained(path)
    mark_random(path, TINY_NAME, seed)
    return path
