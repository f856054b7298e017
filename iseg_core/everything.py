"""Segment everything: proposed objects for an image, made by a SAM-family model, for annotators to accept,
refine or reject instead of drawing every object.

The rules are those of SAM's automatic mask generator (its defaults, one crop layer: the whole image):

- a regular grid of ``points_per_side`` x ``points_per_side`` positive clicks (cell centres), decoded in
  batches of ``points_per_batch``, each click's three multimask candidates kept (``Segmenter.decode_candidates``);
- a candidate is dropped when its predicted IoU is below ``pred_iou_thresh`` (0.88) or its stability score
  (the IoU of its mask thresholded at ``t + offset`` and at ``t - offset``, t the model's threshold, offset
  ``stability_score_offset`` = 1) is below ``stability_score_thresh`` (0.95), or when it is empty;
- overlapping candidates are thinned by non-maximum suppression of their boxes (IoU ``box_nms_thresh`` 0.7),
  the higher predicted IoU winning; at most ``max_proposals`` are kept, best first.

Differences from SAM's generator, said plainly: filtering is done on masks at ``work_side`` px on the long side
(1024 by default; SAM's generator filters at full resolution), the kept masks are then made at full size; no
crop layers and no small-region clean-up (SAM's defaults have neither); the points default to 16 per side
(SAM: 32) because every click costs a decoder run on a CPU (``points_per_side=32`` gives SAM's grid).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torchvision.ops import nms

from .errors import IsegError
from .models.base import ImageEmbedding, Segmenter


@dataclass
class EverythingConfig:
    points_per_side: int = 16
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    max_proposals: int = 100
    work_side: int = 1024


@dataclass
class Proposal:
    mask: np.ndarray  # bool (H, W), the image's size
    score: float  # the model's predicted IoU
    stability: float
    point: Tuple[float, float]  # the grid click that made it
    box: Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def point_grid(n: int, height: int, width: int) -> List[Tuple[float, float]]:
    """SAM's grid: ``n`` x ``n`` cell centres over the image, in pixels (x, y)."""
    c = (np.arange(n) + 0.5) / n
    return [(float(x * width), float(y * height)) for y in c for x in c]


def stability_score(soft: np.ndarray, threshold: float, offset: float) -> float:
    """SAM's stability score: the IoU of the mask at ``threshold + offset`` and at ``threshold - offset`` (the
    first lies inside the second, so it is a ratio of areas); 0 for a mask empty at both."""
    lo = int((soft > threshold - offset).sum())
    return int((soft > threshold + offset).sum()) / lo if lo else 0.0


def _box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def segment_everything(model: Segmenter, embedding: ImageEmbedding, config: Optional[EverythingConfig] = None,
                       progress: Optional[Callable[[int, int], None]] = None) -> List[Proposal]:
    """The proposed objects of the image ``embedding`` was made from (see the module for the rules)."""
    cfg = config or EverythingConfig()
    if not hasattr(model, "decode_candidates"):
        raise IsegError(f"{model.name} cannot propose objects: segment-everything needs a SAM-family model "
                        "(its three candidates per click and their predicted IoU)")
    h, w = embedding.original_size
    s = min(1.0, cfg.work_side / max(h, w))
    work = (max(1, round(h * s)), max(1, round(w * s)))
    t, off = model.default_threshold, cfg.stability_score_offset
    points = point_grid(cfg.points_per_side, h, w)
    kept = []  # (score, stability, point, low-res logits, work mask box)
    for start in range(0, len(points), cfg.points_per_batch):
        batch = points[start:start + cfg.points_per_batch]
        logits, iou = model.decode_candidates(embedding, batch)
        for i, pt in enumerate(batch):
            for k in range(logits.shape[1]):
                score = float(iou[i, k])
                if score < cfg.pred_iou_thresh:
                    continue
                soft = model.upsample_logits(embedding, logits[i, k][None], work)
                stability = stability_score(soft, t, off)
                if stability < cfg.stability_score_thresh:
                    continue
                mask = soft > t
                if not mask.any():
                    continue
                kept.append((score, stability, pt, logits[i, k].clone(), _box(mask)))
        if progress is not None:
            progress(min(start + cfg.points_per_batch, len(points)), len(points))
    if not kept:
        return []
    boxes = torch.tensor([k[4] for k in kept], dtype=torch.float32)
    order = nms(boxes, torch.tensor([k[0] for k in kept]), cfg.box_nms_thresh)[: cfg.max_proposals]
    out = []
    for j in order.tolist():
        score, stability, pt, low, _ = kept[j]
        mask = model.upsample_logits(embedding, low[None], (h, w)) > t
        if mask.any():
            out.append(Proposal(mask, score, stability, pt, _box(mask)))
    return out
