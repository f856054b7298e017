"""Deterministic first interactions simulated from a ground-truth mask, so boxes, contours and scribbles
are evaluated with the same protocol as clicks (the clicks that follow come from :func:`next_click`)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import IsegError
from ..prompts import Box, Click, Contour, Prompt, Scribble
from .clicker import next_click

FIRST_INTERACTIONS = ("click", "box", "contour", "scribble")


def _largest_component(gt: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(gt.astype(np.uint8), connectivity=8)
    if n <= 1:
        raise IsegError("the ground-truth mask is empty: nothing to simulate an interaction on")
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def simulate_box(gt: np.ndarray) -> Box:
    """The tight box of all object pixels (corners on pixel edges: ``x1 = last column + 1``)."""
    ys, xs = np.nonzero(gt)
    if xs.size == 0:
        raise IsegError("the ground-truth mask is empty: no box to draw")
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def simulate_contour(gt: np.ndarray, margin: float = 0.01, vertices: int = 40) -> Contour:
    """A loose trace around the largest part: its outline dilated by ``margin`` x image diagonal, simplified
    to about ``vertices`` points (a person traces outside the object, not on its edge)."""
    part = _largest_component(gt).astype(np.uint8)
    r = max(1, int(round(margin * np.hypot(*gt.shape))))
    grown = cv2.dilate(part, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    step = max(1, len(outline) // vertices)
    pts = outline[::step]
    h, w = gt.shape
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    return Contour([tuple(p) for p in pts])


def simulate_scribble(gt: np.ndarray, depth: float = 0.3, samples: int = 24) -> Scribble:
    """A stroke along the main axis of the largest part, through its interior-most pixel, kept where the
    distance to the edge is at least ``depth`` x its maximum (a person scribbles inside, away from edges)."""
    part = _largest_component(gt)
    dist = cv2.distanceTransform(np.pad(part.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= depth * dist.max())
    centre_y, centre_x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    coords = np.stack([xs, ys], 1).astype(np.float64)
    if len(coords) < 2:
        return Scribble([(float(centre_x), float(centre_y))])
    cov = np.cov((coords - coords.mean(0)).T)
    axis = np.linalg.eigh(cov)[1][:, -1]
    extent = np.abs((coords - (centre_x, centre_y)) @ axis).max()
    ts = np.linspace(-extent, extent, samples)
    pts = np.array([centre_x, centre_y]) + ts[:, None] * axis
    keep = []
    h, w = gt.shape
    for x, y in pts:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < w and 0 <= yi < h and dist[yi, xi] >= depth * dist.max():
            keep.append((float(xi), float(yi)))
    return Scribble(keep or [(float(centre_x), float(centre_y))])


def first_interaction(kind: str, gt: np.ndarray, ignore=None) -> Prompt:
    """The first interaction of an evaluation run: ``click`` (the standard first click), ``box``,
    ``contour`` or ``scribble``."""
    if kind == "click":
        click = next_click(gt, np.zeros_like(gt, bool), ignore)
        if click is None:
            raise IsegError("the ground-truth mask is empty: no first click")
        return click
    if kind == "box":
        return simulate_box(gt)
    if kind == "contour":
        return simulate_contour(gt)
    if kind == "scribble":
        return simulate_scribble(gt)
    raise IsegError(f"unknown first interaction {kind!r}; choose one of {', '.join(FIRST_INTERACTIONS)}")


def prompt_to_json(p: Prompt) -> dict:
    if isinstance(p, Click):
        return {"type": "click", "x": p.x, "y": p.y, "positive": p.positive}
    if isinstance(p, Box):
        return {"type": "box", "x0": p.x0, "y0": p.y0, "x1": p.x1, "y1": p.y1}
    if isinstance(p, Scribble):
        return {"type": "scribble", "points": [list(q) for q in p.points], "positive": p.positive}
    return {"type": "contour", "points": [list(q) for q in p.points]}
