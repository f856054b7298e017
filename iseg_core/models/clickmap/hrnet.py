"""HRNetV2 with an OCR head, as RITM and SAIC-IS use it: four parallel branches at strides 4, 8, 16 and 32
that exchange information after every module, their outputs upsampled to stride 4 and concatenated, then an
object-contextual head (a coarse "aux" mask pools one object feature; every pixel attends to it).

Written for iseg; parameter names follow the published checkpoints (``feature_extractor.*`` in RITM's
``HRNetModel``) so their state dicts load as they are. Sizes: ``width`` 18 or 32 channels in the finest
branch (doubling per branch), ``small`` = HRNet18s (2 blocks per branch, fewer modules), ``ocr_width`` the
OCR key width (its mid width is twice that).

Click maps enter after the first stem convolution (``extra``, stride 2), so the whole network runs per
click: there is no image-only part to cache.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm_act(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    """conv (no bias) -> BN [-> ReLU], keyed ``0`` / ``1`` [/ ``2``]."""
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x)).relu_()  # in place, as the published code: less memory traffic
        out = self.bn2(self.conv2(out))
        return (out + (self.downsample(x) if self.downsample is not None else x)).relu_()


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out)).relu_()
        out = self.bn3(self.conv3(out))
        return (out + (self.downsample(x) if self.downsample is not None else x)).relu_()


def _blocks(block, cin: int, planes: int, count: int) -> nn.Sequential:
    cout = planes * block.expansion
    down = _conv_bn(cin, cout, 1, act=False) if cin != cout else None
    return nn.Sequential(block(cin, planes, down), *[block(cout, planes) for _ in range(count - 1)])


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class HRModule(nn.Module):
    """Parallel branches of basic blocks, then every branch receives the sum of all branches resampled to its
    stride (1x1 conv + upsampling from coarser ones, strided 3x3 convs from finer ones)."""

    def __init__(self, channels: Sequence[int], blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(_blocks(BasicBlock, c, c, blocks) for c in channels)
        fuse = []
        for i in range(n):
            row: List[Optional[nn.Module]] = []
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, act=False))
                elif j == i:
                    row.append(None)
                else:  # i - j strided convs; the last one maps to branch i's width, without ReLU
                    steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, act=False))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = None  # summed in branch order, as the published code does (same rounding)
            for j, layer in enumerate(row):
                term = xs[j] if j == i else _upsample(layer(xs[j]), xs[i]) if j > i else layer(xs[j])
                y = term if y is None else y + term
            out.append(y.relu_())
        return out


class ObjectAttention(nn.Module):
    """Every pixel attends to the object-region features (OCR's object context)."""

    def __init__(self, channels: int, keys: int):
        super().__init__()
        self.keys = keys

        def proj(cin, cout, depth):
            layers: List[nn.Module] = []
            for k in range(depth):
                layers += [nn.Conv2d(cin if k == 0 else cout, cout, 1, bias=False), _norm_act(cout)]
            return nn.Sequential(*layers)

        self.f_pixel = proj(channels, keys, 2)
        self.f_object = proj(channels, keys, 2)
        self.f_down = proj(channels, keys, 1)
        self.f_up = proj(keys, channels, 1)

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.f_pixel(x).flatten(2).transpose(1, 2)  # (B, HW, K)
        key = self.f_object(regions).flatten(2)  # (B, K, R)
        value = self.f_down(regions).flatten(2).transpose(1, 2)  # (B, R, K)
        attn = torch.softmax(query @ key * self.keys ** -0.5, dim=-1)
        context = (attn @ value).transpose(1, 2).reshape(b, self.keys, h, w)
        return self.f_up(context)


class OCRHead(nn.Module):
    def __init__(self, channels: int, keys: int):
        super().__init__()
        self.object_context_block = ObjectAttention(channels, keys)
        self.conv_bn_dropout = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), _norm_act(channels),
                                             nn.Dropout2d(0.05))

    def forward(self, feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        return self.conv_bn_dropout(torch.cat([self.object_context_block(feats, regions), feats], 1))


class HRNetOCR(nn.Module):
    """Image (normalised, stride 1) + extra maps (stride 2) -> (mask logits, aux logits) at stride 4."""

    def __init__(self, width: int, ocr_width: int, small: bool = False):
        super().__init__()
        if ocr_width <= 0:
            raise ValueError("only HRNet with an OCR head (ocr_width > 0) is built: the published models have one")
        blocks = 2 if small else 4
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.layer1 = _blocks(Bottleneck, 64, 64, blocks)
        widths = [width * 2 ** k for k in range(4)]
        prev = [64 * Bottleneck.expansion]
        modules = {2: 1, 3: 3 if small else 4, 4: 2 if small else 3}
        for stage in (2, 3, 4):
            cur = widths[:stage]
            setattr(self, f"transition{stage - 1}", self._transition(prev, cur))
            setattr(self, f"stage{stage}", nn.Sequential(*[HRModule(cur, blocks) for _ in range(modules[stage])]))
            prev = cur
        total = sum(widths)
        mid = 2 * ocr_width
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(total, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.ocr_distri_head = OCRHead(mid, ocr_width)
        self.cls_head = nn.Conv2d(mid, 1, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(total, total, 1), nn.BatchNorm2d(total), nn.ReLU(inplace=True),
                                      nn.Conv2d(total, 1, 1))

    @staticmethod
    def _transition(prev: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        layers: List[Optional[nn.Module]] = []
        for i, c in enumerate(cur):
            if i < len(prev):
                layers.append(_conv_bn(prev[i], c, 3) if prev[i] != c else None)
            else:  # a new, coarser branch from the coarsest existing one
                steps = [_conv_bn(prev[-1], prev[-1], 3, 2) for _ in range(i - len(prev))]
                layers.append(nn.Sequential(*steps, _conv_bn(prev[-1], c, 3, 2)))
        return nn.ModuleList(layers)

    def forward(self, image: torch.Tensor, extra: Optional[torch.Tensor] = None):
        x = self.bn1(self.conv1(image)).relu_()
        if extra is not None:
            x = x + extra
        x = self.bn2(self.conv2(x)).relu_()
        xs = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            xs = [(t(xs[min(i, len(xs) - 1)]) if t is not None else xs[i]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{stage}")(xs)
        feats = torch.cat([xs[0]] + [_upsample(x, xs[0]) for x in xs[1:]], 1)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        # one object region: the aux mask's softmax over all pixels pools one feature vector
        probs = torch.softmax(aux.flatten(2), dim=2)  # (B, 1, HW)
        region = (probs @ feats.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)  # (B, C, 1, 1)
        feats = self.ocr_distri_head(feats, region)
        return self.cls_head(feats), aux
