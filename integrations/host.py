"""The base every host builds on: bookkeeping that is the same for every model.

A host is the only code that knows a model. Subclasses say which models they ``supports``,
what they ``provides`` (capabilities from :mod:`vtcompress.config`), where the vision tower and
its layers are, and how to splice kept tokens back; this base class does the rest:

* resolves the method, refuses it when the host lacks what it needs (naming both);
* installs hooks and instance patches through :meth:`hook` / :meth:`patch`, all undone by an
  idempotent :meth:`remove`, so the model behaves exactly as before;
* captures [CLS] queries, keys and hidden states of the layers the method asks for, only while
  :attr:`capturing` is set;
* times the vision tower and the compressor (synchronising CUDA before reading clocks) and
  publishes :class:`~vtcompress.stats.CompressionStats` on the handle.

Hosts are found through the ``vtcompress.hosts`` entry-point group (see ``pyproject.toml``), so a
separate package can add a model without editing vtcompress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle
from vtcompress.batch import CompressedImage
from vtcompress.config import CompressionConfig
from vtcompress.layout import Layout
from vtcompress.packing import pack_images
from vtcompress.pipeline import check_applicable, compress_image, compress_images, image_stats
from vtcompress.registry import get_method
from vtcompress.served import served_text
from vtcompress.stats import CompressionStats
from vtcompress.tokens import ImageTokens, ViewOutput, keep_all


def score_layer_of(feature_layer: int, num_layers: int) -> int:
    """The vision layer that scores the features a model takes from ``hidden_states[feature_layer]``.

    ``hidden_states[i]`` is the input of layer ``i``, so the layer that consumes the features
    scores them; the tower's output (``feature_layer`` = -1 or ``num_layers``) is scored by the
    last layer.
    """
    return min(feature_layer % (num_layers + 1), num_layers - 1)


def check_served(host: Any, config: CompressionConfig, score_layer: int, num_layers: int) -> None:
    """Raise ValueError when ``host`` (a host class or instance) lacks what ``config`` needs: one
    line naming the method, the host, the gap, the option that does without it, the host's
    :attr:`Host.refusal_note` and the methods it serves (:func:`vtcompress.served.served_text`)."""
    cls = host if isinstance(host, type) else type(host)
    try:
        check_applicable(
            config, f"{cls.__name__} ({host.model_names})", host.provides, score_layer, num_layers
        )
    except ValueError as err:
        if "does not provide" not in str(err):
            raise
        note = f"{host.refusal_note}; " if host.refusal_note else ""
        raise ValueError(f"{err}. {note}this host serves {served_text(host)}") from None


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock read afterwards times it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Host:
    """Base of every host (see the module docstring).

    Subclasses set :attr:`model_names` and :attr:`provides`, implement :meth:`supports`, and in
    ``__init__`` call ``super().__init__(model, config, handle, score_layer, num_layers)`` before
    installing their own hooks.
    """

    model_names: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()
    # Method name -> the options it gets on this host unless the caller sets them: the settings
    # that do without a capability the host lacks (see vtcompress.api.host_config).
    name_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # Why methods are refused here, in a few words ("SigLIP has no [CLS]"), for refusal messages.
    refusal_note: ClassVar[str] = ""

    @staticmethod
    def supports(model: nn.Module) -> bool:
        raise NotImplementedError

    def __init__(
        self,
        model: nn.Module,
        config: CompressionConfig,
        handle: CompressionHandle,
        score_layer: int,
        num_layers: int,
    ) -> None:
        self.model, self.config, self.handle = model, config, handle
        self.method = get_method(config.method)
        self.score_layer, self.num_layers = score_layer, num_layers
        self.off = config.is_off
        check_served(self, config, score_layer, num_layers)
        # Off (ratio 1.0): the pipeline keeps every token, so nothing needs capturing.
        capture = (set(), set()) if self.off else config.capture_layers(score_layer, num_layers)
        self.qk_layers, self.hidden_layers = capture
        self.capturing = False
        self.captured: dict[tuple[str, int], Tensor] = {}
        self.stats: CompressionStats | None = None
        self._vision_start = 0.0
        self._hooks: list[Any] = []
        self._patched: list[tuple[nn.Module, str]] = []
        self._removers: list[Callable[[], None]] = []

    # --- installation ---------------------------------------------------------------------------
    def hook(self, handle: Any) -> None:
        """Keep a hook handle (anything with ``remove()``) for :meth:`remove`."""
        self._hooks.append(handle)

    def patch(self, module: nn.Module, name: str, fn: Any) -> None:
        """Override ``module.name`` on the instance (the class stays untouched)."""
        setattr(module, name, fn)
        self._patched.append((module, name))

    def on_remove(self, fn: Callable[[], None]) -> None:
        self._removers.append(fn)

    def remove(self) -> None:
        """Undo every hook and patch (idempotent)."""
        for fn in reversed(self._removers):
            fn()
        for h in self._hooks:
            h.remove()
        for module, name in reversed(self._patched):
            if name in module.__dict__:
                delattr(module, name)
        self._hooks, self._patched, self._removers = [], [], []
        self.captured.clear()

    # --- capture --------------------------------------------------------------------------------
    def capture_output(self, module: nn.Module, kind: str, layer: int, pick: Callable[[Any], Tensor]) -> None:
        """While capturing, store ``pick(output)`` of ``module`` as ``captured[(kind, layer)]``."""

        def grab(mod, args, output) -> None:
            if self.capturing:
                self.captured[(kind, layer)] = pick(output)

        self.hook(module.register_forward_hook(grab))

    def capture_clip_layers(self, layers: Sequence[nn.Module]) -> None:
        """Capture what the method asked for from a CLIP-style encoder (``[CLS]`` first; each
        layer's ``self_attn`` has ``q_proj`` / ``k_proj``): the [CLS] query and all keys of
        :attr:`qk_layers`, the hidden states of :attr:`hidden_layers` (index ``num_layers``: the
        last layer's output)."""
        for i in sorted(self.qk_layers):
            attn = layers[i].self_attn
            self.capture_output(attn.q_proj, "q", i, lambda out: out[:, 0])
            self.capture_output(attn.k_proj, "k", i, lambda out: out)
        for i in sorted(self.hidden_layers):
            if i < len(layers):
                self.capture_input(layers[i], "hidden", i)
            else:
                self.capture_output(
                    layers[-1], "hidden", i, lambda out: out[0] if isinstance(out, tuple) else out
                )

    def capture_input(self, module: nn.Module, kind: str, layer: int) -> None:
        """While capturing, store the first input (``hidden_states``) of ``module``."""

        def grab(mod, args, kwargs) -> None:
            if self.capturing:
                self.captured[(kind, layer)] = args[0] if args else kwargs["hidden_states"]

        self.hook(module.register_forward_pre_hook(grab, with_kwargs=True))

    def captured_tensor(self, kind: str, layer: int) -> Tensor:
        if (kind, layer) not in self.captured:
            raise RuntimeError(f"vision layer {layer} did not run, so its {kind} could not be captured")
        return self.captured[(kind, layer)]

    def time_vision(self, tower: nn.Module, device: Callable[[], torch.device]) -> None:
        """Add the tower's run time to ``stats.vision_seconds`` while capturing."""

        def start(mod, args) -> None:
            if self.capturing:
                sync(device())
                self._vision_start = time.perf_counter()

        def end(mod, args, output) -> None:
            if self.capturing and self.stats is not None:
                sync(device())
                self.stats.vision_seconds += time.perf_counter() - self._vision_start

        self.hook(tower.register_forward_pre_hook(start))
        self.hook(tower.register_forward_hook(end))

    def begin(self) -> None:
        """Start a call that sees images: fresh stats, capture on."""
        self.stats = CompressionStats()
        self.capturing = True

    def end(self) -> None:
        """Capture off, captured tensors freed, stats published on the handle."""
        self.capturing = False
        self.captured.clear()
        self.handle.last_stats = self.stats

    # --- compression ----------------------------------------------------------------------------
    def compress(self, tokens: ImageTokens) -> tuple[list[ViewOutput], float]:
        """Run the method on one image; returns its per-view outputs and the seconds it took."""
        device = tokens.features.device
        sync(device)
        start = time.perf_counter()
        outs = compress_image(self.method, self.config, tokens)
        sync(device)
        return outs, time.perf_counter() - start

    def compress_all(self, tokens: list[ImageTokens]) -> tuple[list[CompressedImage], float]:
        """Run the method on every image of a batch at once (its batched path where it has one);
        returns one result per image and the seconds the whole batch took."""
        if not tokens:
            return [], 0.0
        device = tokens[0].features.device
        sync(device)
        start = time.perf_counter()
        results = compress_images(self.method, self.config, tokens)
        sync(device)
        return results, time.perf_counter() - start

    # --- the compress -> pack -> record loop (a template: hosts override the hooks) -------------
    def compress_and_pack(
        self, images: list[ImageTokens], image_sizes: list[tuple[int, int]], newline: Tensor | None = None
    ) -> list[Tensor]:
        """Compress every image of a batch at once, pack each for the model and record its stats.

        ``images`` in batch order (``image_sizes[i]``: image i's (height, width) for the stats;
        ``newline``: the model's newline embedding, if it has one). Returns each image's token
        sequence [T_i, D] as :meth:`pack` builds it. Hooks, in the order they run:
        :meth:`passes_through` (images kept whole, uncompressed), :meth:`pack`,
        :meth:`separators` (an uncompressed image's non-visual tokens) and :meth:`image_note`.
        """
        passthrough = [self.passes_through(t) for t in images]
        compressed, seconds = self.compress_all([t for t, p in zip(images, passthrough) if not p])
        done = iter(compressed)
        results = [CompressedImage(t, keep_all(t)) if p else next(done) for t, p in zip(images, passthrough)]
        packed = self.pack(results, passthrough, newline)
        per_image = seconds / max(len(compressed), 1)
        for idx, (tokens, result, seq, alone) in enumerate(zip(images, results, packed, passthrough)):
            layout = tokens.layout
            self.stats.images.append(
                image_stats(
                    layout,
                    result,
                    self.config,
                    index=idx,
                    image_size=image_sizes[idx],
                    seconds=0.0 if alone else per_image,
                    newlines_before=self.separators(layout),
                    newlines_after=seq.shape[0] - result.num_kept,
                    note=self.image_note(tokens, alone),
                    passthrough=alone,
                )
            )
        self.stats.compress_seconds += seconds
        return packed

    def passes_through(self, tokens: ImageTokens) -> bool:
        """Whether an image skips the method and keeps every token (default: never)."""
        return False

    def pack(
        self, results: list[CompressedImage], passthrough: list[bool], newline: Tensor | None
    ) -> list[Tensor]:
        """Each image's sequence [T_i, D] for the model. Default: :func:`vtcompress.packing.pack_images`
        (kept tokens, newlines by the config's :attr:`~vtcompress.config.CompressionConfig.newline_policy`;
        images that passed through with the stock "unpadded" newlines)."""
        seqs = iter(
            pack_images(
                [r for r, p in zip(results, passthrough) if not p], newline, self.config.newline_policy
            )
        )
        return [
            pack_images([r], newline, "unpadded")[0] if p else next(seqs)
            for r, p in zip(results, passthrough)
        ]

    def separators(self, layout: Layout) -> int:
        """Tokens of an uncompressed image that are not visual tokens (they are never compressed
        and ``ratio`` does not count them). Default: the stock newlines, ``layout.num_newlines()``."""
        return layout.num_newlines("unpadded")

    def image_note(self, tokens: ImageTokens, passthrough: bool) -> str:
        """A note for an image's stats (default: says when it passed through)."""
        return "single view: passed through uncompressed" if passthrough else ""
