"""The metric algorithms as they were before the counts rewrite, kept to test and time it.

* :func:`pro_reference` -- the released ``cal_pro_score`` loop, verbatim (very slow);
* :func:`pro_onepass` -- the one-pass histogram version of it (bit-equal to the loop);
* :func:`mvtec_aupro_partition` -- the MVTec AU-PRO by ``np.partition`` + ``argsort``;
* :func:`category_metrics_reference` -- the former ``category_metrics``: an ``argsort``
  of all pixels (:func:`metrics.classification.classification_metrics`, which follows
  scikit-learn step by step) plus the two functions above.

The fast code of :mod:`metrics.category` must give the same values (tests, and
``scripts/benchmark_metrics.py``).
"""

from __future__ import annotations

import numpy as np
from skimage import measure

from .classification import classification_metrics, validate_binary
from .curves import auc_kept as _auc_kept
from .curves import threshold_grid
from .curves import trapezoid_to as _trapezoid_to
from .curves import undefined as _undefined

__all__ = [
    "category_metrics_reference",
    "mvtec_aupro_partition",
    "pro_onepass",
    "pro_reference",
]


def _check(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates ``masks`` (N,H,W) 0/1 and ``maps`` (N,H,W) finite reals; returns (bool, float)."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"shape mismatch: masks {masks.shape} vs maps {maps.shape}")
    if masks.ndim != 3:
        raise ValueError(f"masks and maps must be [N, H, W], got shape {masks.shape}")
    masks = validate_binary(masks, "masks")  # (N,H,W) bool
    if not np.issubdtype(maps.dtype, np.floating):
        if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
            raise ValueError(f"maps must be real numbers, got dtype {maps.dtype}")
        maps = maps.astype(np.float64)
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps contain NaN or infinite values")
    return masks, maps


def _thresholds(maps: np.ndarray, max_step: int) -> np.ndarray:
    """The released grid: ``np.arange(min, max, (max - min) / max_step)`` in the maps' dtype."""
    return threshold_grid(maps.min(), maps.max(), max_step)


def pro_reference(
    masks: np.ndarray, maps: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3
) -> float:
    """The released ``cal_pro_score`` loop (slow: relabels every mask at every threshold).

    Same arguments, result and edge cases as :func:`pro`; used to test it.
    """
    masks, amaps = _check(masks, maps)
    masks = masks.astype(np.uint8)
    if not masks.any():
        return _undefined("no anomalous ground-truth region")
    if masks.all():
        return _undefined("no normal pixel")
    if amaps.min() == amaps.max():
        return _undefined("constant maps give an empty threshold grid")
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    pros, fprs = [], []
    for th in _thresholds(amaps, max_step):
        binary_amaps[amaps <= th], binary_amaps[amaps > th] = 0, 1
        pro_th = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                tp_pixels = binary_amap[region.coords[:, 0], region.coords[:, 1]].sum()
                pro_th.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fp_pixels = np.logical_and(inverse_masks, binary_amaps).sum()
        fprs.append(fp_pixels / inverse_masks.sum())
        pros.append(np.array(pro_th).mean())
    return _auc_kept(np.array(pros), np.array(fprs), expect_fpr)


def _count_below(th: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``k = #{j : th_j < v}`` per value, i.e. ``np.searchsorted(th, values, side="left")``.

    ``th`` is the arange grid ``th_j ~ th_0 + j * step``, so ``ceil((v - th_0) / step)`` is
    almost always right; every guess is verified exactly against ``th`` (in ``th``'s dtype)
    and the few wrong ones are redone with ``np.searchsorted``. Several times faster.
    """
    n = th.size
    step = (th[-1] - th[0]) / (n - 1) if n > 1 else 0
    inv = 1 / step if step > 0 else np.inf
    if not np.isfinite(inv):
        return np.searchsorted(th, values, side="left")
    guess = (values - th[0]) * values.dtype.type(inv)  # (P,) approx. index in the maps' dtype
    np.ceil(guess, out=guess)
    np.clip(guess, 0, n, out=guess)
    k = guess.astype(np.intp)  # (P,)
    ext = np.concatenate(([-np.inf], th, [np.inf])).astype(th.dtype)  # (T+2,) ext[k] = th[k-1]
    wrong = ~((ext[k] < values) & (ext[k + 1] >= values))  # (P,) th[k-1] < v <= th[k] fails
    if wrong.any():
        k[wrong] = np.searchsorted(th, values[wrong], side="left")
    return k


def pro_onepass(
    masks: np.ndarray, maps: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3
) -> float:
    """APRIL-GAN's PRO score (released ``cal_pro_score``) in one pass, as before the counts rewrite.

    Thresholds ``th_j = np.arange(min, max, (max - min) / max_step)`` (j < T, T = 200 or 201
    after rounding; same dtype as ``maps``); a pixel is positive at ``th_j`` iff
    ``map > th_j``. With regions ``r`` = 8-connected components of each image's mask
    (``skimage.measure.label``), pooled over all images:

        PRO(th) = mean_r |{p in r : map_p > th}| / |r|,
        FPR(th) = |{p normal : map_p > th}| / |{p normal}|.

    Points with FPR < ``expect_fpr`` are kept, their FPRs min-max rescaled to [0, 1], and
    the result is ``sklearn.metrics.auc(FPR_rescaled, PRO)``.

    Instead of thresholding T times, each pixel's count of thresholds below it,
    ``k_p = #{j : th_j < map_p}`` (``np.searchsorted(th, map, side="left")``, exact in the
    maps' dtype), is computed once; per-region and normal-pixel histograms of ``k``
    followed by suffix sums give every threshold's counts. Region order and the
    summation order of the mean follow the loop, so the value matches it bit for bit.
    Time O(P) (see ``_count_below``), extra memory O(H W + R T) (one image at a time).

    Args:
        masks: (N, H, W) binary ground truth (0/1 or bool).
        maps: (N, H, W) anomaly maps (float32 as released; other floats are used as-is).
        max_step: number of grid steps (200 as released).
        expect_fpr: FPR limit (0.3 as released), strict.

    Returns:
        The PRO score in [0, 1]. NaN with a ``RuntimeWarning`` where the released code
        crashes or is undefined: no anomalous region, no normal pixel, constant maps,
        fewer than two kept thresholds, or all kept thresholds with the same FPR.

    Raises:
        ValueError: on shape mismatch, non-[N,H,W] input, empty input, a non-binary mask,
            or non-finite maps.
    """
    masks, maps = _check(masks, maps)
    if not masks.any():
        return _undefined("no anomalous ground-truth region")
    if masks.all():
        return _undefined("no normal pixel")
    if maps.min() == maps.max():
        return _undefined("constant maps give an empty threshold grid")
    th = _thresholds(maps, max_step)  # (T,) non-decreasing
    n_bins = th.size + 1  # k in [0, T]
    normal_hist = np.zeros(n_bins, dtype=np.int64)
    region_hists = []
    for mask, amap in zip(masks, maps):
        k = _count_below(th, amap.ravel())  # (H*W,) #thresholds strictly below each value
        lab = measure.label(mask.astype(np.uint8)).astype(np.intp, copy=False).ravel()  # (H*W,)
        n_reg = int(lab.max())
        lab *= n_bins
        lab += k
        hist = np.bincount(lab, minlength=(n_reg + 1) * n_bins).reshape(n_reg + 1, n_bins)
        normal_hist += hist[0]  # background row: normal pixels (masks are binary)
        if n_reg:
            region_hists.append(hist[1:])  # (R_i, T+1)
    hist = np.concatenate(region_hists)  # (R, T+1)
    area = hist.sum(axis=1).astype(np.float64)  # (R,) region sizes
    # above[:, j] = #pixels with k > j  <=>  map > th_j ; suffix sums excluding bin j.
    tp = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (R, T)
    fp = np.cumsum(normal_hist[::-1])[::-1][1:]  # (T,)
    fracs = np.ascontiguousarray((tp / area[:, None]).T)  # (T, R): rows reduce like the 1-D mean
    pros = fracs.mean(axis=1)  # (T,)
    fprs = fp / normal_hist.sum()  # (T,)
    return _auc_kept(pros, fprs, expect_fpr)


def mvtec_aupro_partition(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The MVTec AD benchmark's AU-PRO by partition + argsort, as before the counts rewrite.

    Every distinct score ``t`` is a threshold (positive iff ``map >= t``); regions are
    8-connected; ``PRO(t)`` and ``FPR(t)`` are as in :func:`pro`. The curve
    ``(0, 0), (FPR(t), PRO(t)) for t descending, (1, 1)`` is integrated with the exact
    trapezoid rule up to ``FPR = fpr_limit`` (interpolated linearly there) and divided
    by ``fpr_limit``.

    Implementation: the ``m``-th largest normal score ``t*`` with ``m / n_normal >
    fpr_limit`` first (``np.partition``, O(P)); only pixels ``>= t*`` can matter, and they
    include the first point past the limit. Those candidates are sorted by score
    (O(C log C)), then cumulative normal-pixel counts and cumulative ``1 / |region|``
    weights, taken at the last pixel of each run of equal scores, give the curve in
    float64. Memory beyond the inputs: ~6 bytes per pixel (bool masks, int32 region ids,
    a bool selection) plus ~30 bytes per candidate (C is about ``fpr_limit`` of the normal
    pixels plus the anomalous ones above ``t*``). Measured on 200 maps of 518 x 518
    (54 M pixels, float32): ~0.3 GB peak beyond the inputs, ~5 s on one CPU core.

    Args:
        masks: (N, H, W) binary ground truth.
        maps: (N, H, W) anomaly maps.
        fpr_limit: upper FPR integration limit in (0, 1].

    Returns:
        Normalised AU-PRO in [0, 1]; NaN with a ``RuntimeWarning`` when there is no
        anomalous region or no normal pixel.

    Raises:
        ValueError: on shape mismatch, non-[N,H,W] or empty input, a non-binary mask,
            non-finite maps, or ``fpr_limit`` outside (0, 1].
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _check(masks, maps)
    if not masks.any():
        return _undefined("no anomalous ground-truth region")
    if masks.all():
        return _undefined("no normal pixel")
    labels = np.zeros(masks.shape, dtype=np.int32)  # (N,H,W) global region ids, 0 = normal
    n_regions = 0
    for i, mask in enumerate(masks):
        lab = measure.label(mask.astype(np.uint8)).astype(np.int32)  # (H,W) 8-connectivity
        labels[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += int(lab.max())
    weight = 1.0 / np.bincount(labels.ravel())  # (R+1,) 1/|r|; entry 0 unused
    scores, labels = maps.ravel(), labels.ravel()  # (P,)
    normal = labels == 0
    n_ok = int(np.count_nonzero(normal))
    m = int(np.floor(fpr_limit * n_ok)) + 1  # smallest count with m / n_ok > fpr_limit
    while m > 1 and (m - 1) / n_ok > fpr_limit:
        m -= 1
    while m <= n_ok and m / n_ok <= fpr_limit:
        m += 1
    if m <= n_ok:
        normal_scores = scores[normal]
        t_star = np.partition(normal_scores, n_ok - m)[n_ok - m]  # m-th largest normal score
        del normal_scores
        cand = scores >= t_star
        scores, labels = scores[cand], labels[cand]  # (C,)
    order = np.argsort(scores, kind="stable")[::-1]  # (C,) descending score
    scores, labels = scores[order], labels[order]
    del order
    fp_cum = np.cumsum(labels == 0)  # (C,) int64
    pro_cum = np.cumsum(np.where(labels > 0, weight[labels], 0.0))  # (C,) float64
    last = np.append(scores[1:] != scores[:-1], True)  # (C,) end of each tie run
    fprs = np.minimum(fp_cum[last] / n_ok, 1.0)
    pros = np.minimum(pro_cum[last] / n_regions, 1.0)
    x = np.concatenate(([0.0], fprs, [1.0]))
    y = np.concatenate(([0.0], pros, [1.0]))
    return _trapezoid_to(x, y, fpr_limit) / fpr_limit


def category_metrics_reference(
    gt_px: np.ndarray,
    pr_px: np.ndarray,
    gt_sp: np.ndarray,
    pr_sp: np.ndarray,
    with_mvtec_aupro: bool = True,
) -> dict[str, float]:
    """The former ``category_metrics`` (same arguments, keys and values; numpy only)."""
    gt_px, pr_px = np.asarray(gt_px), np.asarray(pr_px)
    px = classification_metrics(gt_px, pr_px)  # argsort of all pixels
    sp = classification_metrics(np.asarray(gt_sp), np.asarray(pr_sp))
    out = {
        "auroc_px": px["auroc"],
        "f1_px": px["f1"],
        "ap_px": px["ap"],
        "pro": pro_onepass(gt_px, pr_px),
        "auroc_sp": sp["auroc"],
        "f1_sp": sp["f1"],
        "ap_sp": sp["ap"],
    }
    if with_mvtec_aupro:
        out["mvtec_aupro"] = mvtec_aupro_partition(gt_px, pr_px)
    out["threshold_px"] = px["threshold"]
    out["threshold_sp"] = sp["threshold"]
    return out
