"""InterFormer's image encoder: an MAE ViT with relative position biases and layer scale, then a SimpleFPN.

The ViT is mmsegmentation's "MAE" backbone as InterFormer configures it: 16 px patches, a class token, an
absolute position embedding for the 512 x 512 training size, full q/k/v biases, per-block relative position
bias tables for a 32 x 32 window (plus the three class-token entries), layer scale (``gamma_1``, ``gamma_2``)
and no final norm. Every block attends over all tokens of the image (no windows).

Other image sizes (InterFormer encodes at the padded native size): the absolute position embedding is resized
with nearest interpolation, and each block's relative position bias, a ``(N + 1) x (N + 1)`` map over the
32 x 32 training grid, is resized the same way along its key axis and then its query axis. Nearest
interpolation only selects entries, so the resized bias is the table gathered through the training-size
relative index at the nearest source token of every query and key: :func:`resized_index` computes that index
once per grid (with ``F.interpolate`` itself, so the source tokens are exactly torch's nearest ones) and every
block gathers its own table through it.

The SimpleFPN turns the stride-16 map into strides 4, 8, 16 and 32 (InterFormer's rescales 4, 2, 1, 0.5 with 32,
64, 128 and 256 channels). Parameter names follow InterFormer's checkpoints (``backbone.layers.N.attn.qkv``,
``backbone.fpn.rescale_ops.K.I``); the relative position index buffers those files carry are recomputable and
are not kept (each is checked on load).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def relative_position_index(window: Tuple[int, int]) -> torch.Tensor:
    """BEiT's ``(Wh*Ww + 1) x (Wh*Ww + 1)`` index into a relative position bias table of
    ``(2Wh - 1)(2Ww - 1) + 3`` rows: token pairs by their offset, then class-to-token, token-to-class and
    class-to-class."""
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    distances = (2 * wh - 1) * (2 * ww - 1) + 3
    index = torch.zeros((wh * ww + 1,) * 2, dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = distances - 3
    index[0:, 0] = distances - 2
    index[0, 0] = distances - 1
    return index


def nearest_sources(size: int, out: int) -> torch.Tensor:
    """Which of ``size`` source positions torch's nearest interpolation reads for each of ``out`` outputs."""
    src = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1)
    return F.interpolate(src, size=(out, 1), mode="nearest")[0, 0, :, 0].long()


def resized_index(window: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """The relative position index for a ``grid`` of tokens: InterFormer's nearest resize of the bias map (keys,
    then queries) as a gather. Row/column 0 is the class token."""
    index = relative_position_index(window)
    if tuple(grid) == tuple(window):
        return index
    rows, cols = nearest_sources(window[0], grid[0]), nearest_sources(window[1], grid[1])
    tokens = (rows[:, None] * window[1] + cols[None, :]).flatten() + 1
    source = torch.cat([torch.zeros(1, dtype=torch.long), tokens])
    return index[source][:, source]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, window: Tuple[int, int]):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1) + 3, heads))

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, N + 1, C)``; ``index`` from :func:`resized_index` for this grid."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table.t()[:, index]  # (heads, N + 1, N + 1)
        # softmax(q k^T / sqrt(d) + bias) v, as the official block, without keeping the scores
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FFN(nn.Module):
    """mmcv's FFN as the checkpoints name it: ``layers.0.0`` (to 4C, GELU) and ``layers.1`` (back to C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, window: Tuple[int, int], mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, window)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(dim, dim * mlp_ratio)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.ln1(x), index)
        return x + self.gamma_2 * self.ffn(self.ln2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


def _rescale_op(scale: float, in_dim: int, out_dim: int) -> nn.Sequential:
    """One SimpleFPN branch, with InterFormer's channel widths for each rescale factor."""
    if scale == 4:
        dim = max(in_dim // 2, 2 * out_dim)
        return nn.Sequential(nn.ConvTranspose2d(in_dim, dim, 2, 2), nn.GroupNorm(1, dim), nn.GELU(),
                             nn.ConvTranspose2d(dim, dim // 2, 2, 2), nn.GroupNorm(1, dim // 2),
                             nn.Conv2d(dim // 2, out_dim, 1), nn.GroupNorm(1, out_dim), nn.GELU())
    if scale == 2:
        dim = max(in_dim // 2, out_dim)
        return nn.Sequential(nn.ConvTranspose2d(in_dim, dim, 2, 2), nn.GroupNorm(1, dim),
                             nn.Conv2d(dim, out_dim, 1), nn.GroupNorm(1, out_dim), nn.GELU())
    if scale == 1:
        return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1), nn.GroupNorm(1, out_dim), nn.GELU())
    if scale == 0.5:
        dim = max(2 * in_dim, out_dim)
        return nn.Sequential(nn.Conv2d(in_dim, dim, 2, 2), nn.GroupNorm(1, dim),
                             nn.Conv2d(dim, out_dim, 1), nn.GroupNorm(1, out_dim), nn.GELU())
    raise ValueError(f"InterFormer's SimpleFPN has no rescale {scale}")


class SimpleFPN(nn.Module):
    def __init__(self, in_dim: int, rescales: Sequence[float], out_dims: Sequence[int]):
        super().__init__()
        self.rescale_ops = nn.ModuleList(_rescale_op(s, in_dim, d) for s, d in zip(rescales, out_dims))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [op(x) for op in self.rescale_ops]


class MAEBackbone(nn.Module):
    """``(B, 3, H, W)`` normalised pixels (H, W multiples of 16) -> the four FPN maps at strides 4..32."""

    def __init__(self, dim: int, depth: int, heads: int, train_size: int = 512, patch: int = 16,
                 rescales: Sequence[float] = (4, 2, 1, 0.5), out_dims: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        self.patch = patch
        self.window = (train_size // patch, train_size // patch)
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.window[0] * self.window[1] + 1, dim))
        self.layers = nn.ModuleList(Block(dim, heads, self.window) for _ in range(depth))
        self.fpn = SimpleFPN(dim, rescales, out_dims)
        self._index: Dict[Tuple[int, int], torch.Tensor] = {}

    def index_for(self, grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
        key = tuple(grid)
        index = self._index.get(key)
        if index is None or index.device != device:
            if len(self._index) > 8:  # a few image sizes at a time; each index is (N + 1)^2 int64
                self._index.clear()
            index = self._index[key] = resized_index(self.window, key).to(device)
        return index

    def position(self, grid: Tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == self.window:
            return self.pos_embed
        table = self.pos_embed[:, 1:].reshape(1, self.window[0], self.window[1], -1).permute(0, 3, 1, 2)
        resized = F.interpolate(table, size=grid, mode="nearest").flatten(2).transpose(1, 2)
        return torch.cat([self.pos_embed[:, :1], resized], 1)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last block's patch tokens as a map ``(B, C, H/16, W/16)``."""
        x = self.patch_embed(pixels)
        grid = tuple(x.shape[-2:])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1)
        x = x + self.position(grid)
        index = self.index_for(grid, x.device)
        for layer in self.layers:
            x = layer(x, index)
        return x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, *grid)

    def forward(self, pixels: torch.Tensor) -> List[torch.Tensor]:
        return self.fpn(self.tokens(pixels))
