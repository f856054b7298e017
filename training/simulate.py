"""Random interactions for training, simulated from a ground-truth mask, in the shared prompt vocabulary.

- clicks in the manner of RITM's multi-point sampler: positives inside the object (away from its edge),
  negatives from the background, from a band around the object, or on other objects of the image;
- jittered boxes (each edge moved by a random fraction of the box size);
- scribbles in the manner of SAIC-IS: a stroke through the object's interior, or through the largest error
  region of a prediction (positive in a miss, negative in a false alarm);
- contours: the object's outline dilated or eroded by a random radius, its vertices displaced.

Correction clicks during training (no-grad iterations) use the evaluation's clicker, ``next_click``, so the
model trains on the clicks it will be evaluated with. Every function takes a ``numpy.random.Generator``: the
same seed gives the same prompts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from iseg_core.errors import IsegError
from iseg_core.eval.clicker import next_click
from iseg_core.masks import interior_distance, largest_component, traced_outline
from iseg_core.prompts import Box, Click, Contour, Prompt, Scribble, clipped_contour

__all__ = ["SamplerConfig", "correction_click", "deformed_contour", "error_scribble", "interior_scribble",
           "jittered_box", "sample_clicks", "sample_prompts"]


@dataclass(frozen=True)
class SamplerConfig:
    max_positive: int = 4
    max_negative: int = 4
    negative_weights: Tuple[float, float, float] = (0.4, 0.5, 0.1)  # background, band around the object, others
    band: Tuple[float, float] = (0.02, 0.15)  # the negative band: this far outside the object (x image diagonal)
    box_jitter: float = 0.1  # each box edge moves by up to this fraction of the box's side
    contour_shift: float = 0.03  # contour dilation / erosion radius, up to this x image diagonal
    kinds: Tuple[Tuple[str, float], ...] = (("click", 0.6), ("box", 0.2), ("scribble", 0.1), ("contour", 0.1))


def _need_object(gt: np.ndarray) -> np.ndarray:
    gt = np.asarray(gt).astype(bool)
    if gt.ndim != 2:
        raise IsegError(f"a ground-truth mask must be 2-D, got shape {gt.shape}")
    if not gt.any():
        raise IsegError("the ground-truth mask is empty: there is no object to simulate prompts for")
    return gt


def _pick(rng: np.random.Generator, region: np.ndarray, weights: Optional[np.ndarray] = None) -> Optional[Tuple[int, int]]:
    ys, xs = np.nonzero(region)
    if xs.size == 0:
        return None
    p = None
    if weights is not None:
        w = weights[ys, xs].astype(np.float64)
        p = w / w.sum() if w.sum() > 0 else None
    k = int(rng.choice(xs.size, p=p))
    return int(xs[k]), int(ys[k])


def sample_clicks(gt: np.ndarray, rng: np.random.Generator, config: SamplerConfig = SamplerConfig(),
                  others: Optional[np.ndarray] = None) -> List[Click]:
    """1..max_positive positive clicks inside the object (weighted towards its interior), then
    0..max_negative negatives, each from the background, a band around the object, or ``others`` (pixels
    of other objects). Clicks sit at pixel centres."""
    gt = _need_object(gt)
    h, w = gt.shape
    inner = interior_distance(gt)
    clicks: List[Click] = []
    for _ in range(int(rng.integers(1, config.max_positive + 1))):
        at = _pick(rng, gt, inner ** 2)  # deep pixels are likelier, as people click there
        clicks.append(Click(at[0] + 0.5, at[1] + 0.5, True))
    diag = math.hypot(h, w)
    outer = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    band = (~gt) & (outer >= max(1.0, config.band[0] * diag)) & (outer <= max(2.0, config.band[1] * diag))
    sources = [~gt, band, (others.astype(bool) & ~gt) if others is not None else np.zeros_like(gt)]
    weights = np.array([wt if src.any() else 0.0 for wt, src in zip(config.negative_weights, sources)])
    for _ in range(int(rng.integers(0, config.max_negative + 1))):
        if weights.sum() == 0:
            break
        src = sources[int(rng.choice(3, p=weights / weights.sum()))]
        at = _pick(rng, src)
        clicks.append(Click(at[0] + 0.5, at[1] + 0.5, False))
    return clicks


def jittered_box(gt: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> Box:
    """The object's box with each edge moved by up to ``jitter`` x the box side, clipped to the image."""
    gt = _need_object(gt)
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    x0, x1, y0, y1 = float(xs.min()), float(xs.max() + 1), float(ys.min()), float(ys.max() + 1)
    bw, bh = x1 - x0, y1 - y0
    d = rng.uniform(-jitter, jitter, 4) * np.array([bw, bh, bw, bh])
    x0, y0 = min(max(0.0, x0 + d[0]), w - 1.0), min(max(0.0, y0 + d[1]), h - 1.0)
    x1, y1 = max(min(float(w), x1 + d[2]), x0 + 1.0), max(min(float(h), y1 + d[3]), y0 + 1.0)
    return Box(x0, y0, x1, y1)


