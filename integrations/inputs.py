"""Which images vtcompress's command line and demo accept (one rule for both), and how an image
of any mode becomes the 8-bit RGB the model sees (also used by the lmms-eval plugin).

LLaVA-NeXT reads 14-px patches; an image under two patches a side leaves nothing to compress.
Long strips (receipts, banners) are fine: every method handles a crop grid that unpadding
leaves empty. Huge images are refused before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps


@dataclass(frozen=True)
class ImageLimits:
    """Accepted image sizes (pixels)."""

    min_side: int = 28  # two 14-px patches
    max_pixels: int = 36_000_000

    def problem(
        self, width: int, height: int, patch_px: int = 14, max_aspect: tuple[str, float] | None = None
    ) -> str | None:
        """A sentence saying what is wrong with a ``width`` x ``height`` image and how to fix it,
        or None when the image is accepted. ``max_aspect``: ``(model name, limit)`` for a model
        whose processor refuses images longer than ``limit`` times their width (or wider)."""
        w, h = width, height
        if min(w, h) < self.min_side:
            return (
                f"The image is {w}x{h} px, too small: at least {self.min_side} px on each side is needed "
                f"(the vision encoder reads {patch_px}-px patches). Please use a larger image."
            )
        if w * h > self.max_pixels:
            return (
                f"The image is {w}x{h} px ({w * h / 1e6:.1f} megapixels); at most "
                f"{self.max_pixels / 1e6:.0f} megapixels are accepted. Please downscale it (the model "
                "sees a few crops of a few hundred pixels anyway)."
            )
        if max_aspect is not None and max(w, h) / min(w, h) > max_aspect[1]:
            model, limit = max_aspect
            return (
                f"The image is {w}x{h} px, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; {model} accepts "
                f"at most {limit:g}:1. Please crop or pad it."
            )
        return None


IMAGE_LIMITS = ImageLimits()


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, the way a person sees it.

    16-bit and 32-bit grayscale are scaled to 8 bits (``convert("RGB")`` alone clips them to
    white); transparent images are put on white (``convert`` alone shows what lies under the alpha,
    often black).
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np  # only these modes need it: a command-line error does not wait for numpy
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or pixels.max() > 255 else 255
        image = Image.fromarray((np.clip(pixels, 0, top) * 255 // top).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        image = Image.fromarray(np.nan_to_num(scaled).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path, limits: ImageLimits = IMAGE_LIMITS) -> Image.Image:
    """Read ``path`` as 8-bit RGB; the size is checked before the pixels are decoded.

    Raises ValueError with one line ``PATH: the problem; the fix``.
    """
    path = Path(path)
    formats = "give a PNG, JPEG, WebP, GIF or BMP file"
    try:
        opened = Image.open(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; {formats}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a directory, not an image file; {formats}") from None
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"{path}: too large to decode ({err}); downscale it to at most "
            f"{limits.max_pixels / 1e6:.0f} megapixels"
        ) from None
    except (OSError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: cannot read it as an image ({err}); {formats}") from None
    with opened:
        problem = limits.problem(*opened.size)
        if problem:
            raise ValueError(f"{path}: {problem}")
        try:
            opened.load()
            image = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt file
            raise ValueError(
                f"{path}: cannot read it as an image, the file is damaged ({err}); save it again or {formats}"
            ) from None
        return to_rgb(image)
