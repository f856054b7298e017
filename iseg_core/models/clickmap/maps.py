"""What the click-map models share: ImageNet statistics, click disks, the padded point tensor of RITM's
predictor, and the params of a serialized publisher config."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float) -> torch.Tensor:
    """``points`` ``(B, 2N, 3)`` rows of (row, col, index): N positive then N negative, (-1, -1, -1) padding ->
    ``(B, 2, H, W)`` float maps, 1 inside a disk of ``radius`` around any click of that sign (squared distance
    <= radius^2 in float32, as RITM's DistMaps). Each disk is drawn in its own small window."""
    b, n2, _ = points.shape
    out = torch.zeros((b, 2, height, width), device=points.device)
    pts = points.detach().float().cpu()
    r2 = float(radius) ** 2
    for i in range(b):
        for j in range(n2):
            py, px = pts[i, j, 0], pts[i, j, 1]
            if max(float(py), float(px)) < 0:
                continue
            r0, r1 = max(0, math.floor(py - radius)), min(height, math.ceil(py + radius) + 1)
            c0, c1 = max(0, math.floor(px - radius)), min(width, math.ceil(px + radius) + 1)
            if r0 >= r1 or c0 >= c1:
                continue
            rows = torch.arange(r0, r1, dtype=torch.float32).view(-1, 1)
            cols = torch.arange(c0, c1, dtype=torch.float32).view(1, -1)
            inside = ((rows - py) ** 2 + (cols - px) ** 2) <= r2
            window = out[i, j * 2 // n2, r0:r1, c0:c1]
            window.copy_(torch.maximum(window, inside.to(out.device, torch.float32)))
    return out


def points_tensor(clicks: Sequence[Tuple[float, float, bool]], device) -> torch.Tensor:
    """(row, col, positive) in click order -> ``(1, 2N, 3)`` rows of (row, col, order), positives first, each
    side padded with (-1, -1, -1) to N = the larger count (at least 1), as RITM's predictor builds them."""
    return batch_points([clicks], device)


def batch_points(batch: Sequence[Sequence[Tuple[float, float, bool]]], device) -> torch.Tensor:
    """:func:`points_tensor` for several click lists: ``(B, 2N, 3)``, N the largest count of one sign."""
    sides = [([(r, c, float(k)) for k, (r, c, p) in enumerate(clicks) if p],
              [(r, c, float(k)) for k, (r, c, p) in enumerate(clicks) if not p]) for clicks in batch]
    n = max([1] + [len(side) for pair in sides for side in pair])
    pad = [(-1.0, -1.0, -1.0)]
    rows = [pos + pad * (n - len(pos)) + neg + pad * (n - len(neg)) for pos, neg in sides]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def config_params(published: dict) -> dict:
    """``{name: value}`` of a config serialized by the RITM-lineage ``@serialize`` decorator."""
    return {k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
            for k, v in (published.get("params") or {}).items()}


def unit_pixels(image: np.ndarray, device) -> torch.Tensor:
    """A ``uint8`` RGB image -> ``(1, 3, H, W)`` float32 in [0, 1] on ``device`` (the official ``ToTensor``)."""
    return torch.tensor(image, device=device).permute(2, 0, 1)[None].float() / 255


def fit_long_side(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """(h, w) unchanged up to ``max_side`` on the long side, else scaled down to it (rounded)."""
    long = max(height, width)
    if long <= max_side:
        return height, width
    scale = max_side / long
    return int(round(height * scale)), int(round(width * scale))
