"""Example images shipped with vtcompress, with a question for each.

Three shapes of input that exercise LLaVA-NeXT's anyres grid differently: a 640x480 scene (2x2
crops, letterboxed top and bottom), a 360x720 document page (a receipt: two crops, one above the
other) and a 960x320 bar chart (three crops side by side). The PNGs are drawn by the project with
Pillow (``vtcompress.integrations.demo.examples``) and saved here by ``scripts/make_examples.py``,
so ``vtcompress run`` works with no image of your own and no download.

The clip (``clip.gif``, 16 frames of 128x96 px, drawn by ``scripts/make_video_example.py``) is a
white ball crossing a background that turns from red to green to blue: ``vtcompress run --example
clip`` shows a video run.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class BundledExample:
    name: str
    question: str
    description: str
    media: str = "image"  # or "video"

    @property
    def path(self) -> Path:
        """The file inside the installed package (a PNG, or a GIF for a video)."""
        suffix = "gif" if self.media == "video" else "png"
        return Path(str(resources.files(__name__).joinpath(f"{self.name}.{suffix}")))


EXAMPLES = {
    e.name: e
    for e in (
        BundledExample("scene", "What colour is the sun?", "a house, a tree and a red sun (640x480)"),
        BundledExample("receipt", "What is the total on the receipt?", "a shop receipt (360x720)"),
        BundledExample("bar_chart", "Which bar is the tallest?", "five labelled bars (960x320)"),
        BundledExample(
            "clip",
            "What colour is the background in the middle of the clip?",
            "a video: a ball crossing a red, then green, then blue background (16 frames, 128x96)",
            media="video",
        ),
    )
}
DEFAULT_EXAMPLE = "scene"


def example(name: str) -> BundledExample:
    """The bundled example called ``name``; raises a ValueError listing the names."""
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ValueError(f"no bundled example {name!r}; choose one of: {', '.join(EXAMPLES)}") from None
