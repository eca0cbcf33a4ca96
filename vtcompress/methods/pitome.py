"""PiToMe: energy-based, spectrum-preserving token merging, as a LLaVA-NeXT method.

Paper: "Accelerating Transformers with Spectrum-Preserving Token Merging" (NeurIPS 2024,
arXiv 2405.16148). Written from the paper and facts about its official code (no code taken).

A merge step (see :func:`vtcompress.merge.pitome_plan`): energy
``E_i = mean_j ELU((cos(x_i, x_j) - m_l) / temperature)``; the 2r highest-energy tokens are
split alternately (energy order) into A and B, each A token merges into its most similar B
token, the other tokens (low energy: isolated, informative) are protected. The margin falls
with depth, ``m_l = margin * (1 - l / L)`` (0.9 on HF CLIP). PiToMe's HF CLIP / LLaVA code uses
plain ToMe matching for layers ``l <= 12`` (``bipartite_until``).

Placements, budgets and schedules: :mod:`vtcompress.methods.merging`. The default is the
projector placement with the exact budget; ``PiToMeConfig.paper()`` is the official LLaVA path
(in-tower, constant per-layer keep ratio, plain mean merge, ToMe matching up to layer 12).

Deviations from the official code: the protected/merged split and every step's r come from one
count schedule, so ``ratio`` is the final kept fraction (the official code takes a per-layer
ratio); energy ties break by token index; features merge in float32; the projector placement
(merging after the projector) is ours, for LLaVA-NeXT's spatial packing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtcompress.merge import HF_CLIP_BIPARTITE_UNTIL, HF_CLIP_MARGIN, MergePlan, pitome_plan, tome_plan
from vtcompress.methods.merging import TokenMergingConfig, compress_merging
from vtcompress.methods.merging_batch import merging_batch
from vtcompress.registry import register_batch, register_method


@dataclass
class PiToMeConfig(TokenMergingConfig):
    """PiToMe options (and the shared ones of :class:`TokenMergingConfig`).

    margin: base margin, ``m_l = margin * (1 - l / L)`` (0.9: HF CLIP; 0.75: timm ViTs).
    temperature: ELU temperature, 1 (current official code) or 0.01 (paper-era code).
    bipartite_until: tower layers ``l <= bipartite_until`` use plain ToMe matching, as the
    official HF CLIP path (12); -1 = PiToMe steps everywhere.
    """

    margin: float = HF_CLIP_MARGIN
    temperature: float = 1.0
    bipartite_until: int = HF_CLIP_BIPARTITE_UNTIL

    def validate(self) -> None:
        super().validate()
        if not -1.0 < self.margin < 1.0:
            raise ValueError(f"margin must be in (-1, 1), got {self.margin}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def paper(cls, ratio: float = 0.25, **overrides) -> PiToMeConfig:
        """The official LLaVA path: merge in the tower after every layer with a constant per-layer
        keep ratio (``layer_ratio``, or ``ratio ** (1 / F)``), plain mean merges, ToMe matching for
        layers <= 12. ``PiToMeConfig.paper(layer_ratio=0.9)`` is an official setting."""
        opts = dict(placement="tower", schedule="paper", merge="mean")
        return cls(ratio=ratio, **{**opts, **overrides})

    def counts_cls(self, layer: int) -> bool:
        return layer <= self.bipartite_until

    def plan(self, metric: Tensor, r: int, layer: int, num_layers: int, class_token: bool) -> MergePlan:
        if class_token and layer <= self.bipartite_until:
            return tome_plan(metric, r, class_token=True)
        margin = self.margin * (1 - layer / max(num_layers, 1))
        return pitome_plan(metric[:, 1:] if class_token else metric, r, margin, self.temperature)


register_method(
    "pitome",
    PiToMeConfig,
    "PiToMe energy-based token merging (projector placement by default; in-tower with placement='tower')",
)(compress_merging)
register_batch("pitome")(merging_batch)
