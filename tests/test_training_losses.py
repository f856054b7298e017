"""The training losses on small hand-made cases."""
import math

import torch

from training.losses import dice_loss, iou_head_loss, normalized_focal_loss


def test_normalized_focal_loss_by_hand_and_ordering():
    logits = torch.tensor([[[0.0, 2.0]]])  # p = 0.5, 0.881
    target = torch.tensor([[[1.0, 0.0]]])
    p = [0.5, 1 / (1 + math.exp(-2.0))]
    pt = [p[0], 1 - p[1]]
    beta = [(1 - q) ** 2 for q in pt]
    scale = 2 / sum(beta)
    expected = sum(-0.5 * b * scale * math.log(q) for b, q in zip(beta, pt)) / 2
    assert abs(normalized_focal_loss(logits, target).item() - expected) < 1e-6

    target = torch.zeros(2, 16, 16)
    target[:, 4:12, 4:12] = 1
    good = (target * 2 - 1) * 4.0
    bad = -good
    assert normalized_focal_loss(good, target) < normalized_focal_loss(bad, target)
    assert dice_loss(good, target) < 0.05 < 0.9 < dice_loss(bad, target)


def test_ignored_pixels_do_not_count_and_gradients_flow():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 3.0
    wrong = logits.clone()
    wrong[0, 0, :] = 10.0  # confidently wrong on a row...
    valid = torch.ones(1, 8, 8)
    valid[0, 0, :] = 0  # ...that is ignored
    assert abs(normalized_focal_loss(wrong, target, valid) - normalized_focal_loss(logits, target, valid)) < 1e-6
    assert abs(dice_loss(wrong, target, valid) - dice_loss(logits, target, valid)) < 1e-6
    x = torch.zeros(1, 8, 8, requires_grad=True)
    (normalized_focal_loss(x, target) + dice_loss(x, target)).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 3, 3] < 0 < x.grad[0, 0, 0]


def test_iou_head_loss_targets_the_real_iou():
    target = torch.zeros(1, 10, 10)
    target[0, :, :5] = 1
    logits = torch.full((1, 10, 10), -5.0)
    logits[0, :, :4] = 5.0  # IoU = 40 / 50 = 0.8
    assert iou_head_loss(torch.tensor([0.8]), logits, target).item() < 1e-10
    assert abs(iou_head_loss(torch.tensor([0.5]), logits, target).item() - 0.09) < 1e-6
