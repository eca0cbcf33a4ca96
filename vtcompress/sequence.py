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
    keep: bool [B, L] which original positions survive (the input's padding does not: each row
    is re-padded); left_padded: whether the rows were re-padded on the left (as the input was);
    lengths: per row, the entries kept (host ints); removed: per row, the placeholders cut (host
    ints).
    """

    input_ids: Tensor
    attention_mask: Tensor
    extras: dict[str, Tensor]
    keep: Tensor
    left_padded: bool = False
    lengths: list[int] | None = None
    removed: list[int] | None = None


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
    placeholders: list[int] | None = None,
    left: bool | None = None,
    padding: list[int] | None = None,
) -> ShortenedBatch:
    """Cut image ``i``'s placeholder run from ``old_lengths[i]`` to ``new_lengths[i]`` tokens.

    Args:
        input_ids: long [B, L] from the processor (images' runs in batch order).
        old_lengths / new_lengths: per image, in batch order.
        attention_mask: optional [B, L]; its padding side is kept (:func:`padding_side`).
        extras: other [B, L, ...] tensors to cut alike. ``position_ids`` are renumbered so each
            row stays contiguous (a kept token moves down by the tokens removed before it).
        kept: optional, per image, the ascending indices (0 .. old length - 1, CPU) of the run's
            placeholders that stay, ``new_lengths[i]`` of them; default: the first
            ``new_lengths[i]`` (where the placeholders only count, not which ones stay).
        placeholders / left / padding: each row's placeholder count, the padding side and each
            row's padding entries, where the caller has read them already
            (:class:`~vtcompress.integrations.placeholder_host.PlaceholderHost` reads them with
            everything else it needs in one device -> host copy); read here otherwise.
    Returns:
        ShortenedBatch, re-padded to the longest new row. Given ``placeholders``, ``left`` and
        ``padding``, nothing is read back from the device.
    """
    keep, removed = placeholder_keep_mask(
        input_ids, image_token_id, old_lengths, new_lengths, kept, placeholders
    )
    return cut_rows(input_ids, keep, removed, attention_mask, extras, pad_token_id, left, padding)


def placeholder_keep_mask(
    input_ids: Tensor,
    token_id: int,
    old_lengths: list[int],
    new_lengths: list[int],
    kept: list[Tensor] | None = None,
    placeholders: list[int] | None = None,
) -> tuple[Tensor, list[int]]:
    """Which tokens stay when media ``i``'s run of ``token_id`` placeholders is cut from
    ``old_lengths[i]`` to ``new_lengths[i]`` (arguments as :func:`shorten_placeholder_runs`'s):
    bool [B, L] (every other token stays) and the tokens removed from each row. Masks of several
    placeholder ids combine with ``&``, their removed counts add up (:func:`cut_rows`)."""
    B, L = input_ids.shape
    device = input_ids.device
    is_ph = input_ids == token_id
    if placeholders is None:
        placeholders = is_ph.sum(1).tolist()
    owners = assign_images_to_samples(placeholders, old_lengths)
    # On the host: which of each row's placeholders (by rank in the row) stay.
    stays = torch.ones(B, max(max(placeholders, default=0), 1), dtype=torch.bool)
    removed = [0] * B
    for b, images in enumerate(owners):
        start = 0
        for i in images:
            old, new = old_lengths[i], new_lengths[i]
            if kept is None:  # keep the first new_len placeholders of this image's run
                stays[b, start + new : start + old] = False
            else:
                stay = kept[i].detach().cpu().long()  # a no-op for the CPU indices hosts pass
                if stay.numel() != new:
                    raise ValueError(f"image {i}: {stay.numel()} kept indices for a new length of {new}")
                if stay.numel() and not (0 <= int(stay.min()) and int(stay.max()) < old):
                    raise ValueError(f"image {i}: kept indices must lie in 0..{old - 1}")
                stays[b, start : start + old] = False
                stays[b, start + stay] = True
            removed[b] += old - new
            start += old
    rank = (is_ph.long().cumsum(1) - 1).clamp_min(0)
    return ~is_ph | stays.to(device).gather(1, rank), removed


def padding_side(leading: list[int], trailing: list[int]) -> bool:
    """Whether a batch is padded on the left, from each row's count of padding entries (attention
    mask 0) before its first real token (``leading``) and after its last (``trailing``).

    Left when no row has trailing padding, right when no row has leading padding; a batch without
    padding counts as left (what ``generate`` needs once the cut rows differ in length). Raises
    ValueError when rows are padded on both sides.
    """
    if not any(trailing):
        return True
    if not any(leading):
        return False
    raise ValueError(
        "the attention mask pads some rows on the left and some on the right: pad every row on one "
        "side (the tokenizer's padding_side, 'left' for generation)"
    )


def row_padding(attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of ``attention_mask`` [B, L]: the count of padding entries before its first real
    token and after its last (long [B] each, on the mask's device; a row of padding counts L in
    both)."""
    real = attention_mask != 0
    leading = (real.long().cumsum(1) == 0).sum(1)
    trailing = (real.flip(1).long().cumsum(1) == 0).sum(1)
    return leading, trailing


def cut_rows(
    input_ids: Tensor,
    keep: Tensor,
    removed: list[int],
    attention_mask: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
    pad_token_id: int = 0,
    left: bool | None = None,
    padding: list[int] | None = None,
) -> ShortenedBatch:
    """Keep the tokens ``keep`` (bool [B, L]) marks -- ``removed[b]`` fewer in row ``b`` -- in
    ``input_ids``, the mask and ``extras`` (``position_ids`` renumbered so each row stays
    contiguous), and re-pad the rows to the longest one on the input's side.

    The input's padding is dropped, so the batch is as long as its longest shortened row.
    ``left`` (the padding side) and ``padding`` (per row, its padding entries on that side: host
    ints) are read from the mask when None (:func:`padding_side`, :func:`row_padding`); masked
    entries elsewhere in a row stay.
    """
    L = input_ids.shape[1]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if left is None or padding is None:
        leading, trailing = (t.tolist() for t in row_padding(attention_mask))
        left = padding_side(leading, trailing) if left is None else left
        padding = leading if left else trailing
    extras = dict(extras or {})
    if "position_ids" in extras:
        extras["position_ids"] = extras["position_ids"] - torch.cumsum(~keep, dim=1).to(
            extras["position_ids"].dtype
        )
    if any(padding):
        index = torch.arange(L, device=keep.device)[None]
        count = torch.tensor(padding, device=keep.device)[:, None]
        keep = keep & ((index >= count) if left else (index < L - count))
    lengths = [L - p - r for p, r in zip(padding, removed)]
    new_ids = compact_rows(input_ids, keep, left, pad_token_id, lengths)
    new_mask = compact_rows(attention_mask, keep, left, 0, lengths)
    new_extras = {k: compact_rows(v, keep, left, _PAD_VALUES.get(k, 0), lengths) for k, v in extras.items()}
    return ShortenedBatch(new_ids, new_mask, new_extras, keep, left, lengths, removed)


def compact_rows(
    values: Tensor, keep: Tensor, left: bool, fill: int | float = 0, lengths: list[int] | None = None
) -> Tensor:
    """Each row's kept entries, re-padded with ``fill`` to the longest row.

    Args:
        values: [B, L, ...]; keep: bool [B, L]; left: pad on the left (else on the right).
        lengths: each row's kept count where the caller knows it (read from ``keep`` otherwise,
            one device -> host copy).
    Returns:
        [B, L', ...] with L' the largest number of kept entries in a row.
    """
    if lengths is None:
        lengths = keep.sum(1).tolist()
    batch, length = keep.shape
    new_len = max(lengths, default=0)
    # Every kept entry's place in the flat [B * L'] output; dropped entries go to one extra slot.
    place = keep.long().cumsum(1) - 1
    if left:
        shift = torch.tensor([new_len - n for n in lengths], device=keep.device)
        place = place + shift[:, None]
    rows = torch.arange(batch, device=keep.device)[:, None] * new_len
    spare = batch * new_len
    place = torch.where(keep, place + rows, spare)
    rest = values.shape[2:]
    out = values.new_full((spare + 1, *rest), fill)
    index = place.reshape(-1, *([1] * len(rest))).expand(-1, *rest)
    out.scatter_(0, index, values.reshape(-1, *rest))
    return out[:spare].view(batch, new_len, *rest)