def _stroke_through(region: np.ndarray, rng: np.random.Generator, positive: bool, samples: int = 16) -> Scribble:
    """A stroke along a random direction through the interior-most part of ``region``, kept inside it."""
    inner = interior_distance(region)
    cy, cx = np.unravel_index(int(np.argmax(inner)), inner.shape)
    deep = inner >= 0.3 * inner.max()
    angle = rng.uniform(0, math.pi)
    axis = np.array([math.cos(angle), math.sin(angle)])
    ys, xs = np.nonzero(deep)
    extent = float(np.abs((np.stack([xs, ys], 1) - (cx, cy)) @ axis).max()) if xs.size else 0.0
    h, w = region.shape
    pts = []
    for t in np.linspace(-extent, extent, samples):
        x, y = int(round(cx + t * axis[0])), int(round(cy + t * axis[1]))
        if 0 <= x < w and 0 <= y < h and deep[y, x]:
            pts.append((x + 0.5, y + 0.5))
    return Scribble(pts or [(cx + 0.5, cy + 0.5)], positive)


def interior_scribble(gt: np.ndarray, rng: np.random.Generator) -> Scribble:
    """A positive stroke through the object's interior, in a random direction."""
    return _stroke_through(largest_component(_need_object(gt)), rng, True)


def error_scribble(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator,
                   ignore: Optional[np.ndarray] = None) -> Optional[Scribble]:
    """A stroke through the largest error region of ``pred``: positive in a miss, negative in a false
    alarm (SAIC-IS's corrective strokes). None when the prediction is exact."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    valid = ~np.asarray(ignore, bool) if ignore is not None else np.ones_like(gt)
    best, best_area, positive = None, 0, True
    for err, pos in ((gt & ~pred & valid, True), (~gt & pred & valid, False)):
        part = largest_component(err)
        if part is not None and int(part.sum()) > best_area:
            best, best_area, positive = part, int(part.sum()), pos
    return None if best is None else _stroke_through(best, rng, positive)


def deformed_contour(gt: np.ndarray, rng: np.random.Generator, shift: float = 0.03, vertices: int = 32) -> Contour:
    """A contour a person might trace: the largest part's outline dilated or eroded by a random radius (up to
    ``shift`` x image diagonal), simplified to about ``vertices`` points, each displaced a little."""
    gt = _need_object(gt)
    h, w = gt.shape
    r = int(round(rng.uniform(-shift, shift) * math.hypot(h, w)))
    pts = traced_outline(gt, r, vertices)
    noise = max(1.0, 0.005 * math.hypot(h, w))
    return clipped_contour(pts + rng.normal(0, noise, pts.shape), gt.shape)


def correction_click(gt: np.ndarray, pred: np.ndarray, ignore: Optional[np.ndarray] = None,
                     clicked: Sequence[Click] = ()) -> Click:
    """The click the evaluation would make next (RITM's clicker): training and evaluation share it."""
    return next_click(gt, pred, ignore=ignore, clicked=list(clicked))


def sample_prompts(gt: np.ndarray, rng: np.random.Generator, config: SamplerConfig = SamplerConfig(),
                   others: Optional[np.ndarray] = None) -> List[Prompt]:
    """The first prompts of one training sample: clicks, a jittered box, a scribble (with a few negative
    clicks) or a deformed contour, drawn with the weights of ``config.kinds``."""
    names = [k for k, _ in config.kinds]
    p = np.array([wt for _, wt in config.kinds], np.float64)
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    if kind == "box":
        return [jittered_box(gt, rng, config.box_jitter)]
    if kind == "contour":
        return [deformed_contour(gt, rng, config.contour_shift)]
    if kind == "scribble":
        negatives = [c for c in sample_clicks(gt, rng, config, others) if not c.positive]
        return [interior_scribble(gt, rng)] + negatives
    return sample_clicks(gt, rng, config, others)
