"""The field's click simulator (RITM ``Clicker``; SimpleClick, SegNext, MIS and MST use it unchanged).

The next click goes to the interior-most pixel of the larger error region: false negatives (missed object)
give a positive click, false positives a negative one. Deterministic: the same prediction gives the same click.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from ..errors import IsegError
from ..masks import interior_distance
from ..prompts import Click


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: Optional[np.ndarray] = None,
    clicked: Optional[Iterable[Click]] = None,
) -> Optional[Click]:
    """The standard next click for prediction ``pred`` of object ``gt`` (both bool ``(H, W)``).

    ``ignore`` pixels (e.g. GrabCut's unknown band) belong to neither error map; ``clicked`` pixels are never
    chosen again. Positive iff the largest false-negative distance exceeds the largest false-positive one (a
    tie gives a negative click); the click is the first pixel in raster order at that maximum. Returns
    ``None`` when there is no error left to click on.
    """
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise IsegError(f"gt {gt.shape} and pred {pred.shape} must be 2-D masks of one shape")
    valid = ~np.asarray(ignore, bool) if ignore is not None else np.ones_like(gt)
    fn = interior_distance(gt & ~pred & valid)
    fp = interior_distance(~gt & pred & valid)
    for c in clicked or ():
        y, x = int(round(c.y)), int(round(c.x))
        if 0 <= y < gt.shape[0] and 0 <= x < gt.shape[1]:
            fn[y, x] = fp[y, x] = 0
    fn_max, fp_max = float(fn.max()), float(fp.max())
    if fn_max == 0 and fp_max == 0:
        return None
    positive = fn_max > fp_max
    dist = fn if positive else fp
    flat = int(np.argmax(dist == (fn_max if positive else fp_max)))  # first maximum in raster order
    y, x = divmod(flat, gt.shape[1])
    return Click(float(x), float(y), positive=positive)
