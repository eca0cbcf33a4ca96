"""PyramidDrop (Xing et al., CVPR 2025): drop image tokens in stages inside the language model,
each stage keeping a smaller share by the attention the last instruction token pays them.

Paper mode (the defaults): stages before decoder layers 8, 16 and 24 keep 0.5, 0.25 and 0.125
of a sequence's original image tokens (``ratio=0.5``, ``decay=0.5``: stage ``i`` keeps
``keep_count(N, ratio * decay**i)``). A stage before layer K scores with layer K's own input
norm, q and k projections applied to its input, RoPE at the current (original) positions; the
query is the last token of the input (the last instruction token at prefill); softmax per head,
the mean over heads, then ``topk`` over the remaining image tokens.

Deviations from the official code (``Cooperx521/PyramidDrop@6444f304``), all deliberate:

* Kept tokens keep their original positions; the official code renumbers them 0..len-1 after
  each stage (the in-LM placement here never renumbers, as FastV and DART do not).
* Grouped-query attention is handled (each query head uses its group's keys); the official
  code assumes as many key heads as query heads.
* Batches with left padding: every row is scored on its own (the official code accepts right
  padding only). Softmax and the head mean are in float32.
* ``ratio`` sets the first stage's share and ``decay`` the later ones' (the official lists are
  the same numbers written out); ``layers`` must fit the model (e.g. ``layers=(1, 2, 3)`` on a
  4-layer test model).
* LLaVA-NeXT / OneVision newline tokens are always kept and not counted (docs/budget.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtcompress.lm_pruning import LMPruningConfig, LMStageInputs, check_layer, top_by_score
from vtcompress.methods.fastv import keep_for_language_model
from vtcompress.registry import register_method


@dataclass
class PyramidDropConfig(LMPruningConfig):
    """``ratio``: the first stage's share of the original image tokens (0.5 in the paper);
    ``layers``: the decoder layers the stages act before (a tuple, or ``"8,16,24"`` text as a
    command line gives it); ``decay``: each later stage keeps ``decay`` times the previous share."""

    ratio: float = 0.5
    layers: tuple[int, ...] = (8, 16, 24)
    decay: float = 0.5

    def validate(self) -> None:
        if isinstance(self.layers, str):  # "8,16,24" from a command line or a form
            try:
                self.layers = tuple(int(x) for x in self.layers.replace(" ", "").split(",") if x)
            except ValueError:
                raise ValueError(f"layers must be whole numbers like 8,16,24; got {self.layers!r}") from None
        self.layers = tuple(self.layers)
        if not self.layers:
            raise ValueError("layers must name at least one decoder layer, e.g. layers=(8, 16, 24)")
        for layer in self.layers:
            check_layer("each of layers", layer)
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must increase; got {self.layers}")
        if (
            isinstance(self.decay, bool)
            or not isinstance(self.decay, (int, float))
            or not 0 < self.decay <= 1
        ):
            raise ValueError(f"decay must be a number in (0, 1]; got {self.decay!r}")

    def stages(self) -> list[tuple[int, float]]:
        return [(k, self.ratio * self.decay**i) for i, k in enumerate(self.layers)]

    def select(self, stage: int, inputs: LMStageInputs) -> Tensor:
        attention = inputs.last_attention(self.layers[stage], inputs.hidden)
        return top_by_score(attention, inputs.candidates, inputs.counts)


register_method(
    "pyramiddrop",
    PyramidDropConfig,
    "drop image tokens in stages inside the LM by the last token's attention",
)(keep_for_language_model)
