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

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...prompts import Click, Contour, Scribble
from .maps import unit_pixels
from .model import ClickMapSegmenter, EmptyOutline, points_tensor

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
    drop_outside: bool = False  # MST's ZoomIn: clicks that fall outside the crop are not shown to the network

    def describe(self) -> str:
        size = (f"squashed to {self.target_size}x{self.target_size}" if self.square
                else f"resized to long side {self.target_size}")
        start = ("from click 1, the whole image as the first crop" if self.skip_clicks < 0
                 else f"from click {self.skip_clicks + 1}")
        dropped = "; clicks outside the crop dropped" if self.drop_outside else ""
        return (f"image at native resolution (no long-side limit, as RITM's evaluation); RITM ZoomIn ({start}, "
                f"x{self.expansion:g}, min {self.min_crop} px, crop and previous probabilities {size}{dropped})")

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


def _put_back(probs: torch.Tensor, box: Box4, like: torch.Tensor, paste: bool = True) -> torch.Tensor:
    """A crop's probabilities resized to the box (bilinear, corners aligned) and pasted into a zero map shaped
    ``like`` (``paste=False``: only resized, as RITM leaves its very first prediction)."""
    r0, r1, c0, c1 = box
    probs = F.interpolate(probs, size=(r1 - r0 + 1, c1 - c0 + 1), mode="bilinear", align_corners=True)
    if not paste:
        return probs
    full = torch.zeros_like(like)
    full[:, :, r0:r1 + 1, c0:c1 + 1] = probs
    return full


