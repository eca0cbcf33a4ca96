"""Configuration of the mPLUG-DocOwl1.5 port.

The official ``config.json`` is a LlamaConfig (``model_type: mplug_docowl``) plus a
``visual_config`` dict with two entries: ``visual_model`` (the ViT) and ``visual_hreducer``
(the H-Reducer). :class:`DocOwlConfig` reads that file as it is, so the official checkpoints'
configs load without conversion; the vision parts are read through :class:`DocOwlVisionSpec`
and :class:`HReducerSpec`, plain dataclasses with the official defaults (ViT-L/14 at 448 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from transformers import LlamaConfig

# The placeholder id the processor writes for every visual position. The official code splices
# images at id -200, which never reaches the embedding; a real id keeps logits processors that
# index by prompt ids (repetition penalty) working. LLaMA's <unk> (0) is never produced by its
# byte-fallback tokenizer for real text, and the modality indicator, not the id, is what
# decides where image features go.
DEFAULT_IMAGE_TOKEN_ID = 0


@dataclass
class DocOwlVisionSpec:
    """The ViT of DocOwl1.5 (``visual_config["visual_model"]``); defaults: ViT-L/14 at 448 px."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 448
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    hidden_act: str = "quick_gelu"

    @property
    def grid(self) -> int:
        """Patches per side (32 at 448 px / 14)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass
class HReducerSpec:
    """The H-Reducer (``visual_config["visual_hreducer"]``): convolutions of ``conv_shape`` (rows x cols)."""

    hidden_size: int = 1024
    conv_shape: str = "1x4"
    layer_norm_eps: float = 1e-6

    @property
    def kernel(self) -> tuple[int, int]:
        try:
            kh, kw = (int(x) for x in self.conv_shape.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"conv_shape must look like '1x4', got {self.conv_shape!r}") from err
        return kh, kw


def _spec_from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (data or {}).items() if k in known})


def default_visual_config() -> dict[str, dict[str, Any]]:
    return {"visual_model": asdict(DocOwlVisionSpec()), "visual_hreducer": asdict(HReducerSpec())}


class DocOwlConfig(LlamaConfig):
    """LlamaConfig plus ``visual_config`` (official layout) and the placeholder id.

    Extra fields of the official ``visual_config`` (model_type, initializer ranges, ...) are kept
    in the dict and ignored by the model.
    """

    model_type = "mplug_docowl"

    visual_config: dict | None = None
    image_token_id: int = DEFAULT_IMAGE_TOKEN_ID

    def __post_init__(self, **kwargs):
        if self.visual_config is None:
            self.visual_config = default_visual_config()
        super().__post_init__(**kwargs)

    @property
    def vision_spec(self) -> DocOwlVisionSpec:
        return _spec_from_dict(DocOwlVisionSpec, self.visual_config.get("visual_model"))

    @property
    def hreducer_spec(self) -> HReducerSpec:
        return _spec_from_dict(HReducerSpec, self.visual_config.get("visual_hreducer"))

    @property
    def tokens_per_view(self) -> int:
        """LLM positions one view fills: H-Reducer outputs plus ``vit_eos`` (257 for DocOwl1.5)."""
        kh, kw = self.hreducer_spec.kernel
        g = self.vision_spec.grid
        return (g // kh) * (g // kw) + 1
