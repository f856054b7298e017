"""InterFormer's interactive neck, I-MSA: the per-click part that fuses the click label map with the image's
cached FPN maps.

The reference label map (5 states per pixel, :mod:`.labels`) is embedded (one learned 32-vector per state),
brought to stride 4 and added to the stride-4 FPN map. Four stages follow, one per FPN level. A stage's first
block attends from the click-fused map (queries) to that level's raw FPN map (keys and values); later blocks
attend to themselves. Keys and values are never the full map: each block max-pools them to four grids sized
from the 512 x 512 training size (per-stage pooling ratios (12, 16, 20, 24), (6, 8, 10, 12), (3, 4, 5, 6),
(1, 2, 3, 4); ratio 1 = the whole map), adds a depthwise 3x3 of each and concatenates them (about 250 tokens
per stage whatever the image size), so a click costs little. Between stages a 3x3 stride-2 patch merging
halves the map; each stage's output is group-normalised. InterFormer-Tiny has "refine" blocks after some
stages: self-attention blocks that, given a region of interest (its ZoomIn), run inside that box only.

Parameter names follow InterFormer's checkpoints (``neck.stages.S.blocks.B.attn.query_proj``, ``neck.norm0``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

POOL_RATIOS = ((12, 16, 20, 24), (6, 8, 10, 12), (3, 4, 5, 6), (1, 2, 3, 4))
REF_STATES = 5  # definitely / possibly background, unknown, possibly / definitely foreground


def pooled_size(size: int, target: int, ratio: int) -> int:
    """One side of a pooled key/value grid: ``target / ratio`` at most, then rounded so that it divides ``size``
    about evenly, exactly as InterFormer computes it (Python's round: ties to even)."""
    p = min(target / ratio, size)
    return round(size / round(size / p))


class PoolingAttention(nn.Module):
    """Queries from a map, keys and values from max-pooled copies of another (or the same) map."""

    def __init__(self, dim: int, heads: int, target: Tuple[int, int], ratios: Sequence[int]):
        super().__init__()
        self.heads, self.target, self.ratios = heads, tuple(target), tuple(ratios)
        self.scale = (dim // heads) ** -0.5
        self.query_proj = nn.Linear(dim, dim)
        self.key_value_proj = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dconvs = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) for _ in ratios)

    def pooled(self, kv: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, T, C)`` key/value tokens: each pooled grid plus its depthwise conv."""
        h, w = kv.shape[-2:]
        parts = []
        for ratio, dconv in zip(self.ratios, self.dconvs):
            grid = kv
            if ratio != 1:
                size = (pooled_size(h, self.target[0], ratio), pooled_size(w, self.target[1], ratio))
                if size != (h, w):
                    grid = F.adaptive_max_pool2d(kv, size)
            grid = grid + dconv(grid)
            parts.append(grid.flatten(2).transpose(1, 2))
        return self.norm(torch.cat(parts, 1))

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query_proj(x.flatten(2).transpose(1, 2))
        k, v = self.key_value_proj(self.pooled(kv)).chunk(2, dim=-1)

        def heads(t):
            return t.reshape(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


class InvertedBottleneck(nn.Sequential):
    """1x1 up to ``hidden`` channels, Hardswish, depthwise 3x3, Hardswish, 1x1 back. Run channels-last: the
    depthwise conv and the 1x1s over the wide hidden map are about 1.8x faster so on a CPU (stage 0 at a 1024 px
    frame: 109 -> 62 ms); the result is the same to float rounding."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Conv2d(dim, hidden, 1), nn.Hardswish(), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden),
                         nn.Hardswish(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class PoolingBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, target: Tuple[int, int], ratios: Sequence[int]):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.norm_kv = nn.GroupNorm(1, dim)
        self.attn = PoolingAttention(dim, heads, target, ratios)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = InvertedBottleneck(dim, int(mlp_ratio * dim))

    def forward(self, x: torch.Tensor, kv: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.norm_kv(x if kv is None else kv))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """mmseg's PatchMerging as I-MSA uses it: 3x3 patches with stride 2 (zero padding 1), LayerNorm over each
    patch's 9C values, a linear map without bias."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(9 * dim)
        self.reduction = nn.Linear(9 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # (B, h'w', C*9), channel-major
        out = self.reduction(self.norm(patches))
        return out.transpose(1, 2).reshape(b, -1, (h + 1) // 2, (w + 1) // 2)


class Stage(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, target: Tuple[int, int],
                 ratios: Sequence[int], out_dim: Optional[int]):
        super().__init__()
        self.blocks = nn.ModuleList(PoolingBlock(dim, heads, mlp_ratio, target, ratios) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim) if out_dim else None

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """(the next stage's input, this stage's output)."""
        for i, block in enumerate(self.blocks):
            x = block(x, kv if i == 0 else None)
        return (self.downsample(x) if self.downsample is not None else None), x


class RefineStage(nn.Module):
    """InterFormer-Tiny's refine blocks: self-attention over the map, or only inside the ROI when given."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, target: Tuple[int, int],
                 ratios: Sequence[int]):
        super().__init__()
        self.blocks = nn.ModuleList(PoolingBlock(dim, heads, mlp_ratio, target, ratios) for _ in range(depth))

    def forward(self, x: torch.Tensor, roi: Optional[Tuple[int, int, int, int]] = None) -> torch.Tensor:
        """``roi``: (left, top, right, bottom) in this stage's cells, one box for the whole batch."""
        if roi is None:
            for block in self.blocks:
                x = block(x)
            return x
        x0, y0, x1, y1 = roi
        crop = x[..., y0:y1, x0:x1]
        for block in self.blocks:
            crop = block(crop)
        out = x.clone()
        out[..., y0:y1, x0:x1] = crop
        return out


