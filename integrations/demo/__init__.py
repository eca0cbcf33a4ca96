"""Gradio demo: ask a question about an image, compare compressed and uncompressed answers, and
see which visual tokens each view kept.

``vtcompress demo [--model tiny|ID|PATH] [--host 127.0.0.1] [--port 7860]`` needs the ``demo``
extra (``pip install "vtcompress[demo]"``; in a checkout ``pip install -e ".[demo]"``).
Importing this package does not import gradio.
"""

from vtcompress.integrations.demo.cli import add_demo_subcommand, main

__all__ = ["add_demo_subcommand", "main"]
