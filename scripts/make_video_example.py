"""Draw the example clip shipped in integrations/examples/clip.gif (``vtcompress run --example clip``).

    python scripts/make_video_example.py

16 frames of 128x96 px at 8 frames per second: the background is red, then green, then blue
(frames 0-4, 5-10, 11-15) while a white ball crosses from left to right; flat colours keep the
GIF at a few KB. Commit the GIF it writes.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

TARGET = Path(__file__).resolve().parents[1] / "integrations" / "examples" / "clip.gif"
FRAMES, WIDTH, HEIGHT, FPS = 16, 128, 96, 8
PHASES = [((200, 40, 40), range(0, 5)), ((40, 170, 60), range(5, 11)), ((40, 70, 200), range(11, 16))]


def draw_frame(index: int) -> Image.Image:
    colour = next(c for c, frames in PHASES if index in frames)
    frame = Image.new("RGB", (WIDTH, HEIGHT), colour)
    x = 8 + index * (WIDTH - 32) // (FRAMES - 1)
    ImageDraw.Draw(frame).ellipse((x, HEIGHT // 2 - 8, x + 16, HEIGHT // 2 + 8), fill=(255, 255, 255))
    return frame


if __name__ == "__main__":
    frames = [draw_frame(i).quantize(colors=8) for i in range(FRAMES)]
    frames[0].save(TARGET, save_all=True, append_images=frames[1:], duration=1000 // FPS, loop=0)
    print(f"{TARGET}  ({TARGET.stat().st_size} bytes)  {FRAMES} frames")
