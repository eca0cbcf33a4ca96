"""A tiny random checkpoint in the original LLaVA codebase's format, built offline (for tests and
demos): ``build_tiny_llava_checkpoint(folder)`` writes a LLaVA-1.6-style (anyres,
``spatial_unpad``) or LLaVA-1.5-style (``pad``) model that ``llava.model.builder.load_pretrained_model``
loads. Needs the ``llava`` package, transformers 4.x, sentencepiece and protobuf.

Sizes follow LLaVA-1.6 scaled down by 3: 112 px views of 8 x 8 tokens (patch 14) and the
pinpoints of LLaVA-1.6 divided by 3. All weights are rounded to float16-representable values, so
the builder's float16 load followed by ``model.float()`` is lossless.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

VIEW_PX, PATCH_PX = 112, 14
PINPOINTS = [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]


def _tokenizer(folder: Path, seed: int):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    words = "a the picture image what where is in of red blue square circle count shapes user assistant chat".split()
    rng = random.Random(seed)
    text = folder / "corpus.txt"
    text.write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(400)))
    prefix = folder / "sp"
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=400, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    tokenizer = LlamaTokenizer(str(prefix) + ".model", legacy=False, padding_side="right")
    text.unlink()
    return tokenizer


@torch.random.fork_rng(devices=[])  # weights from ``seed``; the caller's global RNG is left as it was
def build_tiny_llava_checkpoint(folder: str | Path, anyres: bool = True, seed: int = 0) -> Path:
    """Write a tiny checkpoint to ``folder/llava-tiny`` (the name must contain "llava" for the
    builder to load the multimodal class) with its CLIP tower in ``folder/clip-tiny``; returns the
    checkpoint folder."""
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    folder = Path(folder).resolve()
    torch.manual_seed(seed)
    tower_dir, model_dir = folder / "clip-tiny", folder / ("llava-tiny" if anyres else "llava-v1.5-tiny")
    tower_cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=VIEW_PX, patch_size=PATCH_PX, projection_dim=32,
    )  # fmt: skip
    tower = CLIPVisionModel(tower_cfg)
    _round_to_half(tower)
    tower.save_pretrained(tower_dir, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": VIEW_PX}, crop_size={"height": VIEW_PX, "width": VIEW_PX}
    ).save_pretrained(tower_dir)
    tokenizer = _tokenizer(folder, seed)
    cfg = LlavaConfig(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=None,
        mm_vision_tower=str(tower_dir), mm_hidden_size=32, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        image_aspect_ratio="anyres" if anyres else "pad",
        mm_patch_merge_type="spatial_unpad" if anyres else "flat",
        image_grid_pinpoints=PINPOINTS if anyres else None,
        mm_use_im_start_end=False, mm_use_im_patch_token=False, tokenizer_padding_side="right",
        tokenizer_model_max_length=2048, unfreeze_mm_vision_tower=True,
        architectures=["LlavaLlamaForCausalLM"],
    )  # fmt: skip
    model = LlavaLlamaForCausalLM(cfg)
    model.get_model().vision_tower.load_model()
    model.get_model().vision_tower.vision_tower.load_state_dict(tower.state_dict())
    if anyres:
        model.get_model().image_newline.data.normal_(0, 1)
    _round_to_half(model)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@torch.no_grad()
def _round_to_half(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.copy_(p.half().float())
