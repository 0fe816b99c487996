"""Per-region overlap (PRO) metrics for anomaly segmentation.

PRO (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021, eq. for the
per-region overlap) averages, over every connected ground-truth region, the fraction
of the region's pixels predicted anomalous. Two integrals of PRO against the false
positive rate (FPR) are provided and must never be mixed up (METHOD §7):

* :func:`pro` -- APRIL-GAN's released ``cal_pro_score`` (reported as ``pro``; the
  released log calls it ``aupro``): a 200-step threshold grid, points with FPR < 0.3,
  FPRs min-max rescaled to [0, 1], sklearn ``auc``.
* :func:`mvtec_aupro` -- the MVTec AD benchmark's AU-PRO: every distinct score a
  threshold, exact trapezoid up to FPR 0.3 with linear interpolation there, / 0.3.

Both come from one value sort of the maps and integer counts (:mod:`metrics.counting`,
numpy or torch); :func:`metrics.category_metrics` shares that sort with the other pixel
metrics. :func:`pro_reference` is the released loop kept verbatim (slow) for testing
(:mod:`metrics.reference`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .category import pixel_metrics
from .reference import _count_below, _thresholds, pro_reference
from .regions import MaskRegions

if TYPE_CHECKING:
    import torch

__all__ = ["pro", "pro_reference", "mvtec_aupro", "_count_below", "_thresholds"]


def pro(
    masks: Any,
    maps: Any,
    max_step: int = 200,
    expect_fpr: float = 0.3,
    *,
    device: str | torch.device | None = None,
    regions: MaskRegions | None = None,
    backend: str | None = None,
) -> float:
    """APRIL-GAN's PRO score (released ``cal_pro_score``), bit-equal to the released loop.

    Thresholds ``th_j = np.arange(min, max, (max - min) / max_step)`` (j < T, T = 200 or 201
    after rounding; same dtype as ``maps``); a pixel is positive at ``th_j`` iff
    ``map > th_j``. With regions ``r`` = 8-connected components of each image's mask,
    pooled over all images in the released order:

        PRO(th) = mean_r |{p in r : map_p > th}| / |r|,
        FPR(th) = |{p normal : map_p > th}| / |{p normal}|.

    Points with FPR < ``expect_fpr`` are kept, their FPRs min-max rescaled to [0, 1], and
    the result is ``sklearn.metrics.auc(FPR_rescaled, PRO)``. Counts: ``#normal > th_j`` by
    ``searchsorted`` in the sorted maps; per region, a histogram of ``#{j : th_j < map_p}``
    over its pixels (:mod:`metrics.counting`); the float64 arithmetic follows the loop's
    order (:func:`metrics.curves.pro_from_grid`).

    Args:
        masks: (N, H, W) binary ground truth (0/1 or bool), numpy or torch.
        maps: (N, H, W) anomaly maps (float32 as released; float16/64 used as-is).
        max_step: number of grid steps (200 as released).
        expect_fpr: FPR limit (0.3 as released), strict.
        device, regions, backend: as :func:`metrics.category_metrics`.

    Returns:
        The PRO score in [0, 1]. NaN with a ``RuntimeWarning`` where the released code
        crashes or is undefined: no anomalous region, no normal pixel, constant maps,
        fewer than two kept thresholds, or all kept thresholds with the same FPR.

    Raises:
        ValueError: on shape mismatch, non-[N,H,W] input, empty input, a non-binary mask,
            or non-finite maps.
    """
    out, _ = pixel_metrics(
        masks, maps, rank=False, pro_steps=max_step, expect_fpr=expect_fpr, aupro_limit=None,
        device=device, regions=regions, backend=backend,
    )
    return out["pro"]


def mvtec_aupro(
    masks: Any,
    maps: Any,
    fpr_limit: float = 0.3,
    *,
    device: str | torch.device | None = None,
    regions: MaskRegions | None = None,
    backend: str | None = None,
) -> float:
    """The MVTec AD benchmark's AU-PRO (not APRIL-GAN's ``pro``).

    Every distinct score ``t`` is a threshold (positive iff ``map >= t``); regions are
    8-connected; ``PRO(t)`` and ``FPR(t)`` are as in :func:`pro`. The curve
    ``(0, 0), (FPR(t), PRO(t)) for t descending, (1, 1)`` is integrated with the exact
    trapezoid rule up to ``FPR = fpr_limit`` (interpolated linearly there) and divided
    by ``fpr_limit``. PRO only changes at anomalous pixels' scores, so two points per
    distinct anomalous score trace the same curve (:func:`metrics.curves.mvtec_aupro_from_counts`).

    Args:
        masks: (N, H, W) binary ground truth.
        maps: (N, H, W) anomaly maps.
        fpr_limit: upper FPR integration limit in (0, 1].
        device, regions, backend: as :func:`metrics.category_metrics`.

    Returns:
        Normalised AU-PRO in [0, 1]; NaN with a ``RuntimeWarning`` when there is no
        anomalous region or no normal pixel.

    Raises:
        ValueError: on shape mismatch, non-[N,H,W] or empty input, a non-binary mask,
            non-finite maps, or ``fpr_limit`` outside (0, 1].
    """
    out, _ = pixel_metrics(
        masks, maps, rank=False, pro_steps=None, aupro_limit=fpr_limit,
        device=device, regions=regions, backend=backend,
    )
    return out["mvtec_aupro"]
