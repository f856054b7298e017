"""SAIC-IS's multi-input SegFormer: a Mix Transformer (MiT-B4) fed the interaction maps beside the image.

The maps (previous probabilities, click disks of radius 3, contour and stroke maps) go through RITM's
"Conv1S" stack (here unstrided) and an overlapping patch embedding of their own (7x7, stride 4), and are added
to the image's first-stage tokens. Four MiT stages (overlapping patch embeddings, efficient self-attention
with spatial reduction 8/4/2/1, Mix-FFN with a 3x3 depthwise conv) give features at 1/4..1/32; the all-MLP
SegFormer head projects each to 768 channels, resizes them to 1/4, fuses (1x1 conv, BatchNorm, ReLU) and
predicts logits at 1/4, upsampled to the frame (bilinear, corners aligned). Every interaction runs the whole
network (the maps enter at the first stage). Parameter names follow SAIC-IS's checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from .maps import config_params
from .model import MapsConfig, MapsNetwork, input_kinds

SEGFORMER_CLASS = "isegm.model.is_segformer_model.SegFormerModel"


@dataclass(frozen=True)
class MiTConfig(MapsConfig):
    backbone: str  # "mit_b4"
    depths: Tuple[int, int, int, int]
    checkpoint: str  # the official file name
    dims: Tuple[int, int, int, int] = (64, 128, 320, 512)
    heads: Tuple[int, int, int, int] = (1, 2, 5, 8)
    reductions: Tuple[int, int, int, int] = (8, 4, 2, 1)
    head_dim: int = 768  # the SegFormer head's embedding (SAIC-IS: 768 from MiT-B2 up)
    aux_head: bool = False  # the file's config says whether it trained one

    def describe(self) -> str:
        return f"{self.publisher} SegFormer {self.backbone.replace('_', '-').upper()}{self.kinds_text}"


SEGFORMER_CONFIGS: Dict[str, MiTConfig] = {
    # models/segformer/segformer_cocolvis_itermask_multi_input.py
    "saicis_segformer_b4_multi_cocolvis": MiTConfig("mit_b4", (3, 8, 27, 3), "segformer_multi.pth", disk_radius=3.0,
                                                    square=448, multi_input=True, publisher="SAIC-IS"),
}


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Self-attention whose keys and values come from the token map reduced ``reduction`` times by a strided
    conv (and a LayerNorm)."""

    def __init__(self, dim: int, heads: int, reduction: int):
        super().__init__()
        self.heads, self.reduction = heads, reduction
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if reduction > 1:
            self.sr = nn.Conv2d(dim, dim, reduction, reduction)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        src = x
        if self.reduction > 1:
            src = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).transpose(1, 2))
        k, v = self.kv(src).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, reduction: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientAttention(dim, heads, reduction)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * 4)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class MixTransformer(nn.Module):
    def __init__(self, c: MiTConfig):
        super().__init__()
        cins = (3,) + c.dims[:3]
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(cins[i], c.dims[i], 7 if i == 0 else 3,
                                                                   4 if i == 0 else 2))
            setattr(self, f"block{i + 1}", nn.ModuleList(MiTBlock(c.dims[i], c.heads[i], c.reductions[i])
                                                         for _ in range(c.depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(c.dims[i], eps=1e-6))

    def forward(self, image: torch.Tensor, added: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        outs, x = [], image
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            if i == 1 and added is not None:
                x = x + added
            for block in getattr(self, f"block{i}"):
                x = block(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
            outs.append(x)
        return outs


class Linear2d(nn.Module):
    """SegFormer's per-pixel linear projection (``proj``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule with BatchNorm (names ``conv``, ``bn``; no conv bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    def __init__(self, dims: Sequence[int], embed: int, aux: bool):
        super().__init__()
        for i, d in enumerate(dims, start=1):
            setattr(self, f"linear_c{i}", Linear2d(d, embed))
        self.linear_fuse = ConvBNReLU(embed * 4, embed)
        self.linear_pred = nn.Conv2d(embed, 1, 1)
        if aux:
            self.aux_head = nn.Sequential(nn.Conv2d(embed, embed, 1), nn.InstanceNorm2d(embed), nn.ReLU(),
                                          nn.Conv2d(embed, 1, 1))

    def forward(self, levels: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        size = levels[0].shape[-2:]
        parts = []
        for i in (4, 3, 2, 1):  # SAIC-IS concatenates c4, c3, c2, c1
            x = getattr(self, f"linear_c{i}")(levels[i - 1])
            parts.append(x if i == 1 else F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        x = self.linear_fuse(torch.cat(parts, 1))
        aux = self.aux_head(x) if hasattr(self, "aux_head") else None
        return self.linear_pred(x), aux


class SegFormerBody(nn.Module):
    def __init__(self, c: MiTConfig):
        super().__init__()
        self.backbone = MixTransformer(c)
        self.decode_head = SegFormerHead(c.dims, c.head_dim, c.aux_head)


class MapsEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.patch_embed1 = OverlapPatchEmbed(64, dim, 7, 4)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.patch_embed1(maps)[0]


class SegFormerMapsNetwork(MapsNetwork):
    """SAIC-IS's SegFormerModel (``use_rgb_conv=False``, multi-input)."""

    def __init__(self, config: MiTConfig):
        super().__init__(config, strided=False)
        self.click_features_embed = MapsEmbed(config.dims[0])
        self.feature_extractor = SegFormerBody(config)

    def features(self, image, maps):
        levels = self.feature_extractor.backbone(image, self.click_features_embed(maps))
        return self.feature_extractor.decode_head(levels)


def adapt_segformer(config: MiTConfig, published: Optional[dict], name: str, source: str) -> MiTConfig:
    """Check a SAIC-IS SegFormer file's config against ``config``; take its aux-head and accumulate options."""
    if not published:
        return config
    params = config_params(published)
    found_class = published.get("class", "?")
    want = {"backbone_type": config.backbone, "use_disks": True, "norm_radius": config.disk_radius,
            "with_prev_mask": True, "use_rgb_conv": False, "strided": False,
            "inputs": ("point", "contour", "stroke") if config.multi_input else ("point",)}
    got = {"backbone_type": params.get("backbone_type", "mit_b1"), "use_disks": params.get("use_disks", False),
           "norm_radius": params.get("norm_radius", 260), "with_prev_mask": params.get("with_prev_mask", False),
           "use_rgb_conv": params.get("use_rgb_conv", True),
           "strided": bool(params.get("is_strided_maps_transform", False)),
           "inputs": input_kinds(params.get("input_type", "point"))}
    if found_class != SEGFORMER_CLASS or got != want:
        shown = ", ".join(f"{k}={got[k]}" for k in want)
        raise CheckpointError(f"checkpoint {source} does not fit {name} ({config.describe()}): its config says "
                              f"{found_class.rsplit('.', 1)[-1]}({shown})")
    return replace(config, aux_head=bool(params.get("with_aux_output", False)),
                   accumulate=bool(params.get("accumulate_multi_input", False)))
