"""Batches padded on the right, built from the processors' left-padded output."""

from __future__ import annotations

import torch


def right_padded(call: dict) -> dict:
    """A left-padded processor batch padded on the right instead: every per-token [B, L] tensor's
    rows shifted so the real tokens come first and the padding last."""
    mask, shape = call["attention_mask"], call["input_ids"].shape
    pads = (mask == 0).sum(1).tolist()
    assert (mask[:, -1] == 1).all() and any(pads), "a left-padded processor batch"

    def shift(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([row.roll(-p, 0) for row, p in zip(t, pads)])

    return {k: shift(v) if torch.is_tensor(v) and v.shape[:2] == shape else v for k, v in call.items()}