class _Session:
    """What the authors' inference loops share: the image, the full-size probabilities of the last prediction
    (fed back as the previous mask), the current crop, and flip averaging."""

    def __init__(self, model: ClickMapSegmenter, zoom, flip: bool):
        """``flip``: also run the horizontally mirrored input in the same batch and average the two logit maps."""
        self.model, self.zoom, self.flip = model, zoom, flip
        self.image: Optional[torch.Tensor] = None

    def _start(self, image: np.ndarray) -> None:
        self.image = unit_pixels(image, self.model.device)
        self.probs = torch.zeros_like(self.image[:, :1])  # the previous prediction, full size
        self.box: Optional[Box4] = None
        self.last: Optional[np.ndarray] = None  # RITM's "_prev_probs": None until the first prediction

    def _logits(self, both: torch.Tensor, views: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> torch.Tensor:
        """The network on image + previous probabilities ``both``; ``views``: (points, drawn maps) of the view
        as it is and, with ``flip``, of the mirrored one, whose logits are mirrored back and averaged."""
        if self.flip:
            both = torch.cat([both, both.flip(3)])
        points = torch.cat([p for p, _ in views])
        drawn = torch.cat([d for _, d in views]) if views[0][1] is not None else None
        logits, _ = self.model.network(both[:, :3], both[:, 3:], points, drawn=drawn)
        return 0.5 * (logits[:1] + logits[1:].flip(3)) if self.flip else logits


class RitmSession(_Session):
    """One object at a time, RITM's way: ``set_image``, then ``predict(clicks)`` with the growing click list."""

    first_interactions = ("click",)

    def __init__(self, model: ClickMapSegmenter, zoom: Optional[RitmZoomIn] = RitmZoomIn(), flip: bool = False):
        """``flip``: RITM's evaluation default."""
        super().__init__(model, zoom, flip)

    def set_image(self, image: np.ndarray) -> None:
        self._start(image)

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
            if self.zoom.drop_outside:
                rows_cols = [(r, c, p) for r, c, p in rows_cols if 0 <= r < size[0] and 0 <= c < size[1]]
        views = [(points_tensor(rows_cols, self.model.device), None)]
        if self.flip:
            width = both.shape[3]
            views.append((points_tensor([(r, width - c - 1, p) for r, c, p in rows_cols], self.model.device), None))
        probs = torch.sigmoid(self._logits(both, views))
        if self.box is not None:  # RITM pastes whenever a crop exists, even if this click ran uncropped
            probs = _put_back(probs, self.box, self.probs, paste=self.last is not None)
        self.last = probs[0, 0].cpu().numpy()
        self.probs = probs
        return self.last


@dataclass(frozen=True)
class SaicZoomIn(RitmZoomIn):
    """SAIC-IS's evaluation transforms: its ZoomIn (RITM's box rule over the prediction and the positive
    interactions, from the first contour or stroke and from the second click), the crop resized to long side
    ``target_size`` (600 on DAVIS), then squashed to ``fixed_size`` x ``fixed_size`` (ResizeToFixedSize)."""

    fixed_size: int = 448
    skip_outlines: int = -1  # SAIC-IS's skip_interactions: point 1 (``skip_clicks``), contour -1, stroke -1
    max_side: int = 1000  # SAIC-IS's evaluation first limits the image's long side (cv2 bilinear)

    def describe(self) -> str:
        return (f"image limited to long side {self.max_side} (cv2 bilinear; masks back by nearest); SAIC-IS "
                f"ZoomIn (from click {self.skip_clicks + 1}, from the first "
                f"contour or stroke; x{self.expansion:g}, min {self.min_crop} px; crop resized to long side "
                f"{self.target_size}) then squashed to {self.fixed_size}x{self.fixed_size}")


def _saic_roi(mask: np.ndarray, prompts: Sequence, zoom: SaicZoomIn) -> Box4:
    """SAIC-IS's object box: the mask plus positive clicks, positive contour vertices (rounded) and a band over
    a positive stroke's extent (its longer axis), grown and clamped as RITM's."""
    mask = mask.copy()
    for p in prompts:
        if isinstance(p, Click) and p.positive:
            mask[int(p.y), int(p.x)] = True
        elif isinstance(p, Contour) and p.positive:
            yx = (np.asarray(p.points, np.float64)[:, ::-1] + 0.5).astype(np.int32)
            mask[yx[:, 0], yx[:, 1]] = True
        elif isinstance(p, Scribble) and p.positive:
            yx = (np.asarray(p.points, np.float64)[:, ::-1] + 0.5).astype(np.int32)
            lo, hi = yx.min(0), yx.max(0)
            if hi[0] - lo[0] > hi[1] - lo[1]:
                mask[lo[0]:hi[0]] = True
            else:
                mask[:, lo[1]:hi[1]] = True
    if not mask.any():
        mask[0, 0] = True
    return _grown_box(mask, [], zoom)


def _saic_inside(box: Box4, prompts: Sequence) -> bool:
    for p in prompts:
        if isinstance(p, Click):
            pts = [(p.x, p.y)] if p.positive else []
        else:
            pts = p.points
        for x, y in pts:
            if not (box[0] <= y < box[1] and box[2] <= x < box[3]):
                return False
    return True


class SaicSession(_Session):
    """SAIC-IS's inference loop for its multi-input models: ``predict(prompts)`` with the growing prompt list
    (clicks kept, a contour or stroke shown at its own step), the full-size probabilities fed back."""

    first_interactions = ("click", "contour", "scribble")

    def __init__(self, model: ClickMapSegmenter, zoom: SaicZoomIn = SaicZoomIn(), flip: bool = True):
        """``flip``: SAIC-IS's predictor always runs it (its transforms build the batch lists only through the
        flip)."""
        super().__init__(model, zoom, flip)

    def set_image(self, image: np.ndarray) -> None:
        self.original = image.shape[:2]
        h, w = self.original
        side = self.zoom.max_side
        if max(h, w) > side:  # SAIC-IS's limit_longest_size (its own rounding)
            size = (side, int(w / h * side + 0.5)) if h > w else (int(h / w * side + 0.5), side)
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        self._start(image)
        self.steps = 0

    def _limited(self, prompts: Sequence) -> List:
        """Prompts in the pixels of the limited image (SAIC-IS simulates them there)."""
        h, w = self.image.shape[-2:]
        if (h, w) == tuple(self.original):
            return list(prompts)
        sy, sx = h / self.original[0], w / self.original[1]
        return [Click(p.x * sx, p.y * sy, p.positive) if isinstance(p, Click) else
                Contour([(x * sx, y * sy) for x, y in p.points], p.positive) if isinstance(p, Contour) else
                p if isinstance(p, EmptyOutline) else
                Scribble([(x * sx, y * sy) for x, y in p.points], p.positive) for p in prompts]

    def _shown(self, prompts: Sequence) -> List:
        """What one SAIC-IS step holds: every click, plus the latest prompt when it is a contour or stroke."""
        return [p for p in prompts if isinstance(p, Click)] + ([prompts[-1]] if not isinstance(prompts[-1], Click) else [])

    @torch.inference_mode()
    def predict(self, prompts: Sequence) -> np.ndarray:
        """Probabilities (H, W) at the image's size after ``prompts`` (all of them, in order)."""
        probs = self._predict(self._limited(prompts))
        if probs.shape != tuple(self.original):  # the mask goes back by nearest, as SAIC-IS scores it
            probs = cv2.resize(probs, (self.original[1], self.original[0]), interpolation=cv2.INTER_NEAREST)
        return probs

    def _predict(self, prompts: Sequence) -> np.ndarray:
        z, model = self.zoom, self.model
        self.steps += 1
        shown = self._shown(prompts)
        both = torch.cat([self.image, self.probs], 1)
        size = tuple(both.shape[-2:])
        skip = z.skip_clicks if isinstance(prompts[-1], Click) else z.skip_outlines
        to_crop = None
        if self.steps > skip:
            mask = self.last > z.prob_thresh if self.last is not None else np.zeros(size, bool)
            current = _saic_roi(mask, shown, z)
            if self.box is None or not _saic_inside(self.box, shown) or _box_iou(current, self.box) < z.recompute_iou:
                self.box = current
            r0, r1, c0, c1 = self.box
            h, w = r1 - r0 + 1, c1 - c0 + 1
            size = z.crop_size(h, w)
            both = F.interpolate(both[:, :, r0:r1 + 1, c0:c1 + 1], size=size, mode="bilinear", align_corners=True)
            to_crop = (r0, c0, h, w)
        f = z.fixed_size
        frame = (f, f)
        both = F.interpolate(both, size=frame, mode="bilinear", align_corners=True)

        def clicks_to_frame(rows, cols):  # ZoomIn's then ResizeToFixedSize's mapping of clicks
            if to_crop is not None:
                r0, c0, h, w = to_crop
                rows, cols = size[0] * (rows - r0) / h, size[1] * (cols - c0) / w
            return f * rows / size[0], f * cols / size[1]

        def outline_to_frame(rows, cols):  # the same for contour and stroke vertices (their association)
            if to_crop is not None:
                r0, c0, h, w = to_crop
                rows, cols = size[0] / h * (rows - r0), size[1] / w * (cols - c0)
            return f * rows / size[0], f * cols / size[1]

        mappings = [(clicks_to_frame, outline_to_frame)]
        if self.flip:  # the mirrored view: columns c -> width - c - 1 after the other transforms
            def mirrored(to_frame):
                return lambda rows, cols: (lambda r, c: (r, f - c - 1))(*to_frame(rows, cols))

            mappings.append((mirrored(clicks_to_frame), mirrored(outline_to_frame)))
        views = [(points_tensor(model.drawn_clicks(prompts, cl), model.device),
                  torch.from_numpy(model.drawn_maps(prompts, ol, frame))[None].to(model.device)) for cl, ol in mappings]
        probs = F.interpolate(torch.sigmoid(self._logits(both, views)), size=size, mode="bilinear", align_corners=True)
        if self.box is not None:
            probs = _put_back(probs, self.box, self.probs)
        self.last = probs[0, 0].cpu().numpy()
        self.probs = probs
        return self.last
