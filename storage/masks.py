"""Masks <-> COCO segmentations: compressed RLE (stored) and polygons (export). Segmentations from outside
are checked and decoded by :mod:`iseg_core.masks` (``segmentation_to_counts``), which evaluation readers share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from iseg_core.masks import decode_counts as decode_mask
from iseg_core.masks import segmentation_to_counts

__all__ = ["EncodedMask", "PolygonResult", "decode_mask", "encode_mask", "mask_to_polygons", "segmentation_to_counts"]


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
