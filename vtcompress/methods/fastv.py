"""FastV (Chen et al., ECCV 2024): drop image tokens before decoder layer K by the attention the
last input token pays to them in layer K-1.

Paper mode (the default settings): ``layer=2``; the score is layer K-1's post-softmax attention
(RoPE applied) of the last token of the input, averaged over heads, over the image tokens;
``topk``, kept tokens in their original order and at their original positions.

Deviations from the official code (``pkunlp-icler/FastV``), all deliberate:

* The attention row is recomputed from one query against layer K-1's keys (softmax per head
  over all keys in float32, then the mean over heads) instead of reading ``output_attentions``,
  so SDPA / FlashAttention stay on. The official path casts the softmax to the model dtype
  before the mean; here the mean is taken in float32.
* The budget is a ratio: ``keep_count(N, ratio)`` (floor, at least 1) of each sequence's ``N``
  image tokens; the official flags take a kept count (``round(N * (1 - R))`` in its HF demo).
* Every sequence of a batch is scored on its own row (the official code reads batch element 0),
  with padded keys masked; the KV cache is pruned once at prefill and reused, as the official
  HF and lmms-eval paths do.
* LLaVA-NeXT / OneVision newline tokens are always kept and not counted (docs/budget.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtcompress.lm_pruning import LMPruningConfig, LMStageInputs, check_layer, top_by_score
from vtcompress.registry import register_method
from vtcompress.tokens import ImageTokens, ViewOutput, keep_all


@dataclass
class FastVConfig(LMPruningConfig):
    """``layer``: K, the decoder layer before which tokens are dropped (scored with layer K-1)."""

    layer: int = 2

    def validate(self) -> None:
        check_layer("layer", self.layer)

    def stages(self) -> list[tuple[int, float]]:
        return [(self.layer, self.ratio)]

    def select(self, stage: int, inputs: LMStageInputs) -> Tensor:
        attention = inputs.last_attention(self.layer - 1, inputs.previous_hidden)
        return top_by_score(attention, inputs.candidates, inputs.counts)


def keep_for_language_model(tokens: ImageTokens, config: LMPruningConfig) -> list[ViewOutput]:
    """Before the language model an in-LM method keeps every token."""
    return keep_all(tokens)


register_method(
    "fastv", FastVConfig, "drop image tokens after LM layer K by the last token's attention (FastV)"
)(keep_for_language_model)
