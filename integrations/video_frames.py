"""Frames of a video file, sampled the way the model families' own video pipelines sample them:
``frames`` indices spread uniformly over the clip (``linspace(0, total - 1, frames)``, first and
last frame included), every frame when the clip has fewer. One rule for the CLI and lmms-eval.

Animated GIFs are read with Pillow; every other container (MP4, WebM, MKV, AVI, MOV, ...) with
PyAV, the ``video`` extra (``pip install 'vtcompress[video]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageSequence

from vtcompress.integrations.inputs import to_rgb

INSTALL_HINT = "pip install 'vtcompress[video]'"


@dataclass(frozen=True)
class Clip:
    """Sampled frames of one video and where they came from."""

    frames: list[Image.Image]  # RGB, in time order
    indices: list[int]  # each frame's index in the file
    total: int  # frames in the file
    fps: float  # the file's frame rate

    @property
    def seconds_between(self) -> float:
        """Seconds between two consecutive sampled frames (1 / fps with a single frame)."""
        if len(self.indices) < 2:
            return 1.0 / self.fps
        return (self.indices[-1] - self.indices[0]) / (len(self.indices) - 1) / self.fps


def uniform_indices(total: int, frames: int) -> list[int]:
    """``frames`` indices spread evenly over ``range(total)``, both ends included (all of them
    when ``total <= frames``): numpy's ``linspace(0, total - 1, frames).astype(int)``."""
    if total < 1 or frames < 1:
        raise ValueError(f"cannot sample {frames} frame(s) from a clip of {total}")
    if total <= frames:
        return list(range(total))
    if frames == 1:
        return [0]
    return [int(i * (total - 1) / (frames - 1)) for i in range(frames)]


def read_clip(path: str | Path, frames: int) -> Clip:
    """``frames`` frames of the video at ``path``, sampled uniformly; ValueError (one line naming
    the file and the fix) for a missing, unreadable or empty file; ImportError naming the pip
    command when a container needs PyAV and it is missing."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such video file; give an MP4, WebM, MKV, AVI, MOV or GIF file")
    if path.suffix.lower() == ".gif":
        return _read_gif(path, frames)
    return _read_av(path, frames)


def _read_gif(path: Path, frames: int) -> Clip:
    try:
        with Image.open(path) as gif:
            decoded = [to_rgb(f.copy()) for f in ImageSequence.Iterator(gif)]
            duration_ms = gif.info.get("duration") or 100
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read it as a GIF ({err}); save it again or give an MP4") from None
    indices = uniform_indices(len(decoded), frames)
    return Clip([decoded[i] for i in indices], indices, len(decoded), 1000.0 / duration_ms)


def _read_av(path: Path, frames: int) -> Clip:
    try:
        import av
    except ImportError:
        raise ImportError(f"reading {path.suffix or 'this'} videos needs PyAV: {INSTALL_HINT}") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream in this file; give a video file")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            if stream.frames > 0:  # the container knows its length: keep only the sampled frames
                total, wanted = stream.frames, set(uniform_indices(stream.frames, frames))
                kept = {}
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        kept[i] = frame.to_image()
                    if len(kept) == len(wanted):
                        break
                decoded = kept
            else:  # it does not: decode everything, then sample
                decoded = dict(enumerate(frame.to_image() for frame in container.decode(stream)))
                total = len(decoded)
    except av.error.FFmpegError as err:
        raise ValueError(f"{path}: cannot decode it as a video ({err}); give an MP4, WebM or GIF") from None
    if not decoded:
        raise ValueError(f"{path}: the video has no frames; give another file")
    indices = [i for i in uniform_indices(total, frames) if i in decoded]  # a header may overcount
    return Clip([to_rgb(decoded[i]) for i in indices], indices, total, fps)
