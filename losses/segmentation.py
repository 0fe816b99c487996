"""Segmentation losses of APRIL-GAN training, exactly as released (METHOD §6).

APRIL-GAN (Chen et al., 2023, arXiv:2305.17382) trains the per-stage linear projections with
the sum over stages n of a focal loss and a binary Dice loss on the stage's probability map
P_n = softmax(upsample(logits_n, S)) [B, 2, S, S]:

    L = sum_n [ Focal(P_n, g) + Dice(P_n[:, 1], g) ]        g: [B, S, S] 0/1 mask

Both losses take probabilities, not logits (the released FocalLoss runs with apply_nonlin=None).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

FOCAL_GAMMA = 2.0
FOCAL_SMOOTH = 1e-5
DICE_SMOOTH = 1.0


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA,
               smooth: float = FOCAL_SMOOTH) -> torch.Tensor:
    """Focal loss on class probabilities (released ``FocalLoss()``: alpha 1, gamma 2).

    With M = B*H*W pixels, C classes, y the one-hot target clamped to [s/(C-1), 1-s]:

        p_t  = sum_c y_c * p_c + s
        loss = mean_pixels( -(1 - p_t)^gamma * log(p_t) )

    Args:
        probs: [B, C, H, W] probabilities (softmax over C already applied).
        target: [B, H, W] (or [B, 1, H, W]) integer class per pixel (0/1 masks as float work).

    Returns:
        Scalar loss.
    """
    n, c = probs.shape[:2]
    logit = probs.reshape(n, c, -1).permute(0, 2, 1).reshape(-1, c)  # [M, C], pixel-major
    idx = target.reshape(-1, 1).long()  # [M, 1]
    one_hot = torch.zeros(idx.shape[0], c, dtype=logit.dtype, device=logit.device)
    one_hot = one_hot.scatter_(1, idx, 1)
    one_hot = torch.clamp(one_hot, smooth / (c - 1), 1.0 - smooth)
    pt = (one_hot * logit).sum(1) + smooth  # [M]
    logpt = pt.log()
    return (-1 * torch.pow(1 - pt, gamma) * logpt).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Binary Dice loss, per image then averaged (released ``BinaryDiceLoss``).

        dice_b = (2 * sum(p_b * g_b) + 1) / (sum(p_b) + sum(g_b) + 1)
        loss   = 1 - mean_b dice_b

    Args:
        prob: [B, H, W] abnormal-class probability.
        target: [B, H, W] 0/1 mask.

    Returns:
        Scalar loss.
    """
    n = target.size(0)
    i = prob.reshape(n, -1)  # [B, H*W]
    t = target.reshape(n, -1).to(i.dtype)
    dice = (2 * (i * t).sum(1) + smooth) / (i.sum(1) + t.sum(1) + smooth)  # [B]
    return 1 - dice.sum() / n


class FocalLoss(nn.Module):
    """Module form of ``focal_loss`` (the released class name and defaults)."""

    def __init__(self, gamma: float = FOCAL_GAMMA, smooth: float = FOCAL_SMOOTH):
        super().__init__()
        self.gamma, self.smooth = gamma, smooth

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(probs, target, self.gamma, self.smooth)


class BinaryDiceLoss(nn.Module):
    """Module form of ``dice_loss`` (the released class name and defaults)."""

    def __init__(self, smooth: float = DICE_SMOOTH):
        super().__init__()
        self.smooth = smooth

    def forward(self, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(prob, target, self.smooth)


def segmentation_loss(stage_probs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """APRIL-GAN training loss: sum over stages of focal(P_n, g) + dice(P_n[:, 1], g).

    Args:
        stage_probs: per stage [B, 2, S, S] probabilities (``stage_probabilities``).
        target: [B, S, S] 0/1 mask (keep the batch dimension, also at B = 1).

    Returns:
        Scalar loss.
    """
    if target.dim() != 3:
        raise ValueError(f"target must be [B, S, S], got shape {list(target.shape)}")
    loss = 0
    for p in stage_probs:
        if p.shape[0] != target.shape[0] or p.shape[2:] != target.shape[1:]:
            raise ValueError(f"probabilities {list(p.shape)} do not match target {list(target.shape)}")
        loss = loss + focal_loss(p, target) + dice_loss(p[:, 1], target)
    return loss
