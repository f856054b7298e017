"""The image encoders of the SAM family, built on timm's modules (no timm download).

- SAM and HQ-SAM: timm's ``VisionTransformerSAM`` (HQ-SAM also reads the output of the first global-attention
  block: :func:`vit_with_early_features`).
- MobileSAM: timm's ``TinyVit`` with MobileSAM's two changes (:class:`TinyVitSam`): the last stage keeps 1/16
  resolution (its patch merging has stride 1) and a SAM-style neck replaces the classifier.
- SAM 2 / 2.1: timm's ``HieraDet`` trunk (the same network as SAM 2's ``Hiera``) and SAM 2's FPN neck
  (:class:`HieraFpnEncoder`); the 1/32 level only feeds the 1/16 level's top-down path.

Each encoder's parameter names are what the publishers' files use after the renames in
:mod:`iseg_core.models.sam.checkpoint`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.models.hieradet_sam2 import HieraDet
from timm.models.tiny_vit import TinyVit
from timm.models.vision_transformer_sam import VisionTransformerSAM
from timm.layers import resample_abs_pos_embed_nhwc
from torch import nn

from .layers import LayerNorm2d


def sam_neck(in_dim: int, out_dim: int = 256) -> nn.Sequential:
    """SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d; no biases), keys ``0``..``3``."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


def vit_with_early_features(vit: VisionTransformerSAM, x: torch.Tensor, early_block: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """timm's ``VisionTransformerSAM.forward_features``, also returning block ``early_block``'s output
    ``(B, h, w, C)`` (HQ-SAM fuses the first global-attention block's output into its HQ features)."""
    x = vit.patch_embed(x)
    if vit.pos_embed is not None:
        x = x + resample_abs_pos_embed_nhwc(vit.pos_embed, x.shape[1:3])
    x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
    early = None
    for i, block in enumerate(vit.blocks):
        x = block(x)
        if i == early_block:
            early = x
    return vit.neck(x.permute(0, 3, 1, 2)), early


class TinyVitSam(TinyVit):
    """MobileSAM's TinyViT image encoder: ``(B, 3, 1024, 1024)`` -> ``(B, 256, 64, 64)``.

    timm's TinyViT halves the resolution at every stage; MobileSAM's last patch merging keeps it (stride 1),
    so the output is at 1/16 like SAM's ViT. The classifier head is replaced by SAM's neck."""

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
                 window_sizes: Sequence[int], out_dim: int = 256):
        super().__init__(embed_dims=tuple(embed_dims), depths=tuple(depths), num_heads=tuple(num_heads),
                         window_sizes=tuple(window_sizes), drop_path_rate=0.0, num_classes=0)
        self.head = nn.Identity()  # the ImageNet head: unused (MobileSAM's files carry one; it is dropped)
        self.stages[-1].downsample.conv2.conv.stride = (1, 1)
        self.neck = sam_neck(embed_dims[-1], out_dim)

    def train(self, mode: bool = True):
        """BatchNorm statistics stay frozen: fine-tuning runs small batches (and decoder-mode training runs the
        encoder only to cache its output), which must not move the distilled statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.patch_embed(x)))


class FpnNeck(nn.Module):
    """SAM 2's neck: a 1x1 lateral conv per trunk level (``convs.i.conv``, coarsest level first) and a nearest
    2x top-down path into ``top_down_levels``. The image path asks for levels one at a time (:meth:`top_down`,
    :meth:`lateral`): what SAM 2 computes for its video memory is never made."""

    def __init__(self, channels: Sequence[int], dim: int = 256, top_down_levels: Sequence[int] = (2, 3)):
        super().__init__()
        self.convs = nn.ModuleList()
        for c in reversed(channels):
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(c, dim, kernel_size=1))
            self.convs.append(lateral)
        self.top_down_levels = tuple(top_down_levels)

    def lateral(self, i: int, x: torch.Tensor, then: Optional[nn.Conv2d] = None) -> torch.Tensor:
        """Level ``i``'s lateral conv, followed by the 1x1 conv ``then`` when given: both are linear per pixel,
        so they run as one conv with the product of their weights (exact; SAM 2's image path reads the two
        finest levels only through such a conv, which makes them 4-8x cheaper)."""
        conv = self.convs[len(self.convs) - 1 - i].conv
        if then is None:
            return conv(x)
        # the encoder may run in bfloat16 while the decoder's conv stays float32: fold in the encoder's dtype
        w2 = then.weight.to(x.device, conv.weight.dtype).flatten(1)  # (out, dim)
        weight = (w2 @ conv.weight.flatten(1)).view(w2.shape[0], -1, 1, 1)
        bias = w2 @ conv.bias + then.bias.to(x.device, conv.bias.dtype)
        return F.conv2d(x, weight, bias)

    def top_down(self, levels: List[torch.Tensor], i: int) -> torch.Tensor:
        """FPN level ``i`` (the coarser levels it needs are computed on the way; their top-down sums are SAM 2's)."""
        prev = None
        for j in range(len(levels) - 1, i - 1, -1):
            x = self.lateral(j, levels[j])
            if j in self.top_down_levels and prev is not None:
                x = x + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            prev = x
        return prev


class HieraFpnEncoder(nn.Module):
    """SAM 2's image encoder: Hiera trunk + FPN neck. ``(B, 3, 1024, 1024)`` -> the three finest FPN levels
    ``[(B, 256, 256, 256), (B, 256, 128, 128), (B, 256, 64, 64)]`` (SAM 2's ``scalp=1`` drops the 1/32 one)."""

    def __init__(self, embed_dim: int, num_heads: int, stages: Sequence[int], global_att_blocks: Sequence[int],
                 window_spec: Sequence[int], global_pos_size: Tuple[int, int], dim: int = 256):
        super().__init__()
        self.trunk = HieraDet(embed_dim=embed_dim, num_heads=num_heads, stages=tuple(stages),
                              global_att_blocks=tuple(global_att_blocks), window_spec=tuple(window_spec),
                              global_pos_size=tuple(global_pos_size), num_classes=0)
        self.trunk.head = nn.Identity()  # classifier and final norm: not part of SAM 2
        channels = [embed_dim * 2 ** i for i in range(len(stages))]
        self.neck = FpnNeck(channels, dim)

    def forward(self, x: torch.Tensor, conv_s0: Optional[nn.Conv2d] = None,
                conv_s1: Optional[nn.Conv2d] = None) -> List[torch.Tensor]:
        """Levels 0, 1, 2. SAM 2's image path reads levels 0 and 1 only through its decoder's ``conv_s0`` /
        ``conv_s1``: given, they are folded into the lateral convs (:meth:`FpnNeck.lateral`)."""
        levels = self.trunk.forward_intermediates(x, intermediates_only=True)
        return [self.neck.lateral(0, levels[0], then=conv_s0), self.neck.lateral(1, levels[1], then=conv_s1),
                self.neck.top_down(levels, 2)]
