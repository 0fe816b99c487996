"""Tests for losses/: the released focal and binary Dice losses on hand-worked cases."""
from __future__ import annotations

import math

import pytest
import torch

from losses import BinaryDiceLoss, FocalLoss, dice_loss, focal_loss, segmentation_loss


def _pixel_focal(p1: float, y: int, gamma: float = 2.0, s: float = 1e-5) -> float:
    """Focal loss of one 2-class pixel with abnormal probability p1, worked by hand."""
    onehot = [1 - s, s] if y == 0 else [s, 1 - s]  # clamp(one_hot, s/(C-1), 1-s), C = 2
    pt = onehot[0] * (1 - p1) + onehot[1] * p1 + s
    return -((1 - pt) ** gamma) * math.log(pt)


def _probs(p1: list[list[float]]) -> torch.Tensor:
    """[H, W] abnormal probabilities -> [1, 2, H, W] (channel 0 = 1 - p)."""
    a = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([1 - a, a])[None]


def test_focal_single_pixel():
    probs = _probs([[0.8]])
    assert focal_loss(probs, torch.ones(1, 1, 1)).item() == pytest.approx(_pixel_focal(0.8, 1), rel=1e-12)
    assert focal_loss(probs, torch.zeros(1, 1, 1)).item() == pytest.approx(_pixel_focal(0.8, 0), rel=1e-12)
    # pt = 0.8 (approximately): (0.2)^2 * -log(0.8) = 0.0089257...
    assert focal_loss(probs, torch.ones(1, 1, 1)).item() == pytest.approx(0.04 * -math.log(0.8), rel=1e-3)


def test_focal_is_mean_over_all_pixels_and_images():
    p = [[0.1, 0.9], [0.6, 0.3]]
    y = [[0, 1], [1, 0]]
    probs = torch.cat([_probs(p), _probs([[0.5, 0.5], [0.5, 0.5]])])  # [2, 2, 2, 2]
    target = torch.tensor([y, [[1, 1], [0, 0]]], dtype=torch.float64)
    hand = [_pixel_focal(p[i][j], y[i][j]) for i in range(2) for j in range(2)]
    hand += [_pixel_focal(0.5, v) for v in (1, 1, 0, 0)]
    assert focal_loss(probs, target).item() == pytest.approx(sum(hand) / 8, rel=1e-12)
    assert FocalLoss()(probs, target).item() == focal_loss(probs, target).item()


def test_focal_confident_and_wrong():
    right = focal_loss(_probs([[1.0]]), torch.ones(1, 1, 1)).item()
    wrong = focal_loss(_probs([[0.0]]), torch.ones(1, 1, 1)).item()
    assert right == pytest.approx(_pixel_focal(1.0, 1), rel=1e-9) and right < 1e-9
    assert wrong == pytest.approx(_pixel_focal(0.0, 1), rel=1e-9) and wrong > 10  # -log(2e-5)


def test_dice_hand_cases():
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert dice_loss(t.clone(), t).item() == pytest.approx(0.0)  # (2*1+1)/(1+1+1) = 1
    half = torch.full((1, 2, 2), 0.5)
    assert dice_loss(half, t).item() == pytest.approx(0.5)  # (2*0.5+1)/(2+1+1) = 0.5
    zero_mask = torch.zeros(1, 2, 2)
    assert dice_loss(half, zero_mask).item() == pytest.approx(2 / 3)  # 1 - 1/(2+0+1)
    both = dice_loss(torch.cat([half, half]), torch.cat([t, zero_mask])).item()
    assert both == pytest.approx(1 - (0.5 + 1 / 3) / 2)  # per image, then averaged
    assert BinaryDiceLoss()(half, t).item() == dice_loss(half, t).item()


def test_segmentation_loss_sums_stages_and_keeps_batch_of_one():
    torch.manual_seed(0)
    stages = [torch.softmax(torch.randn(1, 2, 6, 6), dim=1) for _ in range(3)]
    gt = (torch.rand(1, 6, 6) > 0.7).float()
    want = sum(focal_loss(p, gt) + dice_loss(p[:, 1], gt) for p in stages)
    assert segmentation_loss(stages, gt).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B, S, S\]"):
        segmentation_loss(stages, gt[0])  # the released .squeeze() would drop B here
    with pytest.raises(ValueError, match="do not match"):
        segmentation_loss(stages, torch.zeros(1, 5, 5))


def test_losses_are_differentiable():
    probs = _probs([[0.3, 0.7], [0.2, 0.9]]).requires_grad_(True)
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: focal_loss(p, target), (probs,))
    assert torch.autograd.gradcheck(lambda p: dice_loss(p[:, 1], target), (probs,))
