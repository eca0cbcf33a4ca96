"""ToMe: bipartite soft matching token merging, the reference baseline for PiToMe.

Paper: "Token Merging: Your ViT but Faster" (ICLR 2023). Written from the paper and facts about
its official code (no code taken). A step (:func:`vtcompress.merge.tome_plan`): A = even
sequence positions, B = odd ([CLS] in A, never merged); every A token finds its most similar B
token; the r best-matched A tokens merge into their partners.

It shares placements, budgets and schedules with ``pitome`` (:mod:`vtcompress.methods.merging`),
so the two compare token for token. ``ToMeConfig.paper()`` matches the ToMe baseline of
PiToMe's LLaVA code (in-tower after every layer, constant per-layer keep ratio, hidden states as
the metric, plain mean merge). ToMe's own ViT recipe (size-weighted merge, proportional
attention, constant r per layer: :func:`vtcompress.merge.tome_r_schedule`) is
``placement="tower", merge="weighted", proportional_attention=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtcompress.merge import MergePlan, tome_plan
from vtcompress.methods.merging import TokenMergingConfig, compress_merging
from vtcompress.methods.merging_batch import merging_batch
from vtcompress.registry import register_batch, register_method


@dataclass
class ToMeConfig(TokenMergingConfig):
    """ToMe options: those of :class:`TokenMergingConfig`."""

    @classmethod
    def paper(cls, ratio: float = 0.25, **overrides) -> ToMeConfig:
        """ToMe as PiToMe's LLaVA code runs it: in-tower, constant per-layer keep ratio, plain mean."""
        opts = dict(placement="tower", schedule="paper", merge="mean")
        return cls(ratio=ratio, **{**opts, **overrides})

    def counts_cls(self, layer: int) -> bool:
        return True  # the official matching counts the [CLS] in T when computing r

    def plan(self, metric: Tensor, r: int, layer: int, num_layers: int, class_token: bool) -> MergePlan:
        return tome_plan(metric, r, class_token=class_token)


register_method(
    "tome",
    ToMeConfig,
    "ToMe bipartite soft matching token merging (baseline for pitome; same placements)",
)(compress_merging)
register_batch("tome")(merging_batch)
