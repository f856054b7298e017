"""InterFormer's reference label map: every interaction and every prediction in one map of five states.

The map covers the padded frame (the network's input, pixels of the frame) with one value per pixel:

    0 definitely background   1 possibly background   2 unknown   3 possibly foreground   4 definitely foreground

It starts unknown. A click paints a disk of radius 5 px (Euclidean distance to the click's pixel <= 5) with the
definite state of its sign, over whatever was there. After each prediction the map is updated with a
hysteresis (:func:`update_by_prediction`): an unknown pixel becomes possibly foreground / background as
predicted; a possibly-X pixel predicted not-X goes back to unknown; definite pixels never change. So the map
remembers every click and, softly, the predictions so far: this is InterFormer's whole per-object state.

The network sees the map as a learned 32-vector per state at stride 4 (:func:`embed_at_stride4`), and
InterFormer-Tiny's ZoomIn takes its region of interest from it (:func:`zoom_roi`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

DEFINITELY_BACKGROUND, POSSIBLY_BACKGROUND, UNKNOWN, POSSIBLY_FOREGROUND, DEFINITELY_FOREGROUND = range(5)
CLICK_RADIUS = 5  # InterFormer's inner_radius (its outer_radius is 0: no "possibly" ring)

# new state by (old state) where the prediction is foreground / background (definite states stay)
_AFTER_FOREGROUND = np.array([0, 2, 3, 3, 4], np.uint8)
_AFTER_BACKGROUND = np.array([0, 1, 1, 2, 4], np.uint8)

FrameClick = Tuple[int, int, bool]  # (row, col, positive): a pixel of the frame


def new_map(shape: Tuple[int, int]) -> np.ndarray:
    return np.full(shape, UNKNOWN, np.uint8)


def paint_click(label: np.ndarray, click: FrameClick, radius: int = CLICK_RADIUS) -> None:
    """Paint the disk of ``click`` into ``label`` in place (pixels whose distance to the click's pixel is at most
    ``radius``; the click itself must lie in the map)."""
    row, col, positive = click
    h, w = label.shape
    r0, r1 = max(0, row - radius), min(h, row + radius + 1)
    c0, c1 = max(0, col - radius), min(w, col + radius + 1)
    dy = (np.arange(r0, r1) - row)[:, None]
    dx = (np.arange(c0, c1) - col)[None, :]
    window = label[r0:r1, c0:c1]
    window[dy * dy + dx * dx <= radius * radius] = DEFINITELY_FOREGROUND if positive else DEFINITELY_BACKGROUND


def update_by_prediction(label: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The map after a prediction (``foreground``: bool, the map's shape), InterFormer's hysteresis."""
    return np.where(foreground, _AFTER_FOREGROUND[label], _AFTER_BACKGROUND[label])


def embed_at_stride4(label: np.ndarray, table: torch.Tensor) -> torch.Tensor:
    """``(1, C, H/4, W/4)``: the per-state embeddings ``table`` (5, C) of ``label`` (H, W), bilinearly
    resized to stride 4 as InterFormer does it (embed every pixel, then resize, corners not aligned).

    A bilinear resize to exactly a quarter reads, for output (i, j), the four pixels at rows 4i+1, 4i+2 and
    columns 4j+1, 4j+2 with weight 1/4 each; so only those four pixels' embeddings are looked up (the same
    numbers, without embedding the whole frame)."""
    h, w = label.shape
    if h % 4 or w % 4:  # never for a frame padded to 32; the general form
        onehot = F.one_hot(torch.from_numpy(label.astype(np.int64)), table.shape[0]).to(table)
        full = (onehot @ table).permute(2, 0, 1)[None]
        return F.interpolate(full, size=(h // 4, w // 4), mode="bilinear", align_corners=False)
    lab = torch.from_numpy(label).to(table.device)

    def at(r, c):
        return table[lab[r::4, c::4].long()]  # (h/4, w/4, C)

    out = 0.5 * (0.5 * at(1, 1) + 0.5 * at(1, 2)) + 0.5 * (0.5 * at(2, 1) + 0.5 * at(2, 2))
    return out.permute(2, 0, 1)[None].contiguous()


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom), right/bottom exclusive; the whole map when nothing is set."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class InterFormerZoomIn:
    """InterFormer's ZoomIn (its demo's settings): from click ``skip_clicks + 1`` on, the refine blocks run only
    inside the box of the last prediction and the definite labels, grown ``expansion`` times around its centre,
    at least ``min_size`` px, snapped outward to multiples of the coarsest stride (32)."""

    skip_clicks: int = 2
    expansion: float = 1.4
    min_size: int = 32
    stride: int = 32

    def describe(self) -> str:
        return (f"InterFormer ZoomIn (refine blocks inside the object's box from click {self.skip_clicks + 1}, "
                f"x{self.expansion:g}, min {self.min_size} px)")


def zoom_roi(previous: np.ndarray, label: np.ndarray, zoom: InterFormerZoomIn) -> Tuple[int, int, int, int]:
    """The ROI (left, top, right, bottom) in frame pixels, multiples of ``zoom.stride``: InterFormer's
    ``get_roi`` (box, ``expand_bbox`` with torch's float32 arithmetic and half-to-even rounding, snap)."""
    h, w = label.shape
    mask = previous | (label == DEFINITELY_FOREGROUND) | (label == DEFINITELY_BACKGROUND)
    left, up, right, bottom = (torch.tensor([v], dtype=torch.int64) for v in _bbox(mask))
    xc, yc = (left + right) / 2.0, (up + bottom) / 2.0
    r = zoom.expansion
    left = torch.round(xc - r * (xc - left)).clip(0, None)
    right = torch.round(xc - r * (xc - right)).clip(None, w)
    up = torch.round(yc - r * (yc - up)).clip(0, None)
    bottom = torch.round(yc - r * (yc - bottom)).clip(None, h)
    m = zoom.min_size
    left = torch.minimum(left, torch.round(xc - m / 2.0).clip(0, None))
    right = torch.maximum(right, torch.round(xc + m / 2.0).clip(None, w))
    up = torch.minimum(up, torch.round(yc - m / 2.0).clip(0, None))
    bottom = torch.maximum(bottom, torch.round(yc + m / 2.0).clip(None, h))
    box = [int(v.to(torch.int64)) for v in (left, up, right, bottom)]
    s = zoom.stride
    return (box[0] // s * s, box[1] // s * s, -(-box[2] // s) * s, -(-box[3] // s) * s)


@dataclass
class LabelState:
    """What one InterFormer object carries from one interaction to the next: the map after the last
    prediction and the clicks painted into it (in frame pixels, in order)."""

    label: np.ndarray  # uint8 (Hp, Wp)
    clicks: Tuple[FrameClick, ...]

    def continued_by(self, clicks: Sequence[FrameClick]) -> Optional[Sequence[FrameClick]]:
        """The clicks still to paint when ``clicks`` extends this state's clicks, else None."""
        n = len(self.clicks)
        if len(clicks) >= n and tuple(clicks[:n]) == self.clicks:
            return clicks[n:]
        return None
