"""Pictures of what a compressor kept: one overlay per view (thumbnail, crops).

Each view is drawn from the pixels the vision tower actually saw (the processor's output,
un-normalised), cut into its grid of tokens (24 x 24 patches of 14 px for CLIP-336; for
Qwen2.5-VL, rows x cols merged tokens of 28 px):

* kept token: the patch as it is, with a thin light frame;
* dropped token: dimmed to a dark blue-grey;
* padding (letterbox area that LLaVA-NeXT's unpadding removes, never a token): dark stripes;
* merged token (``sources`` known): every source patch tinted in that token's own colour, with
  dark lines between regions; with only ``sizes`` known, the representative patch is tinted by
  how many patches it holds and the rest is dimmed.

Only numpy and Pillow: no gradio needed, so this is testable and reusable on its own.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image

DROPPED = np.array([18, 22, 34], dtype=np.float32)
PADDING = np.array([40, 40, 40], dtype=np.float32)
FRAME = np.array([255, 236, 150], dtype=np.float32)
SIZE_TINT = np.array([255, 120, 20], dtype=np.float32)

# Token states in the grid.
KEPT, DROP, PAD = 1, 0, -1


def unnormalize(
    pixel_values: np.ndarray, mean: Sequence[float], std: Sequence[float], rescale: float
) -> np.ndarray:
    """[3, H, W] normalised floats (processor output) -> [H, W, 3] uint8 RGB."""
    x = pixel_values.astype(np.float32) * np.asarray(std, np.float32)[:, None, None]
    x = (x + np.asarray(mean, np.float32)[:, None, None]) / rescale
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _grid(grid: int | tuple[int, int]) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def token_states(
    grid: int | tuple[int, int], kept: Sequence[tuple[int, int]], valid: np.ndarray | None = None
) -> np.ndarray:
    """[rows, cols] int8: KEPT, DROP or PAD (``valid`` [rows, cols] bool, None = all valid);
    ``grid`` is ``(rows, cols)`` or one side of a square."""
    states = np.full(_grid(grid), DROP, dtype=np.int8)
    if valid is not None:
        states[~valid] = PAD
    for r, c in kept:
        states[r, c] = KEPT
    return states


def _cells(grid: np.ndarray, patch: int) -> np.ndarray:
    """Repeat a [rows, cols] grid to [rows*patch, cols*patch] pixels."""
    return np.repeat(np.repeat(grid, patch, axis=0), patch, axis=1)


def _region_colors(n: int) -> np.ndarray:
    """``n`` well-separated saturated colours (golden-ratio hues), [n, 3] float."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float32).reshape(n, 3) * 255


def _stripes(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + yy) // 4) % 2 == 0


def render_view(
    pixels: np.ndarray,
    grid: int | tuple[int, int],
    kept: Sequence[tuple[int, int]],
    valid: np.ndarray | None = None,
    sizes: Sequence[int] | None = None,
    sources: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> Image.Image:
    """Overlay of one view.

    Args:
        pixels: [H, W, 3] uint8, H = rows * patch, W = cols * patch (the view the tower saw).
        grid: (rows, cols) of the view's tokens, or one side of a square grid.
        kept: (row, col) of each kept token (a merged token's representative patch).
        valid: [rows, cols] bool, False where the token is letterbox padding; None = all valid.
        sizes: patches per kept token (merging methods), aligned with ``kept``.
        sources: per kept token, the (row, col) of every patch merged into it.
    Returns:
        RGB image of the same size as ``pixels``.
    """
    h, w = pixels.shape[:2]
    rows, cols = _grid(grid)
    patch = h // rows
    if patch == 0 or patch * rows != h or patch * cols != w:
        raise ValueError(f"view of {h}x{w} px does not split into {rows}x{cols} square patches")
    img = pixels.astype(np.float32)
    states = token_states((rows, cols), kept, valid)
    out = img.copy()

    dropped = _cells(states == DROP, patch)
    out[dropped] = img[dropped] * 0.22 + DROPPED * 0.78
    if sources is not None:
        owner = np.full((rows, cols), -1, dtype=np.int64)
        for t, group in enumerate(sources):
            for r, c in group:
                owner[r, c] = t
        colors = _region_colors(max(len(sources), 1))
        merged = np.array([len(g) > 1 for g in sources] + [False])  # index -1 -> False
        tinted = _cells(merged[owner] & (owner >= 0), patch)
        tint = colors[_cells(np.maximum(owner, 0), patch)]
        out[tinted] = img[tinted] * 0.5 + tint[tinted] * 0.5
        _draw_region_borders(out, _cells(owner, patch))
    elif sizes is not None:
        biggest = max(max(sizes, default=1), 2)
        weight = np.zeros((rows, cols), dtype=np.float32)
        for (r, c), s in zip(kept, sizes):
            weight[r, c] = 0.65 * (s - 1) / (biggest - 1)
        a = _cells(weight, patch)[..., None]
        out = out * (1 - a) + SIZE_TINT * a
    else:
        _draw_frames(out, _cells(states == KEPT, patch), patch)

    padding = _cells(states == PAD, patch)
    stripes = padding & _stripes(h, w)
    out[padding] = PADDING
    out[stripes] = PADDING + 30
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _draw_frames(out: np.ndarray, kept_px: np.ndarray, patch: int) -> None:
    """A one-pixel light frame on the top and left edge of each kept patch (a grid of kept cells)."""
    h, w = kept_px.shape
    edge = np.zeros((h, w), dtype=bool)
    edge[::patch, :] = True
    edge[:, ::patch] = True
    mask = edge & kept_px
    out[mask] = out[mask] * 0.55 + FRAME * 0.45


def _draw_region_borders(out: np.ndarray, owner_px: np.ndarray) -> None:
    """Dark lines where neighbouring pixels belong to different merged tokens."""
    border = np.zeros(owner_px.shape, dtype=bool)
    border[1:, :] |= owner_px[1:, :] != owner_px[:-1, :]
    border[:, 1:] |= owner_px[:, 1:] != owner_px[:, :-1]
    out[border] = out[border] * 0.3


def legend(has_sizes: bool, has_sources: bool, has_padding: bool = True) -> str:
    """One line of text that explains the colours of :func:`render_view` (``has_padding``: some
    view has letterbox padding)."""
    padding = "; stripes: letterbox padding that the model removes (never a token)" if has_padding else ""
    if has_sources:
        return (
            "Each merged token's source patches share one colour (outlined); untinted patches are "
            f"tokens kept on their own; dark blue-grey: dropped{padding}."
        )
    if has_sizes:
        return (
            "Orange: where a merged token sits, brighter = more patches merged into it; "
            f"dark blue-grey: merged away or dropped{padding}."
        )
    return f"Bright, framed patches: kept tokens; dark blue-grey: dropped tokens{padding}."
