"""Losses for interactive segmentation: RITM's normalized focal loss, soft Dice, and SAM's IoU-head loss.

All take logits ``(B, H, W)`` (or ``(B, 1, H, W)``), a target of the same size in {0, 1}, and an optional
``valid`` mask (False = ignored pixel, e.g. GrabCut's band); they return a scalar (mean over the batch), or
one value per sample with ``reduction="none"`` (to pick the best of SAM's three candidate masks).
"""
from __future__ import annotations

from typing import Optional

import torch


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).float()


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean()


def normalized_focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None,
                          alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-8,
                          reduction: str = "mean") -> torch.Tensor:
    """Focal loss whose focal weights are rescaled to sum to the number of valid pixels (per sample), so the
    loss keeps its scale as the prediction improves and hard pixels dominate (RITM's NFL)."""
    x, y = _flat(logits), _flat(target) > 0.5
    v = _flat(valid) > 0.5 if valid is not None else torch.ones_like(y)
    p = torch.sigmoid(x)
    pt = torch.where(y, p, 1 - p)
    a = torch.where(y, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    beta = (1 - pt) ** gamma * v
    scale = (v.sum(1, keepdim=True) / (beta.sum(1, keepdim=True) + eps)).detach()
    loss = -a * beta * scale * torch.log(pt.clamp_min(eps))
    return _reduce(loss.sum(1) / v.sum(1).clamp_min(1), reduction)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None,
              smooth: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    p, y = torch.sigmoid(_flat(logits)), (_flat(target) > 0.5).float()
    if valid is not None:
        v = (_flat(valid) > 0.5).float()
        p, y = p * v, y * v
    inter = (p * y).sum(1)
    return _reduce(1 - (2 * inter + smooth) / (p.sum(1) + y.sum(1) + smooth), reduction)


def iou_head_loss(predicted_iou: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                  valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between the model's predicted IoU and the IoU its thresholded mask really has (SAM's IoU head)."""
    return torch.mean((predicted_iou.reshape(-1).float() - hard_iou(logits, target, valid)) ** 2)


@torch.no_grad()
def hard_iou(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per sample: IoU of the mask ``logits > 0`` with the target over the valid pixels (1 when both are empty)."""
    m, y = (_flat(logits) > 0).float(), (_flat(target) > 0.5).float()
    if valid is not None:
        v = (_flat(valid) > 0.5).float()
        m, y = m * v, y * v
    inter, union = (m * y).sum(1), ((m + y) > 0).float().sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
