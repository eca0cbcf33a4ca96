"""The Gradio page of the demo (imported only when gradio is installed)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

try:
    import gradio as gr
except ImportError as err:  # pragma: no cover - exercised by the CLI's message
    from vtcompress.hints import needs_extra

    raise ImportError(needs_extra("the vtcompress demo needs gradio", "demo")) from err

from vtcompress.integrations.demo.engine import Comparison, DemoEngine, InputError, format_flops
from vtcompress.integrations.demo.examples import write_examples
from vtcompress.integrations.demo.video import video_markdown
from vtcompress.integrations.examples import example

log = logging.getLogger(__name__)

DEFAULT_RATIO = 0.25
RATIO_RANGE = (0.05, 1.0)  # the slider's; the library takes any ratio in (0, 1]
MAX_UPLOAD = "50mb"


def tolerant_image(**kwargs: Any) -> gr.Image:
    """A gr.Image input that hands undecodable uploads to the engine instead of failing in gradio.

    gr.Image decodes uploads before the event function runs, so a text file renamed .png would
    end as a bare "Error" toast; passing its path on lets the engine say what is wrong. The
    instance's method is wrapped rather than the class subclassed: gradio writes a .pyi stub next
    to the source of every Component subclass, i.e. into the installed package.
    """
    image = gr.Image(**kwargs)
    decode = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return decode(payload)
        except Exception:  # any decoding failure: the engine reports it in the page
            return str(payload.path) if getattr(payload, "path", None) else None

    image.preprocess = preprocess
    return image


def _stats_markdown(c: Comparison) -> str:
    pct = 100 * c.tokens_after / c.tokens_before if c.tokens_before else 100.0
    saved = 100 * c.flops_saved / c.flops_before if c.flops_before else 0.0
    h, w = c.image_size
    u, k = c.uncompressed, c.compressed
    rows = [
        "| | uncompressed | compressed |",
        "|---|---:|---:|",
        f"| visual tokens (newlines excluded) | {c.tokens_before} | **{c.tokens_after}** ({pct:.1f}%) |",
    ]
    if (c.newlines_before, c.newlines_after) != (0, 0):  # models without newline tokens: no row
        rows.append(f"| newline tokens | {c.newlines_before} | {c.newlines_after} |")
    rows += [
        f"| prompt length seen by the language model | {u.prompt_tokens} | {k.prompt_tokens} |",
        f"| time to first token (vision + compression + prefill) | {u.first_token_seconds:.3f} s "
        f"| {k.first_token_seconds:.3f} s |",
        f"| decoder prefill, estimated | {format_flops(c.flops_before)} | {format_flops(c.flops_after)} |",
    ]
    options = f" ({c.options})" if c.options else ""
    lines = [
        f"**{c.method}**{options} at ratio **{c.ratio:g}** on a {w}x{h} px image: "
        f"**{c.tokens_before} → {c.tokens_after}** visual tokens; estimated prefill FLOPs saved: "
        f"**{format_flops(c.flops_saved)} ({saved:.1f}%)**; compression took {c.compress_seconds * 1e3:.1f} ms.",
        "",
        *rows,
        "",
        "FLOPs: analytic count for the language model's layers only (vision tower and LM head left "
        "out). Times: this machine, one request at a time, not a benchmark.",
    ]
    if c.note:
        lines += ["", f"*{c.note}*"]
    return "\n".join(lines)


def ratio_notice(typed: Any) -> str | None:
    """What the page says when a ratio typed into the slider's box lies outside its range (the
    slider then moves it to the nearest end), or None when the typed value stands."""
    try:
        value = float(typed)
    except (TypeError, ValueError):
        return None
    low, high = RATIO_RANGE
    if value < low:
        return (
            f"**Note:** the ratio was set to {low:g}, the slider's minimum: {value:g} is below it. "
            f"(The command line takes any ratio in (0, 1]: `vtcompress run --ratio {value:g}`.)"
            if value > 0
            else f"**Note:** the ratio was set to {low:g}: a ratio must be above 0 (the kept fraction)."
        )
    if value > high:
        return (
            f"**Note:** the ratio was set to {high:g} (compression off): {value:g} would keep more "
            "tokens than there are."
        )
    return None


def _on_ratio_release(evt: gr.EventData):
    # The slider sends the typed value with "release", then clamps it; the event data keeps it.
    notice = ratio_notice(getattr(evt, "_data", None))
    return notice if notice else gr.skip()


def make_handler(engine: DemoEngine):
    """The page's event function: (image, question, method, ratio, options) -> page outputs.
    Never raises."""

    def compare(image: Any, question: str, method: str, ratio: float, options: str = ""):
        try:
            c = engine.compare(image, question, method, ratio, options)
        except InputError as err:
            return f"**Problem:** {err}", "", "", "", [], ""
        except Exception as err:  # a page must answer, whatever broke; the log keeps the traceback
            log.exception("demo request failed")
            return f"**Problem:** something went wrong: {type(err).__name__}: {err}", "", "", "", [], ""
        gallery = [(v.image, f"{v.name}: {v.kept} / {v.original} tokens") for v in c.views]
        return "**Done.**", c.compressed.answer, c.uncompressed.answer, _stats_markdown(c), gallery, c.legend

    return compare


def make_video_handler(engine: DemoEngine):
    """The video tab's event function: (video, question, method, ratio, options) -> (message,
    answer with compression, answer without, token counts per frame). Never raises."""

    def compare_video(video: Any, question: str, method: str, ratio: float, options: str = ""):
        try:
            c = engine.compare_video(video, question, method, ratio, options)
        except InputError as err:
            return f"**Problem:** {err}", "", "", ""
        except Exception as err:  # a page must answer, whatever broke; the log keeps the traceback
            log.exception("demo video request failed")
            return f"**Problem:** something went wrong: {type(err).__name__}: {err}", "", "", ""
        return "**Done.**", c.compressed.answer, c.uncompressed.answer, video_markdown(c)

    return compare_video


def _video_tab(engine: DemoEngine, concurrency: int, examples_dir: Path) -> None:
    """The video tab: a video file (or the bundled clip), a question, method and ratio; the two
    answers and the clip's tokens per frame before and after."""
    from vtcompress.integrations.cli.usage import DEFAULT_VIDEO_METHOD, DEFAULT_VIDEO_QUESTION

    methods = engine.served_video_methods()
    default = DEFAULT_VIDEO_METHOD if DEFAULT_VIDEO_METHOD in methods else methods[0]
    clip = example("clip")
    clip_path = examples_dir / clip.path.name
    shutil.copyfile(clip.path, clip_path)
    with gr.Row():
        with gr.Column(scale=2):
            video = gr.File(
                label="Video (MP4, WebM, MKV, AVI, MOV or GIF)",
                file_types=[".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif"],
                type="filepath",
                elem_id="video",
            )
            question = gr.Textbox(
                value=DEFAULT_VIDEO_QUESTION, label="Question", lines=2, elem_id="video-question"
            )
            with gr.Row():
                method = gr.Dropdown(methods, value=default, label="Method", elem_id="video-method")
                ratio = gr.Slider(
                    *RATIO_RANGE,
                    value=DEFAULT_RATIO,
                    step=0.05,
                    label="Ratio (kept tokens)",
                    elem_id="video-ratio",
                )
            options = gr.Textbox(
                value="",
                label="Method options (optional)",
                placeholder="KEY=VALUE, comma-separated, e.g. allocation=paper",
                elem_id="video-options",
            )
            submit = gr.Button("Compare", variant="primary", elem_id="video-submit")
            gr.Examples(
                [[str(clip_path), clip.question, default, DEFAULT_RATIO]],
                inputs=[video, question, method, ratio],
            )
        with gr.Column(scale=3):
            message = gr.Markdown(label="Message", show_label=False, elem_id="video-message")
            with gr.Row():
                answer_c = gr.Textbox(
                    label="Answer with compression", lines=3, elem_id="video-answer-compressed"
                )
                answer_u = gr.Textbox(
                    label="Answer without compression", lines=3, elem_id="video-answer-full"
                )
            stats = gr.Markdown(label="Tokens per frame", show_label=False, elem_id="video-stats")
    handler = make_video_handler(engine)
    inputs, outputs = [video, question, method, ratio, options], [message, answer_c, answer_u, stats]
    submit.click(handler, inputs, outputs, api_name="compare_video", concurrency_limit=concurrency)


