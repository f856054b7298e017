"""Masks <-> COCO segmentations: compressed RLE (stored), uncompressed RLE and polygons (import/export).

pycocotools decodes RLE without bounds checks, so every RLE from outside is validated here first: the run
lengths must be non-negative and sum to exactly height x width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True)
class EncodedMask:
    counts: str  # compressed COCO RLE counts
    height: int
    width: int
    area: int
    bbox: Tuple[float, float, float, float]  # x, y, w, h (COCO: pixel-edge coordinates)


def encode_mask(mask: np.ndarray) -> EncodedMask:
    """A boolean / 0-1 ``(H, W)`` mask -> compressed RLE with its area and box."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"a mask must be a non-empty 2-D array, got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(bool, copy=False).astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return EncodedMask(rle["counts"].decode("ascii"), int(m.shape[0]), int(m.shape[1]), int(mask_utils.area(rle)),
                       (x, y, w, h))


def decode_mask(counts: str, height: int, width: int) -> np.ndarray:
    """Compressed RLE counts -> boolean ``(height, width)`` mask (counts must come from ``encode_mask``)."""
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


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


@dataclass
class PolygonResult:
    polygons: List[List[float]]
    holes: int  # holes the polygons cannot keep (they are filled)
    dropped_parts: int  # parts too small to make a polygon (fewer than 3 vertices)
    differing_pixels: int  # pixels where the polygons' raster differs from the mask


def mask_to_polygons(mask: np.ndarray) -> PolygonResult:
    """Outer boundaries of each part as COCO polygons (vertices at boundary pixel centres, as most tools
    write them), and how far that is from the mask: holes are lost, parts under 3 vertices are dropped, and
    rasterising the polygons again misses about half of the boundary pixels."""
    m = np.ascontiguousarray(mask.astype(np.uint8))
    h, w = m.shape
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons: List[List[float]] = []
    holes = dropped = 0
    for k, cnt in enumerate(contours):
        if hierarchy[0][k][3] >= 0:  # has a parent: a hole
            holes += 1
            continue
        pts = cnt.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            dropped += 1
            continue
        polygons.append([float(v) for v in pts.ravel()])
    differing = int(m.sum())
    if polygons:
        raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w)))
        differing = int(np.count_nonzero(raster != m))
    return PolygonResult(polygons, holes, dropped, differing)
