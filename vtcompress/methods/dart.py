"""DART (Wen et al., EMNLP 2025): keep the image tokens that duplicate the pivots least, inside the
language model after decoder layer K.

Paper mode (``layer=2``, ``image_pivots=4``, ``text_pivots=4``, ``budget="paper"``): pivots are
the tokens with the largest L1 norm of layer K-1's post-RoPE keys (heads and head dimensions
together): 4 image tokens and 4 text tokens after the image. For each pivot, the ``n // 8``
not-yet-kept image tokens with the *lowest* cosine similarity to it are added (``n`` =
``keep_count(N, ratio)``, e.g. 128 of 576), the similarity taken on layer K-1's output after
the model's final norm. The image pivots are kept, the text pivots are not: 4 + 8 * 16 = 132
tokens for 128. Kept tokens keep their original positions.

``budget="exact"`` (default) keeps exactly ``keep_count(N, ratio)``: the image pivots, then
``keep_count(N, ratio) - 4`` tokens split over the pivots (the first pivots take one more where
it does not divide), so every method's ratio means the same count.

Deviations from the official code (read at ``xqy1111111/DART@5a19452f``), all deliberate:

* Pivots are visited image pivots first, then text pivots, each in ascending position; the
  official loop visits a Python ``set`` of positions, whose order is a hash-table artefact.
* Every sequence of a batch is processed (the official code asserts batch size 1); text
  pivots come from the tokens after the last image placeholder (its fixed image start aside).
* Sequences with fewer candidates or text tokens than pivots use the ones they have.
* LLaVA-NeXT / OneVision newline tokens are always kept and not counted (docs/budget.md); the
  official LLaVA-NeXT path counts the whole AnyRes run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import check_choice
from vtcompress.lm_pruning import (
    LMPruningConfig,
    LMStageInputs,
    check_layer,
    dart_keep,
    dart_shares,
    key_l1_norms,
)
from vtcompress.methods.fastv import keep_for_language_model
from vtcompress.registry import register_method


@dataclass
class DARTConfig(LMPruningConfig):
    """``layer``: K; ``image_pivots`` / ``text_pivots``: pivots per sequence; ``budget``:
    ``"exact"`` (``keep_count(N, ratio)``) or ``"paper"`` (the official count, see the module)."""

    layer: int = 2
    image_pivots: int = 4
    text_pivots: int = 4
    budget: str = "exact"

    def validate(self) -> None:
        check_layer("layer", self.layer)
        for name in ("image_pivots", "text_pivots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0; got {value!r}")
        if self.image_pivots + self.text_pivots == 0:
            raise ValueError("DART needs at least one pivot: set image_pivots or text_pivots >= 1")
        check_choice("budget", self.budget, ("exact", "paper"))

    def stages(self) -> list[tuple[int, float]]:
        return [(self.layer, self.ratio)]

    def stage_count(self, stage: int, n: int) -> int:
        target = keep_count(n, self.ratio)
        if self.budget == "exact":
            return target
        per = target // (self.image_pivots + self.text_pivots)
        return min(n, self.image_pivots + per * (self.image_pivots + self.text_pivots))

    def select(self, stage: int, inputs: LMStageInputs) -> Tensor:
        keys = inputs.post_rope_keys(self.layer - 1, inputs.previous_hidden)
        normed = inputs.final_norm(inputs.hidden)
        image_pivots, text_pivots, shares = [], [], []
        for count, n_image, n_text in zip(
            inputs.keep_per_row, inputs.candidates_per_row, inputs.text_per_row
        ):
            pi = min(self.image_pivots, n_image, count)
            pt = min(self.text_pivots, n_text)
            image_pivots.append(pi)
            text_pivots.append(pt)
            shares.append(dart_shares(count, pi, pi + pt))
        keep = dart_keep(
            normed, key_l1_norms(keys), inputs.candidates, inputs.text, shares, image_pivots, text_pivots
        )
        return keep


register_method(
    "dart", DARTConfig, "keep the image tokens least similar to key-norm pivots, after LM layer K (DART)"
)(keep_for_language_model)