class IMSA(nn.Module):
    STRIDES = (4, 2, 2, 2)

    def __init__(self, dims: Sequence[int] = (32, 64, 128, 256), heads: Sequence[int] = (1, 2, 4, 8),
                 depths: Sequence[int] = (1, 1, 2, 1), refine_start: Sequence[int] = (1, 1, 2, 1),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), train_size: int = 512):
        super().__init__()
        self.stages, self.refine_stages = nn.ModuleList(), nn.ModuleList()
        target = (train_size // self.STRIDES[0],) * 2
        for i, dim in enumerate(dims):
            out_dim = dims[i + 1] if i + 1 < len(dims) else None
            self.stages.append(Stage(dim, heads[i], mlp_ratios[i], refine_start[i], target, POOL_RATIOS[i], out_dim))
            refine = depths[i] - refine_start[i]
            self.refine_stages.append(RefineStage(dim, heads[i], mlp_ratios[i], refine, target, POOL_RATIOS[i])
                                      if refine > 0 else nn.Identity())
            self.add_module(f"norm{i}", nn.GroupNorm(1, dim))
            target = (target[0] // 2, target[1] // 2)
        self.patch_embed = nn.Parameter(torch.zeros(REF_STATES, dims[0]))

    @property
    def refines(self) -> bool:
        return any(not isinstance(r, nn.Identity) for r in self.refine_stages)

    def forward(self, features: Sequence[torch.Tensor], ref_embedding: torch.Tensor,
                roi: Optional[Tuple[int, int, int, int]] = None) -> List[torch.Tensor]:
        """``features``: the four FPN maps; ``ref_embedding``: the label embedding at stride 4 (see
        :func:`.labels.embed_at_stride4`); ``roi``: (left, top, right, bottom) in pixels of the padded frame,
        multiples of 32, or None."""
        x = features[0] + ref_embedding
        outs = []
        stride = 1
        for i, stage in enumerate(self.stages):
            x, out = stage(x, features[i])
            stride *= self.STRIDES[i]
            refine = self.refine_stages[i]
            if not isinstance(refine, nn.Identity):
                out = refine(out, None if roi is None else tuple(v // stride for v in roi))
            outs.append(getattr(self, f"norm{i}")(out))
        return outs
