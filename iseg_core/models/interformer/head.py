"""InterFormer's decode heads: mmsegmentation's UPerHead (and its FCN auxiliary head, a training loss only).

UPerHead: lateral 1x1 convs on the stride-4, 8 and 16 maps, a pyramid pooling module (1, 2, 3, 6 bins) and a
3x3 bottleneck on the stride-32 map, a top-down pathway (bilinear, corners not aligned), a 3x3 conv per level,
all levels resized to stride 4 and concatenated, a 3x3 fusion conv, then a 1x1 classifier into background and
foreground. Every conv carries BatchNorm and ReLU (mmcv's ConvModule: ``conv`` without bias, ``bn``).

The two classes are only ever compared: the head returns the foreground-minus-background logit from one 1x1
conv with the difference of the two classifier rows (``softmax(z)[1] > 0.5`` iff ``z1 - z0 > 0``).

BatchNorm always uses its stored statistics (fine-tuning runs on a few images a step; its affine parameters
still train) and is folded into the conv it follows.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule with BatchNorm and ReLU, named as the checkpoints name it (``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def folded(self):
        """(weight, bias) of the conv with the BatchNorm (its running statistics) folded in."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.folded()
        return F.relu(F.conv2d(x, w, b, padding=self.conv.padding))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def foreground_logit(conv_seg: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, h, w)`` foreground-minus-background logit of a two-class 1x1 classifier."""
    w, b = conv_seg.weight, conv_seg.bias
    return F.conv2d(x, w[1:] - w[:1], b[1:] - b[:1])


class UPerHead(nn.Module):
    def __init__(self, in_channels: Sequence[int] = (32, 64, 128, 256), channels: int = 64,
                 pool_scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_channels[-1], channels, 1)) for s in pool_scales)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, 2, 1)

    def levels(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The four per-level outputs before the fusion conv (each at its own stride)."""
        top = inputs[-1]
        pooled = [top] + [_resize(m(top), top.shape[-2:]) for m in self.psp_modules]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)] + [self.bottleneck(torch.cat(pooled, 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]

    def fused(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fusion conv (BN folded, ReLU) over ``[f0, up(f1), up(f2), up(f3)]`` at stride 4. (Moving the conv's
        channel mixing before the upsampling, one 1x1 map per kernel tap, is exact too, but it upsamples and adds
        nine times the channels: 4x slower on a CPU at a 1024 px frame, bench/bench_models.py.)"""
        weight, bias = self.fpn_bottleneck.folded()
        size = levels[0].shape[-2:]
        x = torch.cat([levels[0]] + [_resize(level, size) for level in levels[1:]], 1)
        return F.relu(F.conv2d(x, weight, bias, padding=1))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The four neck outputs -> ``(B, 1, H/4, W/4)`` foreground logit (foreground minus background)."""
        return foreground_logit(self.conv_seg, self.dropout(self.fused(self.levels(inputs))))


class FCNHead(nn.Module):
    """The auxiliary head InterFormer trains on the stride-16 output (one 3x3 conv, a classifier)."""

    def __init__(self, in_channels: int = 128, channels: int = 64):
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(in_channels, channels, 3))
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return foreground_logit(self.conv_seg, self.dropout(self.convs(x)))
