"""Anomaly maps and image scores of APRIL-GAN, as released (METHOD §4, §5).

Zero-shot, per stage n (text features T [D, 2], column 1 = abnormal):
    logits_n = 100 * normalize(fc_n(tokens_n)) @ T             [B, h*w, 2] -> [B, 2, h, w]
    map_n    = softmax(upsample(logits_n, S, bilinear, align_corners=True), over 2)[:, 1]
    M        = sum_n map_n                                       in [0, #stages]
Image score: softmax(100 * f_img @ T)[1] with f_img the L2-normalised image embedding (a fixed
100, not the model's logit scale).

Few-shot, per stage n with memory bank B_n [M, C] of raw reference tokens:
    d_n = 1 - max_m cos(token, B_n[m])  -> [B, 1, h, w] -> upsample (align_corners=True)
    M_f = sum_n d_n;  final map = M + M_f
Few-shot image score (as released, transductive): 0.5 * (text + minmax_category(max(final map))).
Per-image few-shot score (ours): 0.5 * (text + clip((max(final map) - mu) / mu, 0, 1)), mu the
normal level of the references (``per_image_scores``).

The same formulas in words, as the result files quote them, are in ``models.formulas``.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0


def token_grid(num_tokens: int) -> int:
    """Side h of the square grid of ``num_tokens`` patch tokens (h = sqrt(L), checked)."""
    h = int(math.isqrt(num_tokens))
    if h * h != num_tokens:
        raise ValueError(f"{num_tokens} patch tokens do not form a square grid")
    return h


def stage_logits(projected: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Patch-resolution logits of one stage.

    Args:
        projected: [B, L, D] projected patch tokens (not yet normalised).
        text: [D, 2] or [B, D, 2] text features.

    Returns:
        [B, 2, h, h] logits = 100 * normalize(projected) @ text, tokens read row-major.
    """
    p = projected / projected.norm(dim=-1, keepdim=True)
    logits = LOGIT_SCALE * p @ text  # [B, L, 2]
    b, l, c = logits.shape
    h = token_grid(l)
    return logits.permute(0, 2, 1).reshape(b, c, h, h)  # [B, 2, h, h]


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, S, S], bilinear with align_corners=True (as released)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def stage_probabilities(logits: Sequence[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Per stage [B, 2, h, h] logits -> [B, 2, S, S] probabilities: upsample, then softmax.

    Training uses both channels (METHOD §6); the maps use channel 1 (``zero_shot_map``).
    """
    return [torch.softmax(upsample(l.float(), size), dim=1) for l in logits]


def zero_shot_map(logits: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Sum over stages of the abnormal-channel probability: [B, S, S] in [0, #stages]."""
    out = None
    for p in stage_probabilities(logits, size):
        out = p[:, 1] if out is None else out + p[:, 1]
    return out


def image_scores(image_embed: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[B, D] normalised embeddings, [D, 2] or [B, D, 2] text -> [B] abnormal probability."""
    if text.dim() == 2:
        logits = LOGIT_SCALE * image_embed @ text  # [B, 2]
    else:
        logits = LOGIT_SCALE * torch.einsum("bd,bdk->bk", image_embed, text)
    return logits.softmax(dim=-1)[:, 1]


def nearest_distance(tokens: torch.Tensor, bank: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """1 - max cosine similarity of each token to a memory bank, at patch resolution.

    Both sides are L2-normalised here (the bank one chunk at a time), so the bank may hold the
    raw reference tokens.

    Args:
        tokens: [B, L, C] raw patch tokens of test images.
        bank: [M, C] raw (or already normalised) reference tokens.
        chunk: bank rows per matrix product (bounds memory at B*L*chunk floats).

    Returns:
        [B, 1, h, h] distances in [0, 2].
    """
    t = F.normalize(tokens.float(), dim=-1)
    best = None
    for start in range(0, bank.shape[0], chunk):
        rows = F.normalize(bank[start:start + chunk].float(), dim=-1)  # [m, C]
        sim = (t @ rows.T).amax(dim=-1)  # [B, L]
        best = sim if best is None else torch.maximum(best, sim)
    b, l = best.shape
    h = token_grid(l)
    return (1.0 - best).reshape(b, 1, h, h)


def few_shot_map(distances: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Sum over stages of upsampled [B, 1, h, h] distances -> [B, S, S]."""
    out = None
    for d in distances:
        m = upsample(d.float(), size)[:, 0]
        out = m if out is None else out + m
    return out


def zero_shot_maps(logits: Sequence[torch.Tensor], size: int, device: torch.device,
                   chunk: int = 16) -> torch.Tensor:
    """[N, S, S] float32 zero-shot maps on ``device``, built ``chunk`` images at a time."""
    n = logits[0].shape[0]
    out = torch.empty((n, size, size), dtype=torch.float32, device=device)
    for a in range(0, n, chunk):
        out[a:a + chunk] = zero_shot_map([l[a:a + chunk].to(device) for l in logits], size)
    return out


def final_maps(zero_shot: torch.Tensor, distances: Sequence[torch.Tensor] | None, size: int,
               chunk: int = 16) -> torch.Tensor:
    """[N, S, S] float32: the zero-shot maps plus (few-shot) the upsampled memory distances."""
    if not distances:
        return zero_shot
    out = torch.empty_like(zero_shot)
    for a in range(0, zero_shot.shape[0], chunk):
        out[a:a + chunk] = zero_shot[a:a + chunk] + few_shot_map(
            [d[a:a + chunk].to(zero_shot.device) for d in distances], size)
    return out


def combined_image_scores(text_scores: np.ndarray, maps_max: np.ndarray) -> np.ndarray:
    """Few-shot image score of one category: 0.5 * (text + minmax(max of each final map)).

    If every map has the same maximum, the map term is 0 (with a warning) instead of NaN.
    """
    lo, hi = float(np.min(maps_max)), float(np.max(maps_max))
    if hi > lo:
        norm = (maps_max - lo) / (hi - lo)
    else:
        warnings.warn("all anomaly maps of the category share one maximum: map term set to 0")
        norm = np.zeros_like(maps_max)
    return 0.5 * (np.asarray(text_scores, dtype=np.float64) + norm)


def per_image_scores(text_scores: np.ndarray, maps_max: np.ndarray, normal_level: float) -> np.ndarray:
    """Per-image few-shot score: depends only on the image, the references and the model.

        s     = clip((max(M) - mu) / mu, 0, 1)
        score = 0.5 * (text score + s)

    ``mu`` (``normal_level``) is the map maximum a normal image reaches: the mean, over the
    distinct reference images, of the maximum of each one's final map against a bank of the
    other references (leave-one-out; all copies of an image left out). s is how far a map's
    peak rises above that normal peak, as a fraction of it: 0 for a normal-looking image, 1 at
    twice the normal peak. With one distinct reference there is no other image to build a bank
    from, so mu is that reference's zero-shot map maximum (its few-shot term against itself is
    0); normal images then sit a little above s = 0, but each score still depends on the image
    alone. Same range [0, 1] and the same 0.5 weighting as the released score.

    Args:
        text_scores: [N] text scores.
        maps_max: [N] maxima of the final maps.
        normal_level: mu > 0.

    Returns:
        [N] float64 scores.
    """
    return per_image_score(np.asarray(text_scores, dtype=np.float64),
                           np.asarray(maps_max, dtype=np.float64), normal_level)


def per_image_score(text_score, map_max, normal_level: float):
    """``per_image_scores``' formula on numpy arrays or torch tensors alike (the exported graph
    computes it with this function on its float32 tensors): 0.5 * (text + clip((max - mu) / mu,
    0, 1)), mu at least 1e-12."""
    mu = max(float(normal_level), 1e-12)
    return 0.5 * (text_score + ((map_max - mu) / mu).clip(0.0, 1.0))
