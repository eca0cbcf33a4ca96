"""Shortening each sample's image-placeholder runs after compression, and re-padding the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ShortenedBatch:
    """Result of :func:`shorten_placeholder_runs`.

    input_ids: [B, L'] with each image's run cut to its new length; attention_mask: [B, L'];
    extras: the same cut applied to every [B, L, ...] tensor given (labels, position_ids, ...);
    keep: bool [B, L] which original positions survive; left_padded: whether the rows were
    re-padded on the left (as the input was).
    """

    input_ids: Tensor
    attention_mask: Tensor
    extras: dict[str, Tensor]
    keep: Tensor
    left_padded: bool = False


_PAD_VALUES = {"labels": -100, "position_ids": 1}


def assign_images_to_samples(placeholders_per_sample: list[int], lengths: list[int]) -> list[list[int]]:
    """Which images (in batch order) each sample's placeholders belong to.

    Images are consumed in order: sample b owns the next images whose lengths add up to its
    placeholder count. Raises ValueError when they cannot add up.
    """
    owners, cursor = [], 0
    for b, count in enumerate(placeholders_per_sample):
        mine, total = [], 0
        while total < count and cursor < len(lengths):
            mine.append(cursor)
            total += lengths[cursor]
            cursor += 1
        if total != count:
            raise ValueError(
                f"sample {b} has {count} image placeholder tokens, which do not match its images' "
                f"feature counts {[lengths[i] for i in mine]}: pass the processor's unmodified input_ids"
            )
        owners.append(mine)
    if cursor != len(lengths):
        raise ValueError(f"{len(lengths) - cursor} image(s) have no placeholder run in input_ids")
    return owners


def shorten_placeholder_runs(
    input_ids: Tensor,
    image_token_id: int,
    old_lengths: list[int],
    new_lengths: list[int],
    attention_mask: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
    pad_token_id: int = 0,
    kept: list[Tensor] | None = None,
) -> ShortenedBatch:
    """Cut image ``i``'s placeholder run from ``old_lengths[i]`` to ``new_lengths[i]`` tokens.

    Args:
        input_ids: long [B, L] from the processor (images' runs in batch order).
        old_lengths / new_lengths: per image, in batch order.
        attention_mask: optional [B, L]; its padding side (left when every row ends with a real
            token) is kept.
        extras: other [B, L, ...] tensors to cut alike. ``position_ids`` are renumbered so each
            row stays contiguous (a kept token moves down by the tokens removed before it).
        kept: optional, per image, the ascending indices (0 .. old length - 1) of the run's
            placeholders that stay, ``new_lengths[i]`` of them; default: the first
            ``new_lengths[i]`` (where the placeholders only count, not which ones stay).
    Returns:
        ShortenedBatch, re-padded to the longest new row.
    """
    keep = placeholder_keep_mask(input_ids, image_token_id, old_lengths, new_lengths, kept)
    return cut_rows(input_ids, keep, attention_mask, extras, pad_token_id)


def placeholder_keep_mask(
    input_ids: Tensor,
    token_id: int,
    old_lengths: list[int],
    new_lengths: list[int],
    kept: list[Tensor] | None = None,
) -> Tensor:
    """bool [B, L]: which tokens stay when media ``i``'s run of ``token_id`` placeholders is cut from
    ``old_lengths[i]`` to ``new_lengths[i]`` (arguments as :func:`shorten_placeholder_runs`'s);
    every other token stays. Masks of several placeholder ids combine with ``&``."""
    B, L = input_ids.shape
    device = input_ids.device
    is_ph = input_ids == token_id
    owners = assign_images_to_samples(is_ph.sum(1).tolist(), old_lengths)
    keep = torch.ones(B, L, dtype=torch.bool, device=device)
    for b, images in enumerate(owners):
        pos = is_ph[b].nonzero().squeeze(1)
        start = 0
        for i in images:
            run = pos[start : start + old_lengths[i]]
            if kept is None:  # keep the first new_len placeholders of this image's run
                keep[b, run[new_lengths[i] :]] = False
            else:
                stay = kept[i].to(device=device, dtype=torch.long)
                if stay.numel() != new_lengths[i]:
                    raise ValueError(
                        f"image {i}: {stay.numel()} kept indices for a new length of {new_lengths[i]}"
                    )
                keep[b, run] = False
                keep[b, run[stay]] = True
            start += old_lengths[i]
    return keep


def cut_rows(
    input_ids: Tensor,
    keep: Tensor,
    attention_mask: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
    pad_token_id: int = 0,
) -> ShortenedBatch:
    """Keep the tokens ``keep`` (bool [B, L]) marks, in ``input_ids``, the mask and ``extras``
    (``position_ids`` renumbered so each row stays contiguous), re-padded on the input's side."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    extras = dict(extras or {})
    if "position_ids" in extras:
        extras["position_ids"] = extras["position_ids"] - torch.cumsum(~keep, dim=1).to(
            extras["position_ids"].dtype
        )

    left = bool((attention_mask[:, -1] != 0).all())
    new_ids = compact_rows(input_ids, keep, left, pad_token_id)
    new_mask = compact_rows(attention_mask, keep, left, 0)
    new_extras = {k: compact_rows(v, keep, left, _PAD_VALUES.get(k, 0)) for k, v in extras.items()}
    return ShortenedBatch(new_ids, new_mask, new_extras, keep, left)


def compact_rows(values: Tensor, keep: Tensor, left: bool, fill: int | float = 0) -> Tensor:
    """Each row's kept entries, re-padded with ``fill`` to the longest row.

    Args:
        values: [B, L, ...]; keep: bool [B, L]; left: pad on the left (else on the right).
    Returns:
        [B, L', ...] with L' the largest number of kept entries in a row.
    """
    lengths = keep.sum(1).tolist()
    new_len = max(lengths, default=0)
    out = values.new_full((values.shape[0], new_len, *values.shape[2:]), fill)
    for b, n in enumerate(lengths):
        dst = slice(new_len - n, new_len) if left else slice(0, n)
        out[b, dst] = values[b, keep[b]]
    return out
