"""SAIC-IS's interaction simulators, as its benchmark draws them (``scripts/evaluate_model.py`` of
SamsungLabs/saic-is): the next click, contour or stroke from the ground truth and the current prediction.

They are random: SAIC-IS's evaluation builds its generators without ``deterministic=True``, so every draw comes
from numpy's global generator, unseeded. iseg draws the same sequence from a ``numpy.random.RandomState`` it is
given (seed it for a repeatable run): with the same mask, error and seed the simulators here give SAIC-IS's
click, contour and stroke exactly (tests/test_saic_simulators.py runs its own generators beside them).

- click (its ``Clicker`` with ``PointGenerator(at_max_mask, sfc_inner_k=-1, fit_normal=True)``): the error region
  with the larger distance to its edge decides the sign (pixels already clicked excluded); on it, after a thin
  border is peeled, a distance to the edge is drawn from a normal centred on the largest one (folded below it)
  and a pixel at that distance is chosen at random.
- contour (``ContourGenerator(one_component, convex, width 10)`` on ``get_contour_generation_params``): the error
  region's core (a connected part weighted by a Gaussian around a random core pixel, thresholded at 20 %; the
  whole object before any prediction), holes filled, randomly dilated (positive) or eroded, the largest part
  kept, its convex hull half the time (positive), an elastic deformation (large regions), random smoothing,
  stretching and shifting; the outline of the largest part.
- stroke (``StrokeGenerator(one_component, sine axis)``): on the larger error region (thin border peeled), from a
  point near its edge to a remote one, a polynomial of random degree through random pixels between them, on a
  sine-warped axis, retried until it stays in the region's box.

Coordinates are (row, col) integers as SAIC-IS has them. The elastic deformation is albumentations 1.3's
``elastic_transform`` (random affine of three points, then a smoothed random displacement field), written here:
iseg does not depend on albumentations.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import cv2
import numpy as np
from numpy.polynomial.polynomial import Polynomial

from .metrics import boundary_band

Coords = List[Tuple[int, int]]


# -- boxes, boundaries, components (SAIC-IS's isegm.utils.misc helpers) -------------------------------------------
def bbox_of(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(rmin, rmax, cmin, cmax) of a mask; an empty mask gets its corner pixel set first (as SAIC-IS does, in
    place)."""
    if not np.any(mask):
        mask[0, 0] = 1
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    rmin, rmax = np.where(rows)[0][[0, -1]]
    cmin, cmax = np.where(cols)[0][[0, -1]]
    return rmin, rmax, cmin, cmax


def expand_bbox(bbox, ratio: float):
    rmin, rmax, cmin, cmax = bbox
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    h, w = ratio * (rmax - rmin + 1), ratio * (cmax - cmin + 1)
    return int(round(rc - 0.5 * h)), int(round(rc + 0.5 * h)), int(round(cc - 0.5 * w)), int(round(cc + 0.5 * w))


def peel_thin_border(mask: np.ndarray, ratio: float = 0.001) -> np.ndarray:
    """The mask without its edge band of ``ratio`` x the image diagonal (SAIC-IS's remove_thin_border), uint8."""
    m = np.asarray(mask, bool)
    return (m & ~boundary_band(m, ratio)).astype(np.uint8)


def largest_part(mask: np.ndarray):
    """The largest 8-connected part (the first of equal size) and its centroid; (mask, None) without one."""
    mask = mask.astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sizes = stats[:, -1]
    if len(sizes) < 2:
        return mask, None
    best = 1
    for i in range(2, n):
        if sizes[i] > sizes[best]:
            best = i
    out = np.zeros(labels.shape, np.uint8)
    out[labels == best] = 1
    return out, centroids[best]


def bounded_randint(rng, low, high, min_value=None):
    value = rng.randint(low, max(low + 1, high))
    return max(value, min_value) if min_value is not None else value


def _gaussian_1d(centre, length, sigma):
    x = np.arange(-centre, length - centre)
    return np.exp(-0.5 * ((x / sigma) ** 2)) / np.sqrt(2 * np.pi * sigma)


