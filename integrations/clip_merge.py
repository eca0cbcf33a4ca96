"""Token merging inside a Hugging Face CLIP-style vision tower, by removable forward hooks.

Placement as in PiToMe's LLaVA path: a merge runs on the OUTPUT of a whole encoder layer
(``[B, 1+T, C]``, [CLS] first), using those hidden states as the metric, so the next layer --
and the hidden states ``output_hidden_states`` records -- see fewer tokens. The hooks are
registered with ``prepend=True``: they run before transformers' own output-capturing hooks,
which are installed lazily and would otherwise record the unmerged states.

Nothing in the model is replaced: no class swap, no config change. Attention keeps whatever
implementation the model uses (SDPA, eager, ...) since merging needs no attention mask. With
``proportional_attention`` the ``forward`` of the self-attention modules after the first merge
is overridden on the instance (removed again by ``remove()``) to add ``log(size)`` to every key's
logit through one extra q/k channel (:func:`vtcompress.merge.proportional_attention_qkv`) --
exact, and still one SDPA call without a mask.

The timm placement (merging between attention and MLP on head-averaged keys) does not fit
CLIPEncoderLayer's forward, which keeps its residual in a local variable; it is not offered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtcompress.config import TOWER_MERGE, CompressionConfig
from vtcompress.merge import (
    MergeMode,
    MergePlan,
    initial_owner,
    merge_owner,
    merge_sizes,
    merge_tokens,
    proportional_attention_qkv,
    tower_merging,
)

PlanFn = Callable[[Tensor, int, int], MergePlan]
"""``(metric [B, 1+T, C] with [CLS], r, layer) -> MergePlan`` over the T patch tokens."""
ScheduleFn = Callable[[int], Sequence[Sequence[int]]]
"""``N0 -> per merge layer, the token counts (without [CLS]) after each of its merge steps``."""


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class TowerMerge:
    """Merge tokens after encoder layers ``0 .. len(schedule) - 1`` of ``layers``.

    Args:
        layers: the encoder's layer list (``CLIPEncoderLayer``s; output [B, 1+T, C]).
        plan: builds one step's plan from the layer output (see :data:`PlanFn`).
        schedule: token counts per merge layer for a tower input of N0 patches (see :data:`ScheduleFn`).
        num_merge_layers: layers after which merging may happen (e.g. the layers before LLaVA's
            feature layer); hooks are installed on exactly these.
        mode: "weighted" (size-weighted mean) or "mean" (plain mean, PiToMe's LLaVA path).
        proportional_attention: add log(size) to key logits in layers after the first merge.
        enabled: called at each tower run; False leaves that run untouched.

    After a run, :attr:`owner` (long [B, N0]) maps every original patch to the token that holds it
    in the last merged layer's output, :attr:`sizes` (long [B, T]) counts patches per token, and
    :attr:`token_counts` lists the patch-token count after every merge layer.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        plan: PlanFn,
        schedule: ScheduleFn,
        num_merge_layers: int,
        mode: MergeMode = "weighted",
        proportional_attention: bool = False,
        enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        if not 0 < num_merge_layers <= len(layers):
            raise ValueError(f"num_merge_layers must be in 1..{len(layers)}, got {num_merge_layers}")
        self.layers, self.plan, self.schedule = list(layers), plan, schedule
        self.num_merge_layers, self.mode, self.enabled = num_merge_layers, mode, enabled
        self.owner: Tensor | None = None
        self.sizes: Tensor | None = None
        self.token_counts: list[int] = []
        self._active = False
        self._steps: list[list[int]] = []
        self._hooks: list[Any] = []
        self._patched: list[nn.Module] = []
        self._hooks.append(self.layers[0].register_forward_pre_hook(self._start, prepend=True))
        for index in range(num_merge_layers):
            hook = functools.partial(self._merge, index)
            self._hooks.append(self.layers[index].register_forward_hook(hook, prepend=True))
        if proportional_attention:
            for layer in self.layers[1:]:
                attn = layer.self_attn
                attn.forward = functools.partial(self._attention, attn, attn.forward)
                self._patched.append(attn)

    def remove(self) -> None:
        """Remove every hook and instance override (idempotent)."""
        for hook in self._hooks:
            hook.remove()
        for attn in self._patched:
            attn.__dict__.pop("forward", None)
        self._hooks, self._patched, self._active = [], [], False

    # --- hooks --------------------------------------------------------------------------------
    def _start(self, module: nn.Module, args: tuple) -> None:
        self._active = bool(self.enabled())
        self.owner = self.sizes = None
        self.token_counts = []
        if self._active:
            hidden = args[0]
            patches = hidden.shape[1] - 1
            self._steps = [list(s) for s in self.schedule(patches)]
            self.owner = initial_owner(hidden.shape[0], patches, hidden.device)
            self.sizes = torch.ones(hidden.shape[0], patches, dtype=torch.long, device=hidden.device)

    def _merge(self, index: int, module: nn.Module, args: tuple, output: Any) -> Any:
        if not self._active:
            return None
        x = _hidden(output)
        for target in self._steps[index] if index < len(self._steps) else ():
            plan = self.plan(x, x.shape[1] - 1 - int(target), index)
            x = merge_tokens(x, plan, self.sizes, self.mode, class_token=True)
            self.sizes, self.owner = merge_sizes(plan, self.sizes), merge_owner(plan, self.owner)
        self.token_counts.append(x.shape[1] - 1)
        return _replace_hidden(output, x)

    def _attention(self, attn: nn.Module, original: Callable, hidden_states: Tensor, *args, **kwargs):
        """Self-attention with ``+ log(size)`` on key logits; stock forward when nothing merged yet."""
        if not self._active or self.sizes is None or self.sizes.shape[1] + 1 != hidden_states.shape[1]:
            return original(hidden_states, *args, **kwargs)
        batch, length, _ = hidden_states.shape
        heads = getattr(attn, "num_heads", None) or attn.config.num_attention_heads
        head_dim = attn.head_dim

        def split(t: Tensor) -> Tensor:
            return t.view(batch, length, heads, head_dim).transpose(1, 2)

        q, k, v = (
            split(attn.q_proj(hidden_states)),
            split(attn.k_proj(hidden_states)),
            split(attn.v_proj(hidden_states)),
        )
        sizes = torch.cat([self.sizes.new_ones(batch, 1), self.sizes], dim=1)  # [CLS] has size 1
        q, k, v = proportional_attention_qkv(q, k, v, sizes, attn.scale)
        if getattr(attn.config, "_attn_implementation", "eager") == "eager":
            weights = torch.softmax(
                torch.matmul(q, k.transpose(-1, -2)) * attn.scale, dim=-1, dtype=torch.float32
            )
            out = torch.matmul(weights.to(q.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        out = out[..., :head_dim].transpose(1, 2).reshape(batch, length, heads * head_dim)
        return attn.out_proj(out), None


def tower_merge_for(
    layers: Sequence[nn.Module],
    config: CompressionConfig,
    score_layer: int,
    num_layers: int,
    enabled: Callable[[], bool],
) -> TowerMerge | None:
    """A :class:`TowerMerge` for a merging method's config (``pitome`` / ``tome`` with
    ``placement="tower"``): merges after layers ``0 .. score_layer-1``.

    ``config`` is a :class:`vtcompress.merge.TowerMerging` (what this calls on it). None when there
    is nothing to do: the method does not merge in the tower, compression is off, or no layer
    precedes the score layer.
    """
    if TOWER_MERGE not in config.requirements(score_layer, num_layers) or config.is_off or score_layer < 1:
        return None
    config = tower_merging(config)

    def plan(metric: Tensor, r: int, layer: int) -> MergePlan:
        return config.plan(metric, r, layer, num_layers, class_token=True)

    return TowerMerge(
        layers,
        plan,
        lambda patches: config.tower_schedule(patches, score_layer),
        score_layer,
        mode=config.merge,
        proportional_attention=config.proportional_attention,
        enabled=enabled,
    )
