"""Rotary positions of a compressed M-RoPE prompt in vLLM (Qwen2.5-VL, Qwen3-VL).

Kept tokens keep their uncompressed (t, h, w) positions and text continues as after the
uncompressed media, as on the transformers hosts (:mod:`vtcompress.integrations.mrope_host`).
vLLM computes a prompt's positions before its media are encoded, when only the counts are
known, so this goes through vLLM's pruning interface (``SupportsMultiModalPruning``):

1. :func:`initial_positions` (the model's ``get_mrope_input_positions``): text positions follow
   the transformers rule for the uncompressed media; every placeholder of a run gets the run's
   base for now.
2. The model appends each kept token's (t, h, w), relative to the run's base, to its embedding
   (:func:`with_positions`); vLLM caches these rows like any encoder output.
3. :func:`recompute_positions` (the model's ``recompute_mrope_positions``, which vLLM calls for
   the media rows scheduled in each step, chunked prefill included) writes base + (t, h, w) for
   those rows. The base of a run is the position after the token before it; text positions are
   never changed, so the step is idempotent (preemption, repeated chunks).

vLLM calls step 3 only where its runner has pruning on; :func:`patch_runners` turns it on for
models that set ``recomputes_mrope_positions`` (vLLM 0.32's CPU runner never does otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# A position p travels as two columns (p // BASE, p % BASE): each below 256, so exact even in
# bfloat16 embeddings (which hold integers exactly only up to 256). Positions < BASE ** 2.
BASE = 128
COLUMNS = 6


def encode_positions(rel: Tensor, like: Tensor) -> Tensor:
    """rel long [k, 3] (t, h, w) -> [k, 6] in ``like``'s dtype and device."""
    if rel.numel() and int(rel.max()) >= BASE * BASE:
        raise ValueError(f"a media position of {int(rel.max())} exceeds what vtcompress carries ({BASE**2})")
    cols = torch.stack([rel // BASE, rel % BASE], dim=-1).reshape(rel.shape[0], COLUMNS)
    return cols.to(device=like.device, dtype=like.dtype)


def with_positions(features: Tensor, rel: Tensor) -> Tensor:
    """features [k, D] and their relative (t, h, w) long [k, 3] -> [k, D + 6]."""
    return torch.cat([features, encode_positions(rel, features)], dim=1)


def split_positions(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`with_positions`: (features [k, D], rel long CPU [k, 3])."""
    cols = rows[:, -COLUMNS:].detach().float().round().long().cpu().reshape(-1, 3, 2)
    return rows[:, :-COLUMNS], cols[..., 0] * BASE + cols[..., 1]


def grid_positions(t: int, h: int, w: int, t_step: float | Tensor = 1.0) -> Tensor:
    """long [t * h * w, 3]: (t, h, w) of every merged token in (t, row, col) order, relative to
    the run's base; t is scaled by ``t_step`` (a float32 tensor for clips, as transformers
    computes it) and truncated."""
    tt = (torch.arange(t) * t_step).long()
    grid = torch.meshgrid(tt, torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grid], dim=1)


def initial_positions(num_tokens: int, runs: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, int]:
    """Positions (long [3, N]) of a prompt whose media ``runs`` are (offset, placeholders,
    advance): text after a run continues at the run's base + ``advance`` (the transformers
    rule of the family); placeholders hold the base until :func:`recompute_positions`. Also the
    decode delta (last position + 1 - N)."""
    pos = np.zeros((3, num_tokens), dtype=np.int64)
    cur, start = 0, 0
    for offset, length, advance in sorted(runs):
        pos[:, start:offset] = np.arange(offset - start) + cur
        cur += offset - start
        pos[:, offset : offset + length] = cur
        cur += advance
        start = offset + length
    pos[:, start:] = np.arange(num_tokens - start) + cur
    return torch.from_numpy(pos), decode_delta(pos, num_tokens)


def decode_delta(pos, num_tokens: int) -> int:
    """Generated token i (0-based after the prompt) gets position N + i + delta in every row:
    one past the prompt's last token, as transformers' generate carries positions."""
    return int(pos[:, -1].max()) + 1 - num_tokens if num_tokens else 0


def run_starts(media: Tensor, ids: Tensor) -> Tensor:
    """long [N]: for each token, the index where its run of equal media tokens starts."""
    n = ids.numel()
    new = media.clone()
    new[1:] &= (ids[1:] != ids[:-1]) | ~media[:-1]
    idx = torch.where(new, torch.arange(n), torch.zeros(n, dtype=torch.long))
    return torch.cummax(idx, 0).values


def recompute_positions(
    input_ids: list[int] | Tensor,
    embeddings: Sequence[Tensor],
    positions: Tensor,
    num_computed_tokens: int,
    media_ids: Sequence[int],
) -> tuple[list[Tensor], Tensor, int]:
    """vLLM's ``recompute_mrope_positions``: ``embeddings`` are the media rows scheduled in this
    step, in prompt order, from the first media token at or after ``num_computed_tokens``.
    Returns the rows without their position columns, the positions and the decode delta."""
    ids = torch.as_tensor(input_ids).detach().cpu().long()
    out = positions.clone()
    feats = [e[:, :-COLUMNS] for e in embeddings]
    if embeddings:
        rel = torch.cat([split_positions(e)[1] for e in embeddings])
        media = torch.zeros_like(ids, dtype=torch.bool)
        for token in media_ids:
            media |= ids == token
        rows = torch.nonzero(media).flatten()
        rows = rows[rows >= num_computed_tokens][: rel.shape[0]]
        if rows.numel() != rel.shape[0]:
            raise RuntimeError(
                f"{rel.shape[0]} media rows for {rows.numel()} placeholders left in the prompt"
            )
        starts = run_starts(media, ids)[rows]
        before = (starts - 1).clamp(min=0)
        base = torch.where(starts > 0, out[0, before].cpu() + 1, torch.zeros_like(starts))
        out[:, rows.to(out.device)] = (base[:, None] + rel).T.to(out.device, out.dtype)
    return feats, out, decode_delta(out, ids.numel())


def patch_runners() -> None:
    """Make vLLM's model runners call ``recompute_mrope_positions`` for models that set
    ``recomputes_mrope_positions`` (they otherwise do only with ``--video-pruning-rate``, and
    the v1 CPU runner never does): the v1 GPU and CPU runners, and model runner v2's pruner
    (written from its code, not run here: this machine has no GPU). Idempotent."""
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:
        return
    classes = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        classes.append(CPUModelRunner)
    except ImportError:
        pass
    for cls in classes:
        load = cls.__dict__.get("load_model")
        if load is None or getattr(load, "_vtcompress", False):
            continue

        def load_model(self, *args, _load=load, **kwargs):
            _load(self, *args, **kwargs)
            if getattr(self.get_model(), "recomputes_mrope_positions", False):
                self.is_multimodal_pruning_enabled = True

        load_model._vtcompress = True
        cls.load_model = load_model
    _patch_runner_v2()


def _patch_runner_v2() -> None:
    try:
        from vllm.v1.worker.gpu.model_states import default
        from vllm.v1.worker.gpu.model_states.mm_pruning import MultiModalPruner
    except ImportError:
        return
    make = default.maybe_create_mm_pruner
    if getattr(make, "_vtcompress", False):
        return

    def maybe_create_mm_pruner(model_config, model, rope_state, encoder_cache):
        if getattr(model, "recomputes_mrope_positions", False) and None not in (rope_state, encoder_cache):
            return MultiModalPruner(model, rope_state, encoder_cache, model_config.get_inputs_embeds_size())
        return make(model_config, model, rope_state, encoder_cache)

    maybe_create_mm_pruner._vtcompress = True
    default.maybe_create_mm_pruner = maybe_create_mm_pruner
