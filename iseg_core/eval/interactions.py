"""Deterministic first interactions simulated from a ground-truth mask, so boxes, contours and scribbles
are evaluated with the same protocol as clicks (the clicks that follow come from :func:`next_click`)."""
from __future__ import annotations

import numpy as np

from ..errors import IsegError
from ..masks import interior_distance, largest_component, traced_outline
from ..prompts import Box, Contour, Prompt, Scribble, clipped_contour
from .clicker import next_click

FIRST_INTERACTIONS = ("click", "box", "contour", "scribble")


def _largest_component(gt: np.ndarray) -> np.ndarray:
    part = largest_component(gt)
    if part is None:
        raise IsegError("the ground-truth mask is empty: nothing to simulate an interaction on")
    return part


def simulate_box(gt: np.ndarray) -> Box:
    """The tight box of all object pixels (corners on pixel edges: ``x1 = last column + 1``)."""
    ys, xs = np.nonzero(gt)
    if xs.size == 0:
        raise IsegError("the ground-truth mask is empty: no box to draw")
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def simulate_contour(gt: np.ndarray, margin: float = 0.01, vertices: int = 40) -> Contour:
    """A loose trace around the largest part: its outline dilated by ``margin`` x image diagonal, simplified
    to about ``vertices`` points (a person traces outside the object, not on its edge)."""
    r = max(1, int(round(margin * np.hypot(*gt.shape))))
    return clipped_contour(traced_outline(_largest_component(gt), r, vertices), gt.shape)


def simulate_scribble(gt: np.ndarray, depth: float = 0.3, samples: int = 24) -> Scribble:
    """A stroke along the main axis of the largest part, through its interior-most pixel, kept where the
    distance to the edge is at least ``depth`` x its maximum (a person scribbles inside, away from edges)."""
    part = _largest_component(gt)
    dist = interior_distance(part)
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
