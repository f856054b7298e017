"""Operations on binary masks shared by the models, the evaluation, training and storage.

Masks are ``(H, W)`` arrays, anything non-zero is inside. COCO segmentations (polygons, uncompressed and
compressed RLE) are decoded here after their run lengths are checked: pycocotools decodes RLE without bounds
checks, so every RLE from outside passes :func:`segmentation_to_counts` first.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import cv2
import numpy as np


def interior_distance(region: np.ndarray) -> np.ndarray:
    """Exact L2 distance (float32, pixels) of each ``region`` pixel to the nearest pixel outside it, the
    image border counting as outside (1-px zero padding, then un-padded); 0 outside the region."""
    padded = np.pad(np.asarray(region).astype(np.uint8, copy=False), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def largest_component(mask: np.ndarray) -> Optional[np.ndarray]:
    """The largest 8-connected part of ``mask`` as a bool array, or None when the mask is empty."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask).astype(np.uint8, copy=False),
                                                           connectivity=8)
    if n <= 1:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def traced_outline(mask: np.ndarray, radius: int, vertices: int) -> np.ndarray:
    """About ``vertices`` points ``(N, 2)`` (x, y, float64) along the outer outline of the largest part of
    ``mask`` grown (``radius > 0``) or shrunk (``< 0``) by a disk of ``|radius|`` px; a mask that shrinking would
    erase is traced as it is. At least 3 points: a part too small for a polygon gives its box's corners."""
    m = np.asarray(mask).astype(np.uint8)
    if radius:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1, 2 * abs(radius) + 1))
        shaped = cv2.dilate(m, disk) if radius > 0 else cv2.erode(m, disk)
        m = shaped if shaped.any() else m
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    pts = outline[:: max(1, len(outline) // vertices)]
    if len(pts) < 3:
        ys, xs = np.nonzero(m)
        pts = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.max() + 1, ys.max() + 1]], np.float64)
    return pts


# -- COCO segmentations ------------------------------------------------------------------------------------
def counts_from_string(s: str) -> List[int]:
    """Run lengths of a compressed COCO RLE string (5 bits per character from '0', 0x20 = more characters
    follow, 0x10 in the last character = negative; from the third run on, each value is a difference to the
    run two places back). Raises ValueError on characters outside the alphabet or a truncated value."""
    runs: List[int] = []
    i, n = 0, len(s)
    while i < n:
        value, shift, more = 0, 0, True
        while more:
            if i >= n:
                raise ValueError("the counts string ends inside a value")
            c = ord(s[i]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[i]!r} is not in the RLE alphabet")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            i += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def check_runs(runs: Sequence[int], height: int, width: int) -> Optional[str]:
    """None if ``runs`` is a valid RLE of a ``height x width`` mask, else what is wrong."""
    if any((not isinstance(r, (int, np.integer))) or r < 0 for r in runs):
        return "run lengths must be non-negative integers"
    total = int(sum(int(r) for r in runs))
    if total != height * width:
        return f"run lengths sum to {total}, the image has {height} x {width} = {height * width} pixels"
    return None


def segmentation_to_counts(seg, height: int, width: int) -> str:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) -> compressed counts of a
    ``height x width`` mask. Raises ValueError saying what is wrong."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        if not seg:
            raise ValueError("empty polygon list")
        polys = []
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise ValueError(f"polygon {k} must be a flat list of at least 3 x, y pairs")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
                raise ValueError(f"polygon {k} has a coordinate that is not a finite number")
            polys.append([float(v) for v in poly])
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        return rle["counts"].decode("ascii")
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError("segmentation must be a polygon list or an RLE object with 'size' and 'counts'")
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and [int(v) for v in size] == [height, width]):
        raise ValueError(f"RLE size {size} does not match the image (height {height}, width {width})")
    counts = seg["counts"]
    if isinstance(counts, list):
        problem = check_runs(counts, height, width)
        if problem:
            raise ValueError(f"uncompressed RLE: {problem}")
        return mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]},
                                      height, width)["counts"].decode("ascii")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise ValueError("RLE counts must be a string (compressed) or a list of integers (uncompressed)")
    problem = check_runs(counts_from_string(counts), height, width)
    if problem:
        raise ValueError(f"compressed RLE: {problem}")
    return counts


def decode_counts(counts: str, height: int, width: int) -> np.ndarray:
    """Compressed RLE counts (checked ones: from :func:`segmentation_to_counts` or pycocotools' encoder) ->
    boolean ``(height, width)`` mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> boolean ``(height, width)`` mask, checked first (ValueError says why not)."""
    return decode_counts(segmentation_to_counts(seg, height, width), height, width)
