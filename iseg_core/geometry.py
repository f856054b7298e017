"""Frames an image is seen in, and the maps between them: a downscaled display copy (the studio) and RITM's
ZoomIn crop around an object (the evaluation and the studio). Image pixels as in :mod:`iseg_core.prompts`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .prompts import Click, Point

Roi = Tuple[int, int, int, int]  # (x0, y0, x1, y1) in image pixels, x1 / y1 exclusive


@dataclass(frozen=True)
class DisplayFrame:
    """An image of ``image_size`` (H, W) shown as a copy of ``display_size`` (H, W). One scale per axis: the
    display copy's sides are rounded, so x and y scale by slightly different factors."""

    image_size: Tuple[int, int]
    display_size: Tuple[int, int]

    @classmethod
    def fit(cls, image_size: Tuple[int, int], long_side: int) -> "DisplayFrame":
        """The frame of a copy whose long side is at most ``long_side`` (never enlarged)."""
        h, w = image_size
        scale = min(1.0, long_side / max(h, w))
        return cls((h, w), (max(1, round(h * scale)), max(1, round(w * scale))))

    @property
    def identity(self) -> bool:
        return tuple(self.display_size) == tuple(self.image_size)

    @property
    def scale_xy(self) -> Tuple[float, float]:
        """(display / image) along x and along y."""
        return self.display_size[1] / self.image_size[1], self.display_size[0] / self.image_size[0]

    def to_image(self, x: float, y: float) -> Point:
        sx, sy = self.scale_xy
        return x / sx, y / sy

    def to_display(self, x: float, y: float) -> Point:
        sx, sy = self.scale_xy
        return x * sx, y * sy

    def roi_to_display(self, roi: Roi) -> Roi:
        """An image-pixel box as whole display pixels, at least one pixel wide and high."""
        sx, sy = self.scale_xy
        x0, y0, x1, y1 = roi
        dx0, dy0 = round(x0 * sx), round(y0 * sy)
        return dx0, dy0, max(dx0 + 1, round(x1 * sx)), max(dy0 + 1, round(y1 * sy))


@dataclass
class ZoomIn:
    """RITM's ZoomIn: from click ``skip_clicks + 1`` on, predict on a crop around the current object.

    ROI = box of (predicted mask U positive clicks), expanded ``expansion`` times, at least ``min_crop`` px,
    clamped to the image; recomputed when a positive click falls outside it or the new box overlaps the old
    one with IoU below ``recompute_iou``. The crop is encoded as an image of its own (models that resize
    their input see it at higher resolution). Unlike RITM, when the ROI moves the previous mask is not
    carried into the new crop (the model's low-res logits live in the old crop's frame).
    """

    skip_clicks: int = 1
    expansion: float = 1.4
    min_crop: int = 200
    recompute_iou: float = 0.5


def zoom_roi(mask: np.ndarray, clicks: Sequence[Click], zoom: ZoomIn) -> Roi:
    """RITM's ZoomIn crop around ``mask`` (image size) and the positive clicks."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    px = [c.x for c in clicks if c.positive] + (list(xs[[0, -1]]) + [xs.min(), xs.max()] if xs.size else [])
    py = [c.y for c in clicks if c.positive] + (list(ys[[0, -1]]) + [ys.min(), ys.max()] if ys.size else [])
    x0, x1, y0, y1 = min(px), max(px) + 1, min(py), max(py) + 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw = max((x1 - x0) * zoom.expansion, zoom.min_crop)
    bh = max((y1 - y0) * zoom.expansion, zoom.min_crop)
    x0, x1 = int(max(0, math.floor(cx - bw / 2))), int(min(w, math.ceil(cx + bw / 2)))
    y0, y1 = int(max(0, math.floor(cy - bh / 2))), int(min(h, math.ceil(cy + bh / 2)))
    return x0, y0, x1, y1


def grow_to_include(roi: Roi, points: Iterable[Point], image_size: Tuple[int, int]) -> Roi:
    """``roi`` grown so that every point lies on one of its pixels, clamped to the image (H, W)."""
    x0, y0, x1, y1 = roi
    for x, y in points:
        x0, y0 = min(x0, int(math.floor(x))), min(y0, int(math.floor(y)))
        x1, y1 = max(x1, int(math.ceil(x)) + 1), max(y1, int(math.ceil(y)) + 1)
    h, w = image_size
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def box_iou(a: Roi, b: Roi) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def inside(point: Point, roi: Optional[Roi]) -> bool:
    return roi is None or (roi[0] <= point[0] < roi[2] and roi[1] <= point[1] < roi[3])
