"""Method configurations: small validated dataclasses, one per method (PEFT style)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from vtcompress.layout import Layout, NewlinePolicy

from vtcompress import shadowing  # noqa: F401  (refuses a folder named vtcompress hiding the package)


def check_ratio(ratio: Any) -> float:
    """Return ``ratio`` as a float in (0, 1] or raise a ValueError that says how to fix it."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio must be a number in (0, 1], got {type(ratio).__name__} {ratio!r}")
    ratio = float(ratio)
    if math.isnan(ratio) or not (0.0 < ratio <= 1.0):
        raise ValueError(
            f"ratio must be in (0, 1] (kept visual tokens / original visual tokens), got {ratio}. "
            "Use e.g. ratio=0.25 to keep a quarter of the tokens, or ratio=1.0 for no compression."
        )
    return ratio


# What a method can need from a host (``CompressionConfig.requirements``) and a host can provide
# (``Host.provides``). Hosts refuse a method whose needs they do not meet, naming both.
CLS_ATTENTION = "cls_attention"
HIDDEN_STATES = "hidden_states"
GLOBAL_VIEW = "global_view"
TOWER_MERGE = "tower_merge"
VIDEO = "video"
CAPABILITIES: dict[str, str] = {
    CLS_ATTENTION: "the [CLS] query and keys of vision layers",
    HIDDEN_STATES: "vision hidden states",
    GLOBAL_VIEW: "a global (whole-image) view beside the crops",
    TOWER_MERGE: "token merging inside the vision tower",
    VIDEO: "video inputs (clips of frames)",
}


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


@dataclass
class CompressionConfig:
    """Base of every method config.

    ``ratio`` is the fraction of visual tokens kept, counted without newline tokens
    (see docs/budget.md). ``ratio=1.0`` switches compression off exactly.
    """

    method: ClassVar[str] = ""
    # What the method compresses: "image" methods also run on each frame of a clip
    # (vtcompress.video.compress_clip); "video" methods take whole clips and refuse images.
    media: ClassVar[tuple[str, ...]] = ("image",)
    ratio: float = 0.25

    def __post_init__(self) -> None:
        self.ratio = check_ratio(self.ratio)
        self.validate()

    def validate(self) -> None:
        """Subclasses check their own fields here and raise ValueError naming the fix."""

    def changed_options(self) -> str:
        """The options that differ from the class's defaults, ratio aside, as ``key=value`` text
        ("" when none): what a report shows next to the method's name."""
        changed = []
        for f in dataclasses.fields(self):
            factory = f.default_factory
            default = factory() if factory is not dataclasses.MISSING else f.default
            if f.name != "ratio" and getattr(self, f.name) != default:
                changed.append(f"{f.name}={getattr(self, f.name)!r}")
        return ", ".join(changed)

    @property
    def is_off(self) -> bool:
        """True when the method keeps every token, so adapters may skip it (``ratio`` 1.0).

        A method with an option that still compresses at ratio 1.0 overrides this.
        """
        return self.ratio >= 1.0

    # --- how many tokens it keeps ------------------------------------------------------------------
    def content_dependence(self) -> str:
        """Empty when the number of tokens kept is a function of the layout and the options alone;
        otherwise the option that makes it depend on the image's content, with the setting that
        does not, e.g. ``"allocation='paper' (use allocation='exact')"``. Default: "" (the exact
        budget rule); methods with content-dependent modes override it."""
        return ""

    def kept_count(self, layout: Layout) -> int | None:
        """Visual tokens (separators such as newlines excluded) an image of ``layout`` keeps, known
        before its pixels are seen; None when it depends on the content (see
        :meth:`content_dependence`). Default: every token when off, else the exact budget rule
        ``keep_count(layout.num_tokens(), ratio)`` (docs/budget.md). A method that keeps another
        static count overrides this. Placeholder counts (vLLM) and hosts' floors ask it."""
        if self.is_off:
            return layout.num_tokens()
        if self.content_dependence():
            return None
        from vtcompress.budget import keep_count  # here: budget imports torch, configs must not (CLI --help)

        return keep_count(layout.num_tokens(), self.ratio)

    @property
    def newline_policy(self) -> NewlinePolicy:
        """How hosts that end token rows with a newline place them around kept tokens
        (:data:`vtcompress.layout.NEWLINE_POLICIES`): the config's ``newline`` option where it has
        one, "unpadded" (the stock packing) otherwise and whenever the config is off."""
        return "unpadded" if self.is_off else getattr(self, "newline", "unpadded")

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        """Vision layers whose attention q/k, and hidden-state indices, the method needs.

        ``score_layer`` is the layer that consumes the features the model uses (the last CLIP
        layer for LLaVA-NeXT); ``num_layers`` the tower depth. Default: nothing.
        """
        return set(), set()

    def requirements(self, score_layer: int, num_layers: int) -> dict[str, str]:
        """What the method needs from a host: capability (see ``CAPABILITIES``) -> how to do
        without it ("" when there is no alternative). Default: what ``capture_layers`` asks for."""
        qk, hidden = self.capture_layers(score_layer, num_layers)
        needs = {**({CLS_ATTENTION: ""} if qk else {}), **({HIDDEN_STATES: ""} if hidden else {})}
        if "image" in self.media:
            return needs
        return {**needs, VIDEO: "use an image method on this host, or a video method on a host with videos"}

    def replace(self, **changes: Any) -> CompressionConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}