def _extent(mask: np.ndarray):
    """Centre row / col, height and width of the mask's box (SAIC-IS's get_mask_rectangle)."""
    rows = np.flatnonzero(mask.sum(axis=1))
    rows = rows if len(rows) else [0]
    cols = np.flatnonzero(mask.sum(axis=0))
    cols = cols if len(cols) else [0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (r0 + r1) // 2, (c0 + c1) // 2, r1 - r0 + 1, c1 - c0 + 1


def connected_core(indices: np.ndarray, dist: np.ndarray, rng) -> np.ndarray:
    """From a random core pixel, the distance map kept only where it does not rise on monotone paths out of it
    (running minima along its row, column and the half-planes), times a Gaussian of the region's size."""
    row, col = indices[rng.randint(0, len(indices))]
    dist[row][col:] = np.minimum.accumulate(dist[row][col:])
    dist[row][:col][::-1] = np.minimum.accumulate(dist[row][:col][::-1])
    dist[row:] = np.minimum.accumulate(dist[row:], axis=0)
    dist[:row][::-1] = np.minimum.accumulate(dist[:row][::-1], axis=0)
    dist[:, col:] = np.minimum.accumulate(dist[:, col:], axis=1)
    dist[:, :col][:, ::-1] = np.minimum.accumulate(dist[:, :col][:, ::-1], axis=1)
    _, _, h, w = _extent(dist > 0)
    return dist * (_gaussian_1d(row, dist.shape[0], h / 2)[:, None] * _gaussian_1d(col, dist.shape[1], w / 2)[None, :])


# -- mask deformations (SAIC-IS's interaction_generators/mask_transforms) -----------------------------------------
def _working_area(mask: np.ndarray, padding: int, shrink: bool = True):
    h, w = mask.shape[:2]
    box = expand_bbox(bbox_of(mask), 1.1) if shrink else (0, h, 0, w)
    rmin, rmax, cmin, cmax = box[0] - padding, box[1] + padding, box[2] - padding, box[3] + padding
    rmin, rmax = max(-padding, rmin), min(h - 1 + padding, rmax)
    cmin, cmax = max(-padding, cmin), min(w - 1 + padding, cmax)
    pads = max(0, -rmin), max(0, -(h - 1 - rmax)), max(0, -cmin), max(0, -(w - 1 - cmax))
    h1, w1 = rmax - rmin + 1, cmax - cmin + 1
    area = np.zeros((h1, w1), np.uint8)
    rmin, cmin, rmax, cmax = max(0, rmin), max(0, cmin), min(rmax, h - 1), min(cmax, w - 1)
    area[pads[0]:h1 - pads[1], pads[2]:w1 - pads[3]] = mask[rmin:rmax + 1, cmin:cmax + 1]
    return area, ((rmin, rmax, cmin, cmax), pads)


def _put_back(mask: np.ndarray, result: np.ndarray, where) -> np.ndarray:
    out = np.array(mask)
    (rmin, rmax, cmin, cmax), (p0, p1, p2, p3) = where
    h1, w1 = result.shape[:2]
    out[rmin:rmax + 1, cmin:cmax + 1] = result[p0:h1 - p1, p2:w1 - p3]
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype(np.uint8)
    h, w = mask.shape[:2]
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    cv2.floodFill(padded, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    padded[padded != 2] = 1
    padded[padded == 2] = 0
    return padded[1:-1, 1:-1]


def dilate_or_erode(mask, rng, dilate_range=(16., 32.), dilate_prob=0.5, erode_range=(24., 64.), min_erode=0.4,
                    shrink=True):
    """Dilate (with ``dilate_prob``) or erode by an ellipse of the object's size / a random scale; an erosion
    that keeps less than ``min_erode`` of it is retried at twice the scale, three times, then a dilation."""
    mask = mask.astype(np.uint8)
    box = bbox_of(mask)
    area, where = _working_area(mask, 2, shrink)
    original = np.count_nonzero(area)

    def params(erode=None):
        prob = dilate_prob if erode is None else (0.0 if erode else 1.0)
        if rng.uniform(0., 1.) < prob:
            op, scale, erode = cv2.dilate, rng.uniform(*dilate_range), False
        else:
            op, scale, erode = cv2.erode, rng.uniform(*erode_range), True
        size = int(max(min(box[1] - box[0], box[3] - box[2]) / scale, 2) * 2 + 1 + 0.5)
        return op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)), erode

    result = area
    if original > 0:
        erode, done = None, False
        for _ in range(3):
            op, kernel, erode = params(erode)
            result = op(area, kernel, iterations=1)
            if not erode:
                done = True
                break
            if np.count_nonzero(result) / float(original) > min_erode:
                done = True
                break
            erode_range = (2 * erode_range[0], 2 * erode_range[1])
        if not done:
            _, kernel, _ = params(False)
            result = cv2.dilate(area, kernel, iterations=1)
    return _put_back(mask, result, where)


