"""DocOwl1.5's vision side: the ViT-L/14 re-implementation and the H-Reducer (``vision2text``).

Module and parameter names follow the official checkpoints (``model.vision_model.*``,
``model.vision2text.*``), so their state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtcompress.integrations.docowl.configuration import DocOwlVisionSpec, HReducerSpec


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class VisionEmbeddings(nn.Module):
    """Patchify (no bias), prepend [CLS], add the learned position table, then ``pre_layernorm``."""

    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        d = spec.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embed = nn.Conv2d(spec.num_channels, d, spec.patch_size, spec.patch_size, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, spec.num_patches + 1, d))
        self.pre_layernorm = nn.LayerNorm(d, eps=spec.layer_norm_eps)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, S, S] -> [B, 1+P, D]."""
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_embedding[:, : x.shape[1]].to(x.dtype)
        return self.pre_layernorm(x)


class VisionAttention(nn.Module):
    """Self-attention with the fused ``query_key_value`` projection.

    The 3D outputs of ``query_key_value`` are laid out per head: ``(heads, 3, head_dim)``,
    i.e. head h's q, k and v are adjacent (not all queries, then all keys, then all values).
    """

    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        d = spec.hidden_size
        self.num_heads = spec.num_attention_heads
        self.head_dim = d // self.num_heads
        if self.head_dim * self.num_heads != d:
            raise ValueError(f"vision hidden_size {d} is not divisible by {self.num_heads} heads")
        self.scale = self.head_dim**-0.5
        self.query_key_value = nn.Linear(d, 3 * d)
        self.dense = nn.Linear(d, d)

    def qkv(self, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, T, D] -> q, k, v each [B, heads, T, head_dim]."""
        b, t, _ = hidden_states.shape
        mixed = self.query_key_value(hidden_states).view(b, t, self.num_heads, 3, self.head_dim)
        q, k, v = mixed.permute(3, 0, 2, 1, 4).unbind(0)
        return q, k, v

    def forward(self, hidden_states: Tensor) -> Tensor:
        q, k, v = self.qkv(hidden_states)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.dense(out.transpose(1, 2).flatten(2))


class VisionMLP(nn.Module):
    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        if spec.hidden_act != "quick_gelu":
            raise ValueError(f"the DocOwl ViT uses quick_gelu, got hidden_act={spec.hidden_act!r}")
        self.fc1 = nn.Linear(spec.hidden_size, spec.intermediate_size)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(spec.intermediate_size, spec.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.self_attn = VisionAttention(spec)
        self.post_attention_layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.mlp = VisionMLP(spec)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class VisionEncoder(nn.Module):
    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(spec) for _ in range(spec.num_hidden_layers))

    def forward(self, hidden_states: Tensor) -> Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class DocOwlVisionModel(nn.Module):
    """ViT whose output is ``post_layernorm`` of the LAST layer (not the penultimate, unlike LLaVA)."""

    def __init__(self, spec: DocOwlVisionSpec):
        super().__init__()
        self.spec = spec
        self.embeddings = VisionEmbeddings(spec)
        self.encoder = VisionEncoder(spec)
        self.post_layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """[V, 3, S, S] views -> [V, 1+P, D] ([CLS] first)."""
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))


class HReducer(nn.Module):
    """``vision2text``: 1x4 convolutions that turn 32x32 patches into 32x8 tokens, then ``visual_fc``.

    For each row and each group of ``G`` (4) horizontally adjacent patches: ``reducer_before``
    (conv 1xG, stride G, G*D output channels, GELU) makes G vectors of D channels; channel block
    x returns to width position x of the group, and ``reducer`` (conv 1xG, stride G) folds the
    G vectors into one token. Every output token therefore depends only on the patches of its
    own group: selecting outputs equals reducing only the selected groups (see
    :meth:`reduce_groups`). ``ln_q`` exists in the checkpoints but is unused (as officially).
    """

    def __init__(self, spec: HReducerSpec, text_hidden_size: int):
        super().__init__()
        d = spec.hidden_size
        kh, kw = spec.kernel
        if kh != 1:
            # The official rearrangement puts all kh*kw channel blocks along the width, which only
            # fits 1 x G kernels; every released checkpoint uses 1x4.
            raise ValueError(f"only 1xG H-Reducer kernels are supported, got conv_shape={spec.conv_shape!r}")
        self.group = kw
        self.ln_q = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.reducer_before = nn.Sequential(
            nn.Conv2d(d, kw * d, (1, kw), stride=(1, kw), bias=True), nn.GELU()
        )
        self.reducer = nn.Conv2d(d, d, (1, kw), stride=(1, kw), bias=True)
        self.visual_fc = nn.Linear(d, text_hidden_size)
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, text_hidden_size))

    def reduce(self, patches: Tensor) -> Tensor:
        """Patch features to tokens, without ``vit_eos``.

        Args:
            patches: [V, P, D] patch features ([CLS] removed), P = grid*grid in raster order.
        Returns:
            [V, grid*grid/G, H] tokens in raster order of the grid x (grid/G) token grid.
        """
        v, p, d = patches.shape
        grid = int(round(p**0.5))
        if grid * grid != p or grid % self.group:
            raise ValueError(
                f"expected a square patch grid with width divisible by {self.group}, got {p} patches"
            )
        x = patches.transpose(1, 2).reshape(v, d, grid, grid)
        x = self.reducer_before(x)  # [V, G*D, grid, grid/G]; channel g*D + c
        gw = x.shape[-1]
        # Channel block g of token (i, j) goes back to width position j*G + g.
        x = x.view(v, self.group, d, grid, gw).permute(0, 2, 3, 4, 1).reshape(v, d, grid, gw * self.group)
        x = self.reducer(x).flatten(2).transpose(1, 2)  # [V, grid*gw, D]
        return self.visual_fc(x)

    def reduce_groups(self, groups: Tensor) -> Tensor:
        """Reduce patch groups one by one (what selecting groups before the H-Reducer means).

        Args:
            groups: [M, G, D] the G patches of each of M groups, left to right.
        Returns:
            [M, H] one token per group, equal to the matching rows of :meth:`reduce`.
        """
        m, g, d = groups.shape
        x = self.reducer_before(groups.transpose(1, 2)[:, :, None, :])  # [M, G*D, 1, 1]
        x = x.view(m, g, d).transpose(1, 2)[:, :, None, :]  # [M, D, 1, G]
        return self.visual_fc(self.reducer(x).flatten(1))

    def forward(self, hidden_states: Tensor) -> Tensor:
        """[V, 1+P, D] ViT output -> [V, P/G + 1, H] tokens with ``vit_eos`` last."""
        tokens = self.reduce(hidden_states[:, 1:])
        return torch.cat([tokens, self.vit_eos.to(tokens.dtype).expand(tokens.shape[0], -1, -1)], dim=1)
