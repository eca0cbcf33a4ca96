"""Deterministic synthetic video QA whose answers live in a few frames, drawn with Pillow only.

Every sample is a pure function of ``(seed, index)``; its clip is written once as a GIF (no
video codec needed) under ``VTC_OFFLINE_VIDEO_DIR`` (default ``~/.cache/vtcompress/vtc_offline_video``)
and handed to the model as a path, as lmms-eval's video tasks do. Three question types, each
answerable only from the right frames, so a compressor that drops them loses accuracy:

- ``middle_colour``: the background is one colour, then another for a short middle stretch (3 to
  5 of the clip's frames, around its middle), then a third; "which colour in the middle".
- ``flash_colour``: one square flashes in ONE frame at a random time; "which colour flashed".
- ``count_crossing``: 1 to 4 balls cross from left to right, one after another; "how many".

``python video_synthetic.py OUT_DIR`` writes a few clips and a ``samples.jsonl`` to look at.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 170),
    "orange": (240, 130, 30),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
FRAMES, WIDTH, HEIGHT, FRAME_MS = 16, 112, 84, 125
GREY = (200, 200, 200)
QUESTION_TYPES = ("middle_colour", "flash_colour", "count_crossing")


@dataclass(frozen=True)
class VideoSample:
    """One question about one generated clip; ``answer`` is the only correct reply."""

    question_id: str
    frames: tuple[Image.Image, ...]
    question: str
    answer: str
    question_type: str

    def save(self, folder: Path) -> Path:
        """The clip as a GIF in ``folder`` (written once; the name is the question id). Each frame
        carries a progress bar along its bottom edge, so no two frames are equal (a GIF writer
        merges equal consecutive frames into one)."""
        path = folder / f"{self.question_id}.gif"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            first, *rest = [_with_progress(f, t).quantize(colors=16) for t, f in enumerate(self.frames)]
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=FRAME_MS, loop=0)
            tmp.replace(path)
        return path

    def record(self, folder: Path) -> dict:
        return {
            "question_id": self.question_id,
            "video": str(self.save(folder)),
            "question": self.question,
            "answer": self.answer,
            "question_type": self.question_type,
        }


def _with_progress(frame: Image.Image, t: int) -> Image.Image:
    marked = frame.copy()
    ImageDraw.Draw(marked).rectangle(
        (0, HEIGHT - 2, (t + 1) * WIDTH // FRAMES - 1, HEIGHT - 1), fill=(0, 0, 0)
    )
    return marked


def default_folder() -> Path:
    root = os.environ.get("VTC_OFFLINE_VIDEO_DIR")
    return Path(root) if root else Path.home() / ".cache" / "vtcompress" / "vtc_offline_video"


def _middle_colour(rng: random.Random) -> tuple[list[Image.Image], str, str]:
    first, middle, last = rng.sample(list(COLOURS), 3)
    length = rng.randint(3, 5)
    start = FRAMES // 2 - length // 2 + rng.randint(-1, 0)
    frames = []
    for t in range(FRAMES):
        name = middle if start <= t < start + length else (first if t < start else last)
        frames.append(Image.new("RGB", (WIDTH, HEIGHT), COLOURS[name]))
    return frames, "What colour is the background in the middle of the clip?", middle


def _flash_colour(rng: random.Random) -> tuple[list[Image.Image], str, str]:
    name = rng.choice(list(COLOURS))
    when = rng.randint(1, FRAMES - 2)
    x, y = rng.randint(8, WIDTH - 40), rng.randint(8, HEIGHT - 40)
    frames = []
    for t in range(FRAMES):
        frame = Image.new("RGB", (WIDTH, HEIGHT), GREY)
        if t == when:
            ImageDraw.Draw(frame).rectangle((x, y, x + 32, y + 32), fill=COLOURS[name])
        frames.append(frame)
    return frames, "Which colour flashes for a moment in the clip?", name


def _count_crossing(rng: random.Random) -> tuple[list[Image.Image], str, str]:
    balls = rng.randint(1, 4)
    span = FRAMES // balls  # each ball crosses in its own stretch of frames
    colour = COLOURS[rng.choice(list(COLOURS))]
    frames = []
    for t in range(FRAMES):
        frame = Image.new("RGB", (WIDTH, HEIGHT), GREY)
        ball, step = divmod(t, span)
        if ball < balls and span > 1:
            x = 4 + step * (WIDTH - 28) // (span - 1)
            ImageDraw.Draw(frame).ellipse((x, HEIGHT // 2 - 10, x + 20, HEIGHT // 2 + 10), fill=colour)
        frames.append(frame)
    return frames, "How many balls cross the clip from left to right?", NUMBER_WORDS[balls]


_DRAW = {"middle_colour": _middle_colour, "flash_colour": _flash_colour, "count_crossing": _count_crossing}


def video_sample(seed: int, index: int) -> VideoSample:
    """Sample ``index`` of the set ``seed``: question types take turns."""
    rng = random.Random(f"video-{seed}-{index}")
    kind = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    frames, question, answer = _DRAW[kind](rng)
    return VideoSample(f"video-{seed}-{index}", tuple(frames), question, answer, kind)


def generate(count: int, seed: int = 0) -> list[VideoSample]:
    return [video_sample(seed, i) for i in range(count)]


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "vtc_offline_video")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for sample in generate(6):
            f.write(json.dumps(sample.record(out)) + "\n")
    print(f"wrote 6 clips and samples.jsonl to {out}")