def elastic(img: np.ndarray, alpha: float, sigma: float, alpha_affine: float, rng) -> np.ndarray:
    """albumentations 1.3's ``elastic_transform`` (border constant 0, bilinear): the image warped by a random
    affine of three points (+-alpha_affine), then remapped by a Gaussian-smoothed (sigma) random field x alpha."""
    from scipy.ndimage import gaussian_filter

    shape = img.shape
    h, w = img.shape[:2]
    centre = np.array((h, w), np.float32) // 2
    side = min((h, w)) // 3
    pts1 = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side], np.float32)
    pts2 = pts1 + rng.uniform(-float(alpha_affine), float(alpha_affine), size=pts1.shape).astype(np.float32)
    img = cv2.warpAffine(img, cv2.getAffineTransform(pts1, pts2), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    dx = np.float32(gaussian_filter((rng.rand(h, w) * 2 - 1), float(sigma)) * float(alpha))
    dy = np.float32(gaussian_filter((rng.rand(h, w) * 2 - 1), float(sigma)) * float(alpha))
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    out = cv2.remap(img, np.float32(x + dx), np.float32(y + dy), interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(shape)


def random_elastic(mask, rng, shrink=True):
    rows, cols = np.where(mask)
    if len(rows) == 0:
        return mask
    scale = 4 * min(rows.max() - rows.min(), cols.max() - cols.min())
    alpha = scale * rng.uniform(0.8, 1.2) * 2
    alpha_affine = scale * rng.uniform(0.4, 0.6) * 0.05
    sigma = scale * rng.uniform(0.5, 0.75) * 0.1
    area, where = _working_area(mask, 4, shrink)
    return _put_back(mask, elastic(area, alpha, sigma, alpha_affine, rng), where)


def convex_hull(mask: np.ndarray):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(contours) == 0:
        return None
    hull = cv2.convexHull(np.vstack(contours))
    out = np.zeros_like(mask, dtype=np.uint8)
    cv2.fillPoly(out, pts=[hull[:, 0]], color=int(mask.max()))
    return out


def nearly_convex(mask: np.ndarray, ratio: float) -> bool:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(contours) == 0:
        return False
    return cv2.contourArea(contours[0]) / (cv2.contourArea(cv2.convexHull(contours[0])) + 1e-6) > ratio


def smooth(mask, rng, shrink=True):
    """A Gaussian blur (SAIC-IS's "median" and "gaussian" both blur) of a random odd size ~ the object's 1/128 to
    1/16, in the object's working area."""
    rows, cols = np.where(mask)
    if len(rows) == 0:
        return mask
    size = min(rows.max() - rows.min(), cols.max() - cols.min())
    k = bounded_randint(rng, size // 128, size // 16, min_value=1) * 2 + 1
    rng.choice(("median", "gaussian"))  # drawn by SAIC-IS; both filters are the same blur
    img = mask.astype(np.uint8)
    if min(img.shape[:-1]) < k or k < 1:
        return img
    area, where = _working_area(img, int(k / 2 + 0.5) + 1, shrink)
    if k > min(area.shape[:2]):
        k = min(area.shape[:2])
        k = k - 1 if k % 2 == 0 else k
    return _put_back(img, cv2.GaussianBlur(area, (k, k), sigmaX=k, sigmaY=k), where)


def stretch(mask, rng, low, high):
    ratio = rng.rand() * (high - low) + low
    rows, cols = np.where(mask)
    if len(rows) == 0:
        return mask
    box = (rows.min(), cols.min(), rows.max(), cols.max())
    shift = (box[2] - box[0]) / 2 * (ratio - 1), (box[3] - box[1]) / 2 * (ratio - 1)
    new = (max(int(box[0] - shift[0]), 0), max(int(box[1] - shift[1]), 0),
           min(int(box[2] + shift[0]), mask.shape[0]), min(int(box[3] + shift[1]), mask.shape[1]))
    if 0 in (box[2] - box[0], box[3] - box[1], new[2] - new[0], new[3] - new[1]):
        return mask
    resized = cv2.resize(mask[box[0]:box[2], box[1]:box[3]], (new[3] - new[1], new[2] - new[0]),
                         interpolation=cv2.INTER_LINEAR)
    out = np.zeros_like(mask)
    out[new[0]:new[2], new[1]:new[3]] = resized
    return out


def shift(mask, rng, max_shift):
    rows, cols = np.where(mask)
    if len(rows) == 0:
        return mask
    box = (rows.min(), cols.min(), rows.max(), cols.max())
    size = np.array([box[2] - box[0], box[3] - box[1]])
    max_shift = np.minimum(max_shift, size // 8 // 2)
    pad_r = bounded_randint(rng, 0, max_shift[0])
    dr = pad_r * rng.choice([-1, 1])
    pad_c = bounded_randint(rng, 0, max_shift[1])
    dc = pad_c * rng.choice([-1, 1])
    out = np.zeros((mask.shape[0] + 2 * pad_r, mask.shape[1] + 2 * pad_c))
    out[box[0] + dr + pad_r:box[2] + dr + pad_r, box[1] + dc + pad_c:box[3] + dc + pad_c] = \
        mask[box[0]:box[2], box[1]:box[3]]
    if pad_r != 0:
        out = out[pad_r:-pad_r]
    if pad_c != 0:
        out = out[:, pad_c:-pad_c]
    return out


def _box_gap(a: np.ndarray, b: np.ndarray):
    ia, ib = np.where(a), np.where(b)
    if len(ib[0]) and len(ia[0]):
        ia, ib = np.vstack(ia), np.vstack(ib)
        return np.min(np.abs([ia.min(1) - ib.min(1), ia.max(1) - ib.max(1)]), axis=0)
    return 0


def deform(mask, rng, fewer_shift, shrink=True):
    """Smooth, stretch (more when nearly convex), shift (by at most the boxes' gap; a quarter of it for
    ``fewer_shift``), smooth again."""
    out = smooth(mask, rng, shrink)
    convex = nearly_convex(out, 0.6)
    out = stretch(out, rng, 0.75 if convex else 0.9, 1.2 if convex else 1.1)
    gap = _box_gap(out, mask)
    gap = (gap + 1) * 2 if convex else gap
    if fewer_shift:
        gap = gap / 4
    out = shift(out, rng, gap)
    return smooth(out, rng, shrink)


# -- the three simulators ----------------------------------------------------------------------------------------
def error_regions(pred: np.ndarray, gt: np.ndarray, not_clicked: np.ndarray, valid: np.ndarray):
    """(false negatives, their distance to the edge, false positives, theirs); clicked pixels have distance 0."""
    fn = np.pad(gt & ~pred & valid, 1)
    fp = np.pad(~gt & pred & valid, 1)
    fn_dt = cv2.distanceTransform(fn.astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1] * not_clicked
    fp_dt = cv2.distanceTransform(fp.astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1] * not_clicked
    return fn[1:-1, 1:-1], fn_dt, fp[1:-1, 1:-1], fp_dt


def click_in(region: np.ndarray, rng) -> Optional[Tuple[int, int]]:
    """SAIC-IS's point on a region: a distance to the (peeled) region's edge drawn from a normal centred on its
    largest, folded below it; a pixel at the nearest such distance, at random."""
    if region.sum() == 0:  # nothing of that sign: SAIC-IS then takes any pixel of the image
        everywhere = np.argwhere(region == region.max())
        return tuple(int(v) for v in everywhere[rng.randint(0, len(everywhere))]) if len(everywhere) else None
    peeled = peel_thin_border(region.astype(np.uint8))
    dt = cv2.distanceTransform(np.pad(peeled, 1).astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]
    inside = np.argwhere(dt > 0)
    if len(inside) == 0:
        candidates = np.argwhere(region)
        return tuple(int(v) for v in candidates[rng.randint(0, len(candidates))])
    probs = dt[dt > 0].flatten()
    probs /= max(probs.sum(), 1e-6)
    top, low = probs.max(), probs.min()
    sigma = top - low
    drawn = rng.normal(top, sigma, 1)
    while drawn < low or top + (top - low) < drawn:
        drawn = rng.normal(top, sigma, 1)
    if drawn > top:
        drawn = top - (drawn - top)
    gap = np.abs(probs - drawn)
    pick = rng.choice(np.argwhere(gap == gap.min()).ravel())
    candidates = np.array([inside[pick]])
    return tuple(int(v) for v in candidates[rng.randint(0, len(candidates))])


def next_click(pred, gt, not_clicked, valid, rng) -> Optional[Tuple[int, int, bool]]:
    """(row, col, positive) of SAIC-IS's next click, or None."""
    fn, fn_dt, fp, fp_dt = error_regions(pred, gt, not_clicked, valid)
    positive = bool(np.max(fn_dt) > np.max(fp_dt))
    point = click_in(fn if positive else fp, rng)
    return None if point is None else (point[0], point[1], positive)


def contour_region(pred, gt, valid, rng):
    """SAIC-IS's region to contour and its sign: the whole object before any prediction, else the core of the
    error with the larger distance to its edge (``get_contour_generation_params``, dt mask size 0, 0.8)."""
    if pred.sum() == 0:
        return gt, True  # a Python bool: its deformations then shift as little as for negatives (see below)
    fn = (gt & ~pred & valid).astype(np.uint8)
    fp = (~gt & pred & valid).astype(np.uint8)
    fn_dt = cv2.distanceTransform(fn, cv2.DIST_L2, 0)
    fp_dt = cv2.distanceTransform(fp, cv2.DIST_L2, 0)
    positive = np.max(fn_dt) > np.max(fp_dt)
    dt = fn_dt if positive else fp_dt
    core = np.argwhere(dt > np.max(dt) * 0.8)
    if len(core) == 0:
        return gt, positive
    dt = connected_core(core, dt, rng)
    return dt > np.max(dt) * 0.2, positive


def contour(region: np.ndarray, positive, rng) -> Optional[Coords]:
    """SAIC-IS's contour of ``region`` (``ContourGenerator(one_component, convex)``) -> (row, col) outline, or
    None where it draws an empty one."""
    closed = dilate_or_erode(fill_holes(region.copy()), rng, dilate_prob=0.5 if positive else 0)
    closed, _ = largest_part(closed)
    if positive and rng.rand() < 0.5:
        hull = convex_hull(closed)
        closed = hull if hull is not None else closed
    area = region.shape[0] * region.shape[1]
    if area > 0 and closed.sum() / area > 1 / 64.:
        closed = random_elastic(closed, rng)
    closed, _ = largest_part(closed)
    # SAIC-IS passes ``~is_positive``: logical not for numpy's bool, but -2 (truthy) for Python's True
    closed = deform(closed, rng, fewer_shift=bool(~positive))
    part, centroid = largest_part(closed)
    if centroid is None or part.sum() < 10:
        return None
    outlines, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(outlines) == 0:
        return None
    return [(int(y), int(x)) for x, y in outlines[0][:, 0]]


def stroke(region: np.ndarray, positive: bool, rng, width_box_ratio: float = 0.01, points: int = 300,
           max_degree: int = 4) -> Optional[Coords]:
    """SAIC-IS's stroke in ``region`` (``StrokeGenerator(one_component, sine axis)``) -> (row, col) points, or
    None where it draws an empty one."""
    inner, _ = largest_part(peel_thin_border(region))
    if inner.sum() == 0:
        return None
    indices = np.argwhere(inner)
    if len(indices) < 2:
        return None
    r0, r1, c0, c1 = bbox_of(inner > 0)
    box_h, box_w = r1 - r0 + 1, c1 - c0 + 1
    x = np.zeros(points) - 1
    y = np.zeros(points) - 1
    tries = 0
    while not (np.all((x >= 0) & (x < inner.shape[1])) and np.all((y >= 0) & (y < inner.shape[0]))
               and max(x) - min(x) < box_w and max(y) - min(y) < box_h
               and ((x >= c0) & (x <= c1)).sum() > len(x) * 0.75 and ((y >= r0) & (y <= r1)).sum() > len(y) * 0.75
               and np.all(np.isfinite(x)) and np.all(np.isfinite(y))) and tries < 5:
        tries += 1
        band = np.argwhere(boundary_band(inner, width_box_ratio))
        if len(band) == 0:
            band = np.argwhere(inner)
        near = band[rng.randint(0, len(band))]
        d2 = ((indices - near) ** 2).sum(axis=1)
        far_idx = np.where(d2 > np.quantile(d2[d2 > 0], 0.7))[0]
        far_set = indices[far_idx] if len(far_idx) > 0 else indices
        far = far_set[rng.randint(0, len(far_set))]
        lo_r, hi_r, lo_c, hi_c = min(far[0], near[0]), max(far[0], near[0]), min(far[1], near[1]), max(far[1], near[1])
        between = indices[(indices[:, 0] > lo_r) & (indices[:, 0] < hi_r) & (indices[:, 1] > lo_c) & (indices[:, 1] < hi_c)]
        if len(between) == 0:
            between = indices[np.any(indices != far, axis=1) & np.any(indices != near, axis=1)]
        degree = rng.randint(1, max_degree)
        count = min(len(indices), rng.randint(2 * degree, 3 * degree + 1))
        xs, ys = [far[1], near[1]], [far[0], near[0]]
        picked = rng.choice(range(len(between)), min(len(between), count), replace=False)
        if len(picked):
            xs = np.concatenate((xs, between[picked, 1]))
            ys = np.concatenate((ys, between[picked, 0]))
        axis, swap = box_w, False
        if rng.rand() <= 0.5:
            axis, swap = box_h, True
            xs, ys = ys, xs
        period = (rng.rand() * (1 - 0.3) + 0.3) * axis

        def warp(v):
            return np.sin(v / (period * np.pi))

        weights = np.ones_like(xs) / max(np.std(ys), 1e-6)
        weights[:2] *= 2.
        x = np.linspace(min(xs), max(xs), points).astype(np.int32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                y = Polynomial.fit(warp(xs), ys, degree, w=weights)(warp(x)).astype(np.int32)
            except (SystemError, np.linalg.LinAlgError):
                continue
        if swap:
            x, y = y, x
    if not (np.all(np.isfinite(x)) & np.all(np.isfinite(y))):
        return None
    keep = (x > 0) & (y > 0)
    if keep.sum() == 0:
        return None
    return [(int(r), int(c)) for c, r in np.stack([x, y], axis=1)[keep]]


def next_contour(pred, gt, valid, rng):
    """SAIC-IS's next contour for ``pred`` -> ((row, col) outline or None, positive)."""
    region, positive = contour_region(pred, gt, valid, rng)
    return contour(region.copy(), positive, rng), bool(positive)


def next_stroke(pred, gt, valid, rng):
    """SAIC-IS's next stroke for ``pred`` -> ((row, col) points or None, positive)."""
    fn, fn_dt, fp, fp_dt = error_regions(pred, gt, np.ones(gt.shape, bool), valid)
    positive = bool(np.max(fn_dt) > np.max(fp_dt))
    return stroke(fn if positive else fp, positive, rng), positive


__all__ = ["contour", "contour_region", "elastic", "error_regions", "next_click", "next_contour", "next_stroke",
           "stroke"]
