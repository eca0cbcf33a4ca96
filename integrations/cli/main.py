"""``vtcompress`` command line.

``vtcompress run`` answers one question about one image or video with and without compression,
and prints both answers, the visual tokens kept per view or frame, timings and the analytic FLOPs.
With no arguments it runs offline: a bundled example image and its question, on the built-in tiny
model (``--example clip``: a bundled video, on the tiny LLaVA-OneVision).
``vtcompress demo`` (the ``demo`` extra) serves the same comparison as a web page.

Every usage error is one line on stderr naming the fix, with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import vtcompress
from vtcompress.integrations.cli.usage import (
    DEFAULT_VIDEO_METHOD,
    UsageError,
    check_device_name,
    choose_input,
    chosen_video,
)
from vtcompress.integrations.examples import DEFAULT_EXAMPLE, EXAMPLES

DESCRIPTION = __doc__.split("\n\n")[1].replace("``", "")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and names where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _ratio(text: str) -> float:
    from vtcompress.config import check_ratio

    try:
        return check_ratio(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a kept fraction in (0, 1]: e.g. 0.25 keeps a quarter of the visual tokens, "
            "1.0 switches compression off"
        ) from err


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    from vtcompress.integrations.locate import (
        DEFAULT_VIDEO_TINY,
        default_methods,
        loadable_families,
        tiny_names,
    )
    from vtcompress.registry import available_methods  # names only: no method (no torch) is imported

    examples = ", ".join(f"{e.name} ({e.description})" for e in EXAMPLES.values())
    source = run.add_mutually_exclusive_group()
    source.add_argument("--image", help="path to an image file (default: the bundled example)")
    source.add_argument(
        "--example",
        choices=list(EXAMPLES),
        metavar="NAME",
        help=f"a bundled example: {examples} (default: {DEFAULT_EXAMPLE})",
    )
    source.add_argument(
        "--video",
        metavar="FILE",
        help="path to a video file (MP4, WebM, ... need the video extra: pip install 'vtcompress[video]'; "
        "GIFs do not); frames are sampled uniformly, see --frames",
    )
    run.add_argument(
        "--frames",
        type=_positive_int,
        metavar="N",
        default=None,
        help="frames sampled uniformly from the video (default: the model family's usual count, 32; "
        "every frame of a shorter clip)",
    )
    run.add_argument(
        "--question",
        help="the question (default: the example's own question, or 'What is in the image?' with --image)",
    )
    run.add_argument(
        "--model",
        default=None,
        help=f"{loadable_families()} hub id or local checkpoint directory, or a "
        "built-in tiny model with random weights (offline, meaningless answers, real token counts and "
        f"timings): {tiny_names()}; a video's default is {DEFAULT_VIDEO_TINY}",
    )
    run.add_argument(
        "--method",
        default=None,
        choices=available_methods(),
        metavar="METHOD",
        help=f"compression method (the list is below; default: the model's own, {default_methods()}; "
        f"{DEFAULT_VIDEO_METHOD} on a video)",
    )
    run.add_argument(
        "--ratio",
        type=_ratio,
        default=0.25,
        help="kept fraction of visual tokens, in (0, 1]; 1.0 switches compression off (default 0.25)",
    )
    run.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a method option, repeatable, e.g. --option allocation=paper; the options of each method are "
        "in its config class (docs/methods/); a method name gets the model's own defaults for the rest",
    )
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument(
        "--max-new-tokens", type=_positive_int, default=32, help="answer length limit (default 32)"
    )
    run.add_argument(
        "--repeats", type=_positive_int, default=5, help="timed forward passes of each model (default 5)"
    )
    run.add_argument(
        "--warmup", type=_non_negative_int, default=1, help="untimed passes of each model first (default 1)"
    )
    run.set_defaults(func=_run)
    run.epilog = "Methods: " + ", ".join(available_methods())


def _run(args: argparse.Namespace) -> int:
    from vtcompress.integrations.locate import DEFAULT_TINY, DEFAULT_VIDEO_TINY

    # What can be checked without torch is checked first: a bad command line is answered at once.
    check_device_name(args.device)
    video = chosen_video(args)
    if video is not None:
        args.model = args.model or DEFAULT_VIDEO_TINY
        from vtcompress.integrations.cli.video_run import run_video

        return run_video(args, *video)
    args.model = args.model or DEFAULT_TINY
    image, question, described = choose_input(args)
    from vtcompress.integrations.cli.quickrun import run

    return run(args, image, question, described)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="vtcompress",
        description=DESCRIPTION,
    )
    parser.add_argument("--version", action="version", version=f"vtcompress {vtcompress.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="answer a question about an image or a video, compressed vs uncompressed (no arguments: an "
        "offline example)",
        description=DESCRIPTION,
    )
    add_run_arguments(run)
    try:
        from vtcompress.integrations.demo import add_demo_subcommand
    except ImportError:
        pass
    else:
        add_demo_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UsageError as err:
        print(f"vtcompress {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
