"""Metrics of the interactive segmentation protocol: IoU with ignore pixels, boundary IoU, NoC, NoF, mIoU@k."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np


def iou(gt: np.ndarray, pred: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """Intersection over union of two bool masks, both restricted to pixels that are not ``ignore``d.
    Two empty masks agree perfectly (1.0)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if ignore is not None:
        valid = ~np.asarray(ignore, bool)
        gt, pred = gt & valid, pred & valid
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def boundary_band(mask: np.ndarray, ratio: float) -> np.ndarray:
    """Pixels of ``mask`` within ``d = max(1, round(ratio * image diagonal))`` of its edge (the image border
    counts as edge): ``mask`` minus its erosion by a 3x3 kernel ``d`` times."""
    h, w = mask.shape
    d = max(1, int(round(ratio * np.hypot(h, w))))
    padded = np.pad(np.asarray(mask, np.uint8), 1)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return np.asarray(mask, bool) & ~eroded.astype(bool)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, ignore: Optional[np.ndarray] = None, ratio: float = 0.005) -> float:
    """IoU of the boundary bands of ``gt`` and ``pred`` (SAIC-IS uses ``ratio`` 0.005; Boundary IoU and
    HQ-SAM 0.02)."""
    return iou(boundary_band(gt, ratio), boundary_band(pred, ratio), ignore)


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Clicks needed to reach ``threshold``: 1 + index of the first IoU at or above it, else ``max_clicks``."""
    for i, v in enumerate(ious[:max_clicks]):
        if v >= threshold:
            return i + 1
    return max_clicks


def summarize(per_object_ious: Sequence[Sequence[float]], max_clicks: int = 20,
              thresholds: Sequence[float] = (0.85, 0.90, 0.95), miou_at: Sequence[int] = (1, 5)) -> dict:
    """The protocol's table row from per-object IoU-after-each-click lists.

    NoC@t is the mean of :func:`noc`; NoF@t counts objects with NoC == ``max_clicks`` (as RITM does, an
    object that reaches t exactly at the last click counts as a failure too). mIoU@k is the mean IoU after
    click k; a run that stopped early (target reached) keeps its last IoU for the later clicks.
    """
    if not per_object_ious:
        raise ValueError("no objects to summarize")
    out = {"objects": len(per_object_ious)}
    for t in thresholds:
        counts = np.array([noc(ious, t, max_clicks) for ious in per_object_ious])
        key = f"{round(t * 100)}"
        out[f"NoC@{key}"] = float(counts.mean())
        out[f"NoF@{key}"] = int((counts == max_clicks).sum())
    for k in miou_at:
        out[f"mIoU@{k}"] = float(np.mean([ious[min(k, len(ious)) - 1] for ious in per_object_ious]))
    return out
