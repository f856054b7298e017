"""Losses for interactive segmentation: RITM's normalized focal loss, soft Dice, SAM's IoU-head loss, and MIS's
bilateral smoothness (for training on pseudo-objects).

All take logits ``(B, H, W)`` (or ``(B, 1, H, W)``), a target of the same size in {0, 1}, and an optional
``valid`` mask (False = ignored pixel, e.g. GrabCut's band); they return a scalar (mean over the batch), or
one value per sample with ``reduction="none"`` (to pick the best of SAM's three candidate masks).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


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


# RGB -> YUV (BT.601 analogue), rows: Y, U, V
_YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.147, -0.289, 0.436], [0.615, -0.515, -0.100]])


def _neighbours(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, 8, H, W)``: each pixel's eight neighbours of a 3x3 window spread by
    ``dilation`` (edges replicated)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (dilation,) * 4, mode="replicate")
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    return torch.stack([padded[:, :, dilation + dy * dilation:dilation + dy * dilation + h,
                               dilation + dx * dilation:dilation + dx * dilation + w] for dy, dx in shifts], 2)


def bilateral_smoothness(logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None,
                         dilation: int = 2, sigma_spatial: float = 16.0, sigma_luma: float = 16.0,
                         sigma_chroma: float = 8.0) -> torch.Tensor:
    """MIS's smoothness term: neighbouring logits (3x3, dilation 2) that differ where the image looks alike cost
    ``exp(-|dp|^2 / 2 sigma_s - dY^2 / 2 sigma_l - |dUV|^2 / 2 sigma_c) * (logit - neighbour)^2`` (the sigmas
    divide as MIS writes them, not squared), averaged. ``logits`` ``(B, H, W)``; ``image`` ``(B, 3, H, W)`` RGB on
    0..255 at the logits' size; ``valid`` ``(B, H, W)``: only pairs of valid pixels count."""
    yuv = torch.einsum("bchw,kc->bkhw", image.float(), _YUV.to(image.device))
    pos = torch.stack(torch.meshgrid(torch.arange(image.shape[-2], device=image.device),
                                     torch.arange(image.shape[-1], device=image.device), indexing="ij")).float()[None]
    d_img = yuv[:, :, None] - _neighbours(yuv, dilation)
    d_pos = pos[:, :, None] - _neighbours(pos, dilation)
    affinity = torch.exp(-d_pos.pow(2).sum(1) / sigma_spatial / 2 - d_img[:, 0].pow(2) / sigma_luma / 2
                         - d_img[:, 1:].pow(2).sum(1) / sigma_chroma / 2)
    x = logits[:, None]
    cost = affinity * (x[:, :, None] - _neighbours(x, dilation))[:, 0].pow(2)
    if valid is None:
        return cost.mean()
    v = valid[:, None].float()
    pair = (v[:, :, None] * _neighbours(v, dilation))[:, 0]
    return (cost * pair).sum() / pair.sum().clamp(min=1)
