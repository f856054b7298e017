"""The plain-ViT parts of SimpleClick and SegNext: an MAE-style ViT whose blocks attend within windows except
a few global ones, the SimpleFPN neck that turns its 1/16 tokens into a 1/4..1/32 pyramid, and the all-MLP
(SegFormer-style) head. Parameter names follow the published checkpoints.

Windows: a ``g x g`` token grid is cut into ``n x n`` windows with ``n = g // (224 // patch)`` (so a 1024 px
frame of 16 px patches has 4 x 4 windows of 16 x 16 tokens); the blocks listed in ``global_blocks`` attend
over the whole grid. Attention runs through ``scaled_dot_product_attention`` (the same softmax(QK^T/sqrt(d))V
as the published code, without materialising the attention matrix: at 4096 tokens and 12 heads that matrix
alone is 800 MB).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

WINDOW_PIXELS = 224  # the MAE pretraining size: windows hold 224 px of image


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> tokens ``(B, H/p * W/p, dim)`` in raster order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PlainViT(nn.Module):
    """Patch embedding, learned position embedding (with the unused class-token slot the checkpoints keep) and
    blocks, windowed except ``global_blocks`` (1-based)."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int, image_size: Tuple[int, int],
                 global_blocks: Sequence[int]):
        super().__init__()
        self.patch, self.grid = patch, (image_size[0] // patch, image_size[1] // patch)
        self.global_blocks = frozenset(global_blocks)
        self.patch_embed = PatchEmbed(3, dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self._resized: Dict[Tuple[int, int], torch.Tensor] = {}

    def position(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The position embedding for a ``grid`` of tokens: the trained one, or it resized bicubically (as
        SimpleClick's evaluation does for frames other than the training size), computed once per grid."""
        table = self.pos_embed[:, 1:]
        if grid == self.grid:
            return table
        key = grid
        if key not in self._resized or self._resized[key].device != table.device:
            square = table.reshape(1, self.grid[0], self.grid[1], -1).permute(0, 3, 1, 2)
            resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
            self._resized[key] = resized.permute(0, 2, 3, 1).flatten(1, 2).detach()
        return self._resized[key]

    def load_state_dict(self, *args, **kwargs):
        self._resized.clear()
        return super().load_state_dict(*args, **kwargs)

    def windows(self, grid: Tuple[int, int]) -> Tuple[int, int]:
        per = WINDOW_PIXELS // self.patch
        return max(1, grid[0] // per), max(1, grid[1] // per)

    def forward(self, image: torch.Tensor, added: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised image ``(B, 3, H, W)`` (+ tokens ``added`` after the patch embedding) -> ``(B, N, dim)``."""
        grid = (image.shape[-2] // self.patch, image.shape[-1] // self.patch)
        x = self.patch_embed(image)
        if added is not None:
            x = x + added
        return self.run_blocks(x + self.position(grid), grid)

    def run_blocks(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        nh, nw = self.windows(grid)
        split = False
        for i, block in enumerate(self.blocks, start=1):
            if i in self.global_blocks:
                if split:
                    x = merge_windows(x, grid, nh, nw)
                    split = False
            elif not split:
                x = split_windows(x, grid, nh, nw)
                split = True
            x = block(x)
        return merge_windows(x, grid, nh, nw) if split else x


def split_windows(x: torch.Tensor, grid: Tuple[int, int], nh: int, nw: int) -> torch.Tensor:
    b, n, c = x.shape
    gh, gw = grid
    if gh % nh or gw % nw:
        raise ValueError(f"a {gh}x{gw} token grid does not split into {nh}x{nw} windows")
    x = x.view(b, nh, gh // nh, nw, gw // nw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, (gh // nh) * (gw // nw), c)


def merge_windows(x: torch.Tensor, grid: Tuple[int, int], nh: int, nw: int) -> torch.Tensor:
    bw, n, c = x.shape
    gh, gw = grid
    b = bw // (nh * nw)
    x = x.view(b, nh, nw, gh // nh, gw // nw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, c)


def tokens_to_map(x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])


class SimpleFPN(nn.Module):
    """ViTDet's simple feature pyramid from one 1/16 map: 1/4 (two transposed convs), 1/8, 1/16, 1/32."""

    def __init__(self, in_dim: int, out_dims: Sequence[int] = (128, 256, 512, 1024)):
        super().__init__()
        c4, c8, c32 = max(out_dims[0] * 2, in_dim // 2), max(out_dims[1], in_dim // 2), max(out_dims[3], in_dim * 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, 2), nn.GroupNorm(1, c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, 2), nn.GroupNorm(1, c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), nn.GroupNorm(1, out_dims[0]), nn.GELU())
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, 2), nn.GroupNorm(1, c8),
            nn.Conv2d(c8, out_dims[1], 1), nn.GroupNorm(1, out_dims[1]), nn.GELU())
        self.down_16 = nn.Sequential(nn.Conv2d(in_dim, out_dims[2], 1), nn.GroupNorm(1, out_dims[2]), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, 2), nn.GroupNorm(1, c32),
            nn.Conv2d(c32, out_dims[3], 1), nn.GroupNorm(1, out_dims[3]), nn.GELU())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]


class ConvReLU(nn.Module):
    """A 1x1 convolution with bias and ReLU, named as mmcv's ConvModule (``.conv``) the checkpoints come from."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def _up_block(c: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), nn.GroupNorm(1, c // 2), nn.Conv2d(c // 2, c // 2, 1),
                         nn.GroupNorm(1, c // 2), nn.GELU())


class MLPHead(nn.Module):
    """Each pyramid level through a 1x1 conv, resized to the 1/4 level, concatenated, fused by a 1x1 conv, then
    (SimpleClick's ``upsample`` x2 / x4) doubled by transposed-conv blocks, and classified by a 1x1 conv.
    ``classifier``: the name of that last conv in the checkpoints (SimpleClick ``conv_seg``, SegNext
    ``seg_conv``); ``up_blocks``: SimpleClick's head carries its two upsampling blocks even when unused."""

    def __init__(self, in_channels: Sequence[int], channels: int, upsample: int = 1, up_blocks: bool = False,
                 classifier: str = "conv_seg"):
        super().__init__()
        self.upsample, self.classifier = upsample, classifier
        self.convs = nn.ModuleList(ConvReLU(c, channels) for c in in_channels)
        self.fusion_conv = ConvReLU(channels * len(in_channels), channels)
        if up_blocks:
            self.up_conv1, self.up_conv2 = _up_block(channels), _up_block(channels // 2)
        setattr(self, classifier, nn.Conv2d(channels // upsample, 1, 1))

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        # The published head resizes every level to the 1/4 size, concatenates and applies the 1x1 fusion conv.
        # Resizing and a 1x1 conv are both linear and commute, so each level's slice of the fusion conv runs
        # at that level's own resolution before the resize: the same sum, at a third of the cost.
        size = levels[0].shape[-2:]
        weight = self.fusion_conv.conv.weight
        c = weight.shape[0]
        fused = None
        for k, (conv, x) in enumerate(zip(self.convs, levels)):
            part = F.conv2d(conv(x), weight[:, k * c:(k + 1) * c])
            if tuple(part.shape[-2:]) != tuple(size):
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            fused = part if fused is None else fused + part
        x = F.relu(fused + self.fusion_conv.conv.bias.view(1, -1, 1, 1))
        if self.upsample >= 2:
            x = self.up_conv1(x)
        if self.upsample >= 4:
            x = self.up_conv2(x)
        return getattr(self, self.classifier)(x)
