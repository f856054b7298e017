"""How SAM consumes the shared prompt vocabulary.

Clicks are points. A scribble becomes a few points sampled along it (more for longer strokes). A box is
SAM's box (the last one, as SAM takes one). A contour becomes its bounding box (unless a box was given),
positive points deep inside it, and a mask prompt rasterised from the polygon. All outputs are in the
model's input frame: the image resized so its long side is ``image_size`` (padding to the right/bottom).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...masks import interior_distance
from ...errors import PromptError
from ...prompts import Box, Click, Contour, Prompt, Scribble, resample_polyline

# A binary contour mask is handed to SAM as logits of this magnitude (inside +, outside -).
CONTOUR_MASK_LOGIT = 10.0
# Scribbles get one point per this many model-frame pixels of length, within these bounds.
SCRIBBLE_SPACING = 64.0
SCRIBBLE_MAX_POINTS = 6
CONTOUR_MAX_POINTS = 3


@dataclass
class SamInputs:
    points: Optional[np.ndarray]  # (N, 2) float32, model frame, x/y
    labels: Optional[np.ndarray]  # (N,) int64 in {0, 1}
    box: Optional[np.ndarray]  # (4,) float32, model frame
    mask_logits: Optional[np.ndarray]  # (4h, 4w) float32, SAM's low-res mask frame
    single_click: bool  # exactly one point and nothing else: the ambiguous case


def _interior_points(raster: np.ndarray, limit: int) -> List[Tuple[float, float]]:
    """Up to ``limit`` cells far from the polygon's edge and from each other, as (col, row) centres."""
    dist = interior_distance(raster)
    out = []
    first = None
    for _ in range(limit):
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        d = float(dist[r, c])
        if d <= 0 or (first is not None and d < 0.5 * first):
            break
        first = first or d
        out.append((c + 0.5, r + 0.5))
        cv2.circle(dist, (int(c), int(r)), int(np.ceil(2 * d)), 0.0, thickness=-1)
    return out


def to_sam_inputs(
    prompts: Sequence[Prompt],
    original_size: Tuple[int, int],
    input_size: Tuple[int, int],
    mask_size: Tuple[int, int],
    image_size: int,
) -> SamInputs:
    """Convert validated image-pixel prompts. ``original_size``/``input_size``/``mask_size`` are (H, W)."""
    sy = input_size[0] / original_size[0]
    sx = input_size[1] / original_size[1]
    scale = np.array([sx, sy])
    points: List[np.ndarray] = []
    labels: List[int] = []
    box = None
    polygons: List[np.ndarray] = []
    for p in prompts:
        if isinstance(p, Click):
            points.append(np.array([p.x, p.y]) * scale)
            labels.append(int(p.positive))
        elif isinstance(p, Scribble):
            pts = np.asarray(p.points) * scale
            length = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()) if len(pts) > 1 else 0.0
            n = int(np.clip(1 + length // SCRIBBLE_SPACING, 1, SCRIBBLE_MAX_POINTS))
            for q in resample_polyline(pts, n):
                points.append(q)
                labels.append(int(p.positive))
        elif isinstance(p, Box):
            box = np.array([p.x0 * sx, p.y0 * sy, p.x1 * sx, p.y1 * sy])
        elif isinstance(p, Contour):
            if not p.positive:
                raise PromptError("SAM takes contours around the object only, not around what is not it")
            polygons.append(np.asarray(p.points) * scale)

    mask_logits = None
    if polygons:
        if box is None:
            allpts = np.concatenate(polygons)
            box = np.concatenate([allpts.min(axis=0), allpts.max(axis=0)])
        cell = image_size / mask_size[0]  # model pixels per low-res mask cell
        raster = np.zeros(mask_size, np.uint8)
        # shift=4: sub-pixel polygon vertices (fixed point, 1/16 cell).
        cv2.fillPoly(raster, [np.round(poly / cell * 16 - 8).astype(np.int32) for poly in polygons], 1, cv2.LINE_8, 4)
        for c, r in _interior_points(raster, CONTOUR_MAX_POINTS):
            points.append(np.array([c * cell - 0.5, r * cell - 0.5]))
            labels.append(1)
        mask_logits = np.where(raster > 0, CONTOUR_MASK_LOGIT, -CONTOUR_MASK_LOGIT).astype(np.float32)

    return SamInputs(
        points=np.asarray(points, np.float32).reshape(-1, 2) if points else None,
        labels=np.asarray(labels, np.int64) if points else None,
        box=box.astype(np.float32) if box is not None else None,
        mask_logits=mask_logits,
        single_click=len(points) == 1 and box is None and not polygons,
    )
