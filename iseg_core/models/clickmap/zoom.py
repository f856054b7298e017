"""RITM's inference loop with its ZoomIn, for the click-map models: how their published numbers were made.

State per object: the full-size probability map of the last prediction (fed back as the previous-mask
channel) and the current crop. From click ``skip_clicks + 1`` on, the crop is the box of (prediction > 0.5,
plus the positive clicks' pixels), grown ``expansion`` times and to at least ``min_crop`` px, clamped to the
image; it is kept until a positive click falls outside it or the new box's IoU with it drops below
``recompute_iou``. The image and the previous map are cropped together and resized (bilinear, corners
aligned) so the crop's long side is ``target_size`` (400 px; RITM uses 600 on DAVIS), clicks are mapped
into it the way RITM maps them, and the crop's probabilities are resized back and pasted into a zero map.

With ``flip`` the mirrored view runs in the same batch and the two logit maps are averaged, as RITM evaluates.
SimpleClick evaluates its plain-ViT models the same way with ``skip_clicks=-1`` (the first click sees the
whole image as its crop) and crops squashed to a square (448 px, 672 on DAVIS).

Differences from iseg's generic ZoomIn (:mod:`iseg_core.geometry`, used for other models): the crop is
resized to a fixed long side, and the previous prediction is carried into a new crop instead of dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ...prompts import Click
from .model import ClickMapSegmenter, points_tensor

Box4 = Tuple[int, int, int, int]  # rmin, rmax, cmin, cmax (inclusive), RITM's order


@dataclass(frozen=True)
class RitmZoomIn:
    target_size: int = 400
    skip_clicks: int = 1
    expansion: float = 1.4
    min_crop: int = 200
    recompute_iou: float = 0.5
    prob_thresh: float = 0.5
    square: bool = False  # SimpleClick's setting: crops squashed to target_size x target_size

    def describe(self) -> str:
        size = (f"squashed to {self.target_size}x{self.target_size}" if self.square
                else f"resized to long side {self.target_size}")
        start = ("from click 1, the whole image as the first crop" if self.skip_clicks < 0
                 else f"from click {self.skip_clicks + 1}")
        return (f"image at native resolution (no long-side limit, as RITM's evaluation); RITM ZoomIn ({start}, "
                f"x{self.expansion:g}, min {self.min_crop} px, crop and previous probabilities {size})")

    def crop_size(self, height: int, width: int) -> Tuple[int, int]:
        if self.square:
            return self.target_size, self.target_size
        scale = self.target_size / max(height, width)
        return int(round(height * scale)), int(round(width * scale))


def _grown_box(mask: np.ndarray, clicks: Sequence[Click], zoom: RitmZoomIn) -> Box4:
    mask = mask.copy()
    for c in clicks:
        if c.positive:
            mask[int(c.y), int(c.x)] = True
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    rmin, rmax, cmin, cmax = rows[0], rows[-1], cols[0], cols[-1]
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(zoom.expansion * (rmax - rmin + 1), zoom.min_crop)
    width = max(zoom.expansion * (cmax - cmin + 1), zoom.min_crop)
    h, w = mask.shape
    return (max(0, int(round(rc - 0.5 * height))), min(h - 1, int(round(rc + 0.5 * height))),
            max(0, int(round(cc - 0.5 * width))), min(w - 1, int(round(cc + 0.5 * width))))


def _span_iou(a0, a1, b0, b1) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0) + 1)
    return inter / max(1e-6, max(a1, b1) - min(a0, b0) + 1)


def _box_iou(a: Box4, b: Box4) -> float:
    return _span_iou(a[0], a[1], b[0], b[1]) * _span_iou(a[2], a[3], b[2], b[3])


def _holds_clicks(box: Box4, clicks: Sequence[Click]) -> bool:
    return all(box[0] <= c.y < box[1] and box[2] <= c.x < box[3] for c in clicks if c.positive)


class RitmSession:
    """One object at a time, RITM's way: ``set_image``, then ``predict(clicks)`` with the growing click list."""

    def __init__(self, model: ClickMapSegmenter, zoom: Optional[RitmZoomIn] = RitmZoomIn(), flip: bool = False):
        """``flip``: also run the horizontally mirrored input in the same batch and average the two logit maps
        (RITM's evaluation default)."""
        self.model, self.zoom, self.flip = model, zoom, flip
        self.image: Optional[torch.Tensor] = None

    def set_image(self, image: np.ndarray) -> None:
        self.image = torch.tensor(image, device=self.model.device).permute(2, 0, 1)[None].float() / 255
        self.probs = torch.zeros_like(self.image[:, :1])  # the previous prediction, full size
        self.box: Optional[Box4] = None
        self.last: Optional[np.ndarray] = None  # RITM's "_prev_probs": None until the first prediction

    def _crop(self, clicks: Sequence[Click]) -> Optional[Box4]:
        z = self.zoom
        if z is None or len(clicks) <= z.skip_clicks:
            return None
        current = None
        if self.last is not None and (self.last > z.prob_thresh).any():
            current = _grown_box(self.last > z.prob_thresh, clicks, z)
        if current is None:
            if z.skip_clicks >= 0:
                return None
            current = (0, self.image.shape[2] - 1, 0, self.image.shape[3] - 1)
        if self.box is None or not _holds_clicks(self.box, clicks) or _box_iou(current, self.box) < z.recompute_iou:
            self.box = current
        return self.box

    @torch.inference_mode()
    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """Probabilities (H, W) of the object after ``clicks`` (all of them, in order)."""
        both = torch.cat([self.image, self.probs], 1)
        box = self._crop(clicks)
        rows_cols: List[Tuple[float, float, bool]] = [(c.y, c.x, c.positive) for c in clicks]
        if box is not None:
            r0, r1, c0, c1 = box
            h, w = r1 - r0 + 1, c1 - c0 + 1
            size = self.zoom.crop_size(h, w)
            both = F.interpolate(both[:, :, r0:r1 + 1, c0:c1 + 1], size=size, mode="bilinear", align_corners=True)
            rows_cols = [(size[0] * (r - r0) / h, size[1] * (c - c0) / w, p) for r, c, p in rows_cols]
        points = points_tensor(rows_cols, self.model.device)
        if self.flip:  # the mirrored view in the same batch; its logits are mirrored back and averaged
            width = both.shape[3]
            both = torch.cat([both, both.flip(3)])
            points = torch.cat([points, points_tensor([(r, width - c - 1, p) for r, c, p in rows_cols], self.model.device)])
        logits, _ = self.model.network(both[:, :3], both[:, 3:], points)
        if self.flip:
            logits = 0.5 * (logits[:1] + logits[1:].flip(3))
        probs = torch.sigmoid(logits)
        if self.box is not None:  # RITM pastes whenever a crop exists, even if this click ran uncropped
            r0, r1, c0, c1 = self.box
            probs = F.interpolate(probs, size=(r1 - r0 + 1, c1 - c0 + 1), mode="bilinear", align_corners=True)
            if self.last is not None:
                full = torch.zeros_like(self.probs)
                full[:, :, r0:r1 + 1, c0:c1 + 1] = probs
                probs = full
        self.last = probs[0, 0].cpu().numpy()
        self.probs = probs
        return self.last
