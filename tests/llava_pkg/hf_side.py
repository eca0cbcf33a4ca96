"""The transformers-5 half of the cross-host test: load a llava-format checkpoint as
``LlavaNextForConditionalGeneration`` (key renames only) and run the cases the llava half wrote.

    python tests/llava_pkg/hf_side.py CHECKPOINT CASES.pt OUT.pt

CASES.pt: {"cases": [{"pixel_values" [V,3,S,S], "size" (w, h), "before" ids, "after" ids}],
"runs": [(method, ratio, options)]}. OUT.pt: {(case, method, ratio): {"logits", "positions"}}.
Runs in the 5.x venv; never imported by pytest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

import vtcompress as vtc
from vtcompress.integrations.llava_next.layout import AnyResLayout

IMAGE_ID = 0  # the unknown token: never in the prompts, so free to stand for the image


def convert(checkpoint: Path) -> LlavaNextForConditionalGeneration:
    cfg = json.loads((checkpoint / "config.json").read_text())
    tower_dir = Path(cfg["mm_vision_tower"])
    vision = CLIPVisionConfig.from_pretrained(tower_dir)
    text_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                 "bos_token_id", "eos_token_id", "hidden_act")  # fmt: skip
    text = LlamaConfig(**{k: cfg[k] for k in text_keys if k in cfg}, tie_word_embeddings=False)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        image_grid_pinpoints=cfg["image_grid_pinpoints"],
        vision_feature_layer=cfg["mm_vision_select_layer"],
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config).eval()
    target = set(model.state_dict())
    flat_tower = not any(k.startswith("model.vision_tower.vision_model.") for k in target)
    weights = {}
    for name, tensor in load_file(checkpoint / "model.safetensors").items():
        if name.startswith("model.vision_tower.vision_tower."):
            rest = name.removeprefix("model.vision_tower.vision_tower.")
            name = "model.vision_tower." + (rest.removeprefix("vision_model.") if flat_tower else rest)
        elif name.startswith("model.mm_projector."):
            index, rest = name.removeprefix("model.mm_projector.").split(".", 1)
            name = f"model.multi_modal_projector.linear_{1 if index == '0' else 2}.{rest}"
        elif name.startswith("model.") and not name.startswith("model.image_newline"):
            name = "model.language_model." + name.removeprefix("model.")
        weights[name] = tensor.float()
    model.load_state_dict(weights, strict=True)
    return model


@torch.no_grad()
def main(checkpoint: str, cases_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    model = convert(Path(checkpoint))
    spec = torch.load(cases_file)
    cfg = model.config
    results = {}
    for c, case in enumerate(spec["cases"]):
        w, h = case["size"]
        layout = AnyResLayout.for_image((h, w), cfg.image_grid_pinpoints, 112, 14)
        run = layout.num_tokens() + layout.num_newlines("unpadded")
        ids = torch.cat([case["before"], torch.full((run,), IMAGE_ID), case["after"]])[None]
        inputs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=case["pixel_values"][None],
            image_sizes=torch.tensor([[h, w]]),
        )
        for method, ratio, options in spec["runs"]:
            with vtc.compressed(model, method, ratio=ratio, **options) as handle:
                logits = model(**inputs).logits[0]
                views = handle.last_stats.images[0].views
                name = method + "".join(f"-{v}" for v in options.values())
                results[(c, name, ratio)] = {"logits": logits, "positions": [v.positions for v in views]}
    torch.save(results, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