def _header(engine: DemoEngine) -> str:
    lines = [
        "# vtcompress: what does visual-token compression keep?",
        "Upload an image, ask a question, pick a method and a ratio (kept fraction of visual tokens). "
        "The same model answers twice, without and with compression; below, each view the vision "
        "tower saw (thumbnail and crops; one view on Qwen2.5-VL) shows which tokens reached the "
        "language model.",
        "",
        f"Model: **{engine.name}** on {engine.model.device}.",
    ]
    if engine.takes_video:
        lines[2:2] = [
            "",
            "The **Video** tab does the same for a clip (a video file, or the example clip): the two "
            "answers and the clip's visual tokens per frame before and after.",
        ]
    if engine.random_weights:
        lines += [
            "",
            "> **This is the offline tiny model. Its weights are random, so its answers are "
            "meaningless characters.** Token counts, overlays, timings and FLOPs are real. For real "
            "answers start the demo with a checkpoint: `vtcompress demo --model "
            f"{engine.spec.hub_example}` (or a local directory).",
        ]
    return "\n".join(lines)


def build_app(engine: DemoEngine, concurrency: int = 4, examples_dir: str | Path | None = None) -> gr.Blocks:
    """The demo page around ``engine`` (one model shared by every user; calls take turns)."""
    methods = engine.served_methods()  # what this model's host can run
    default = engine.spec.default_method
    default = default if default in methods else methods[0]
    examples_dir = Path(examples_dir or Path(tempfile.gettempdir()) / "vtcompress-demo-examples")
    examples = write_examples(examples_dir)
    handler = make_handler(engine)

    # delete_cache: overlay PNGs of past requests are removed after an hour (long-running servers).
    with gr.Blocks(title="vtcompress demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(_header(engine), elem_id="header")
        video = engine.takes_video  # a family with video inputs gets a video tab
        with gr.Tabs() if video else nullcontext():
            with gr.Tab("Image") if video else nullcontext(), gr.Row():
                with gr.Column(scale=2):
                    image = tolerant_image(
                        type="filepath",
                        image_mode=None,
                        label="Image",
                        sources=["upload", "clipboard"],
                        elem_id="image",
                    )
                    question = gr.Textbox(label="Question", lines=2, elem_id="question")
                    with gr.Row():
                        method = gr.Dropdown(methods, value=default, label="Method", elem_id="method")
                        ratio = gr.Slider(
                            *RATIO_RANGE,
                            value=DEFAULT_RATIO,
                            step=0.05,
                            label="Ratio (kept tokens)",
                            elem_id="ratio",
                        )
                    options = gr.Textbox(
                        value="",  # API callers may leave it out
                        label="Method options (optional)",
                        placeholder="KEY=VALUE, comma-separated, e.g. allocation=paper",
                        info="Options of the method's config (see the methods pages); the model's own "
                        "defaults fill in the rest.",
                        elem_id="options",
                    )
                    submit = gr.Button("Compare", variant="primary", elem_id="submit")
                    gr.Examples(
                        [[path, q, default, DEFAULT_RATIO] for path, q in examples],
                        inputs=[image, question, method, ratio],
                    )
                with gr.Column(scale=3):
                    message = gr.Markdown(label="Message", show_label=False, elem_id="message")
                    with gr.Row():
                        answer_c = gr.Textbox(
                            label="Answer with compression", lines=3, elem_id="answer-compressed"
                        )
                        answer_u = gr.Textbox(
                            label="Answer without compression", lines=3, elem_id="answer-full"
                        )
                    stats = gr.Markdown(
                        label="Token counts, times and FLOPs", show_label=False, elem_id="stats"
                    )
                    gallery = gr.Gallery(
                        label="Kept tokens per view",
                        columns=3,
                        height="auto",
                        format="png",
                        elem_id="overlays",
                    )
                    legend = gr.Markdown(label="Overlay legend", show_label=False, elem_id="legend")
            if video:
                with gr.Tab("Video"):
                    _video_tab(engine, concurrency, examples_dir)
        outputs = [message, answer_c, answer_u, stats, gallery, legend]
        inputs = [image, question, method, ratio, options]
        submit.click(handler, inputs, outputs, api_name="compare", concurrency_limit=concurrency)
        question.submit(handler, inputs, outputs, api_name=False, concurrency_limit=concurrency)
        ratio.release(_on_ratio_release, None, message, api_name=False, queue=False)
    app.queue(max_size=64)
    app.vtcompress_examples_dir = str(examples_dir)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True) -> str:
    """Start serving; returns the local URL. ``block=False`` returns at once (tests, notebooks)."""
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        share=False,
        ssr_mode=False,
        quiet=not block,
        show_error=True,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[app.vtcompress_examples_dir],
        footer_links=["api", "settings"],
    )
    return app.local_url
