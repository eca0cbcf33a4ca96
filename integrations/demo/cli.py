"""``vtcompress demo``: the command line of the Gradio demo.

``add_demo_subcommand(subparsers)`` plugs it into the ``vtcompress`` command;
``main(argv)`` runs it alone (``python -m vtcompress.integrations.demo``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtcompress.integrations.locate import DEFAULT_TINY, loadable_families, tiny_names

    parser.add_argument(
        "--model",
        default=DEFAULT_TINY,
        help=f"{loadable_families()} checkpoint (hub id or local directory), or a "
        f"tiny model with random weights, offline: {tiny_names()} (their answers are meaningless, "
        "the token views are real)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", default="auto", help="float16, bfloat16, float32 or auto (float16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length limit (default 48)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests handled at once; model calls still take turns"
    )


def add_demo_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``demo`` to a ``vtcompress`` argparse sub-command set; ``args.func(args)`` runs it."""
    parser = subparsers.add_parser(
        "demo",
        help="web page comparing compressed and uncompressed answers (needs the demo extra)",
        description="Gradio demo: upload an image, ask a question, see what compression keeps.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Load the model once, serve the page until Ctrl+C or SIGTERM, then shut down cleanly."""
    try:
        from vtcompress.integrations.demo.app import build_app, launch
    except ImportError as err:
        from vtcompress.hints import needs_extra

        hint = needs_extra("the demo needs gradio", "demo")
        print(f"error: {err}" if "pip install" in str(err) else f"error: {hint} ({err})", file=sys.stderr)
        return 2
    from vtcompress.integrations.demo.engine import DemoEngine

    print(f"Loading {args.model} ...", flush=True)
    try:
        engine = DemoEngine.from_pretrained(
            args.model, device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens
        )
    except (OSError, ValueError, AttributeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app = build_app(engine, concurrency=args.concurrency)
    # SIGTERM (service managers, `kill`) takes the same clean path as Ctrl+C.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    status = 0
    try:
        launch(app, host=args.host, port=args.port, block=True)
    except KeyboardInterrupt:
        pass
    except OSError as err:  # port taken, address not available here
        print(f"error: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        status = 2
    finally:
        app.close()
        signal.signal(signal.SIGTERM, previous)
    if status == 0:
        print("Demo stopped.", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vtcompress demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
