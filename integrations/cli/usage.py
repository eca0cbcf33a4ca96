"""What ``vtcompress run`` checks before it imports torch: the image, the question and the
device's name. Each error is a :class:`UsageError` whose text names the flag, the value given
and the fix, so that a bad command line is answered at once.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from vtcompress.integrations.examples import DEFAULT_EXAMPLE, example

DEFAULT_QUESTION = "What is in the image?"
DEFAULT_VIDEO_QUESTION = "What happens in the video?"
DEFAULT_VIDEO_METHOD = "vidcom2"  # served by every family that takes videos
# The devices `vtcompress run` supports; whether one is usable here is checked with torch later.
_DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")


class UsageError(Exception):
    """A bad command line; ``str(err)`` is one line naming the flag, the value and the fix (exit code 2)."""


def check_device_name(name: str | None) -> None:
    """A UsageError unless ``name`` is None (the default), cpu, mps, cuda or cuda:N."""
    if name is not None and not _DEVICE.fullmatch(name):
        raise UsageError(
            f"--device {name}: not a device vtcompress run supports; use cpu, cuda, cuda:N or mps"
        )


def image_flag(args: argparse.Namespace) -> str:
    """The flag and value that chose the image, for messages: ``--image PATH`` or ``--example NAME``."""
    if args.image is not None:
        return f"--image {args.image}"
    if getattr(args, "video", None) is not None:
        return f"--video {args.video}"
    return f"--example {args.example or DEFAULT_EXAMPLE}"


def chosen_video(args: argparse.Namespace) -> tuple[Path, str, str] | None:
    """``(path, question, description)`` when --video or a bundled clip (--example clip) is
    chosen, else None (an image run). The file is decoded later, with the model's frame count."""
    if args.question is not None and not args.question.strip():
        raise UsageError("--question is empty: ask something about the video, or leave it out")
    if args.video is not None:
        path = Path(args.video)
        if not path.is_file():
            raise UsageError(
                f"--video {args.video}: no such file; give an MP4, WebM, MKV, AVI, MOV or GIF file"
            )
        path, question, described = path, DEFAULT_VIDEO_QUESTION, str(args.video)
    elif args.example is not None and example(args.example).media == "video":
        ex = example(args.example)
        path, question, described = ex.path, ex.question, f"bundled example {ex.name!r}: {ex.description}"
    else:
        if args.frames is not None:
            raise UsageError(f"--frames {args.frames}: frames are sampled from a video; give --video FILE")
        return None
    if args.question is not None:
        question = args.question.strip()
    return path, question, described


def choose_input(args: argparse.Namespace) -> tuple[Any, str, str]:
    """``(image, question, description)`` from --image / --example / --question."""
    from vtcompress.integrations.inputs import open_image

    if args.question is not None and not args.question.strip():
        raise UsageError("--question is empty: ask something about the image, or leave it out")
    if args.image is not None:
        try:
            image = open_image(args.image)
        except ValueError as err:  # names the file, the problem and the fix
            raise UsageError(f"--image {err}") from None
        described = f"{args.image} ({image.width}x{image.height})"
        question = DEFAULT_QUESTION
    else:
        ex = example(args.example or DEFAULT_EXAMPLE)
        image = open_image(ex.path)
        described = f"bundled example {ex.name!r}: {ex.description}"
        question = ex.question
    if args.question is not None:
        question = args.question.strip()
    return image, question, described
