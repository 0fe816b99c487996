"""All metrics of one category from one sort of its pixels, on the CPU or a torch device (METHOD §7).

:func:`category_metrics_and_curves` computes the pixel metrics (AUROC, AP, F1-max and its
threshold, the released ``pro``, the MVTec ``mvtec_aupro``) from one value sort of the
category's maps (:mod:`metrics.counting`, numpy or torch), and the image metrics the same
way from the image scores; the float64 arithmetic runs once in numpy
(:mod:`metrics.curves`). The values equal scikit-learn's and the released loop's:
classification metrics to rounding (< 1e-12 relative), F1-max thresholds and ``pro``
exactly. Connected components come from :func:`metrics.mask_regions` (CPU), once per
mask set when passed as ``regions=``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import get_ops
from .counting import Ops, count_scores, is_array_like, one_class, pixel_input, resolve_regions, scores_input
from .curves import RankCounts, mvtec_aupro_from_counts, pro_from_grid, rank_curves, rank_metrics, undefined
from .regions import MaskRegions

if TYPE_CHECKING:
    import torch

__all__ = ["category_metrics", "category_metrics_and_curves", "pixel_metrics"]

NAN = float("nan")
RANK_KEYS = ("auroc", "ap", "f1", "threshold")


def _ranked(rank: RankCounts, max_points: int) -> tuple[dict[str, float], dict]:
    """AUROC/AP/F1/threshold and the curves of the counts."""
    values, best = rank_metrics(rank)
    return values, rank_curves(rank, best, max_points)


def _image_part(ops: Ops, labels: Any, scores: Any, max_points: int) -> tuple[dict, dict | None]:
    """:func:`_ranked` of the image labels and scores (NaN, None for one class)."""
    y, s = scores_input(ops, labels, scores, ("labels", "scores"))
    n_pos = one_class(ops, y, s)
    if n_pos is None:
        return dict.fromkeys(RANK_KEYS, NAN), None
    return _ranked(count_scores(ops, y, s, n_pos).rank, max_points)


def pixel_metrics(
    masks: Any,
    maps: Any,
    *,
    rank: bool = True,
    pro_steps: int | None = 200,
    expect_fpr: float = 0.3,
    aupro_limit: float | None = 0.3,
    device: str | torch.device | None = None,
    regions: MaskRegions | None = None,
    backend: str | None = None,
    max_points: int = 500,
) -> tuple[dict[str, float], dict | None]:
    """The pixel metrics asked for, from one sort.

    Args:
        masks: (N, H, W) binary ground truth (numpy or torch).
        maps: (N, H, W) anomaly maps, float16/32/64 (integers as float64).
        rank: compute ``auroc``, ``ap``, ``f1``, ``threshold`` (and the curves).
        pro_steps: the released ``pro``'s grid steps (200), ``None`` to skip it.
        expect_fpr: the released ``pro``'s FPR limit (strict).
        aupro_limit: ``mvtec_aupro``'s FPR limit in (0, 1], ``None`` to skip it.
        device, backend: see :func:`metrics.backend.get_ops`.
        regions: the masks' :func:`metrics.mask_regions` (computed here when ``None``).
        max_points: points per downsampled curve.

    Returns:
        ``({"auroc", "ap", "f1", "threshold", "pro", "mvtec_aupro"} as asked, curves)``,
        curves as in :func:`metrics.curves.rank_curves` or ``None`` (not asked, one class).
    """
    if aupro_limit is not None and not 0 < aupro_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {aupro_limit}")
    masks = masks if is_array_like(masks) else np.asarray(masks)
    ops = get_ops(device, backend, like=maps)
    y, s = pixel_input(ops, masks, maps)
    shape = tuple(masks.shape)
    n_pos = one_class(ops, y, s, warn=rank)
    out: dict[str, float] = {}
    if n_pos is None:
        out.update(dict.fromkeys(RANK_KEYS, NAN) if rank else {})
        reason = "no anomalous ground-truth region" if ops.count(y) == 0 else "no normal pixel"
        for key, asked in (("pro", pro_steps), ("mvtec_aupro", aupro_limit)):
            if asked is not None:
                out[key] = undefined(reason, stacklevel=4)
        return out, None
    use_regions = pro_steps is not None or aupro_limit is not None
    regions = resolve_regions(ops, y, shape, regions) if use_regions else None
    counts = count_scores(ops, y, s, n_pos, regions, pro_steps, value_index=aupro_limit is not None)
    curves = None
    if rank:
        values, curves = _ranked(counts.rank, max_points)
        out.update(values)
    if pro_steps is not None:
        out["pro"] = (
            pro_from_grid(counts.fp_grid, counts.region_hist, counts.rank.n_neg, expect_fpr)
            if counts.grid is not None
            else undefined("constant maps give an empty threshold grid", stacklevel=4)
        )
    if aupro_limit is not None:
        out["mvtec_aupro"] = mvtec_aupro_from_counts(
            counts.rank, counts.value_of_pixel, regions.region_of_pixel, regions.area, aupro_limit
        )
    return out, curves


def category_metrics_and_curves(
    gt_px: Any,
    pr_px: Any,
    gt_sp: Any,
    pr_sp: Any,
    with_mvtec_aupro: bool = True,
    *,
    device: str | torch.device | None = None,
    regions: MaskRegions | None = None,
    backend: str | None = None,
    max_points: int = 500,
) -> tuple[dict[str, float], dict[str, dict | None]]:
    """:func:`category_metrics` and the ROC / PR curves, from the same single pass.

    Args:
        gt_px, pr_px, gt_sp, pr_sp, with_mvtec_aupro, device, regions: as
            :func:`category_metrics`.
        backend: ``"torch"`` forces the torch code (also with ``device="cpu"``, for tests);
            ``"numpy"`` the numpy code (CPU only).
        max_points: at most this many points per curve.

    Returns:
        ``(metrics, curves)`` with ``curves = {"pixel": c, "image": c}`` and each ``c``
        ``{"roc": (fpr, tpr), "pr": (precision, recall), "f1_point": (recall, precision,
        threshold)}`` (float64 arrays of at most ``max_points`` points keeping both ends and
        the F1-max point; see :func:`metrics.curves.rank_curves`), or ``None`` where only
        one class is present.
    """
    pr_px = pr_px if is_array_like(pr_px) else np.asarray(pr_px)
    gt_px = gt_px if is_array_like(gt_px) else np.asarray(gt_px)
    gt_sp = gt_sp if is_array_like(gt_sp) else np.asarray(gt_sp)
    pr_sp = pr_sp if is_array_like(pr_sp) else np.asarray(pr_sp)
    if tuple(gt_px.shape) != tuple(pr_px.shape) or len(gt_px.shape) != 3:
        raise ValueError(f"gt_px {tuple(gt_px.shape)} and pr_px {tuple(pr_px.shape)} must both be [N, H, W]")
    if tuple(gt_sp.shape) != tuple(pr_sp.shape) or len(gt_sp.shape) != 1:
        raise ValueError(f"gt_sp {tuple(gt_sp.shape)} and pr_sp {tuple(pr_sp.shape)} must both be [N]")
    if gt_sp.shape[0] != gt_px.shape[0]:
        raise ValueError(f"{gt_sp.shape[0]} image labels for {gt_px.shape[0]} masks")
    px, px_curves = pixel_metrics(
        gt_px, pr_px, aupro_limit=0.3 if with_mvtec_aupro else None,
        device=device, regions=regions, backend=backend, max_points=max_points,
    )
    sp, sp_curves = _image_part(get_ops(device, backend, like=pr_px), gt_sp, pr_sp, max_points)
    out = {
        "auroc_px": px["auroc"],
        "f1_px": px["f1"],
        "ap_px": px["ap"],
        "pro": px["pro"],
        "auroc_sp": sp["auroc"],
        "f1_sp": sp["f1"],
        "ap_sp": sp["ap"],
    }
    if with_mvtec_aupro:
        out["mvtec_aupro"] = px["mvtec_aupro"]
    out["threshold_px"] = px["threshold"]
    out["threshold_sp"] = sp["threshold"]
    return out, {"pixel": px_curves, "image": sp_curves}


def category_metrics(
    gt_px: Any,
    pr_px: Any,
    gt_sp: Any,
    pr_sp: Any,
    with_mvtec_aupro: bool = True,
    *,
    device: str | torch.device | None = None,
    regions: MaskRegions | None = None,
    backend: str | None = None,
) -> dict[str, float]:
    """All metrics of one category, as the released ``test.py`` computes them.

    Pixel metrics (``*_px``) pool every pixel of the category's test images; image
    metrics (``*_sp``) use one score per image. AUROC/AP/F1-max equal scikit-learn's
    (formulas in :mod:`metrics.curves`); ``pro`` is the released ``cal_pro_score``, bit for
    bit; ``mvtec_aupro`` the MVTec AD benchmark's AU-PRO (FPR limit 0.3). One value sort
    of the maps serves them all (:mod:`metrics.counting`); peak memory about one copy of
    the maps beyond the inputs.

    Args:
        gt_px: (N, H, W) ground-truth masks, uint8 0/1 or bool (numpy array or tensor).
        pr_px: (N, H, W) anomaly maps, float16/32/64 (numpy array or tensor; used as-is).
        gt_sp: (N,) image labels, 0 = normal, 1 = anomalous.
        pr_sp: (N,) image scores.
        with_mvtec_aupro: also compute the MVTec benchmark's ``mvtec_aupro``.
        device: where the sort and counts run. ``None``: where the maps are (numpy for
            arrays and CPU tensors; a CUDA tensor stays on its GPU -- only its masks come to
            the host, for the connected components, unless ``regions`` is given); ``"cpu"``:
            numpy (its SIMD sort beats ``torch.sort`` there); ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device``: torch on that device (numpy input is uploaded).
        regions: ``metrics.mask_regions(gt_px)``, computed once and passed to every run that
            shares these masks (few-shot runs); computed here when ``None``.
        backend: force ``"numpy"`` or ``"torch"`` (``backend="torch", device="cpu"`` tests
            the torch code without a GPU).

    Returns:
        ``{key: float}`` for every key of :data:`METRIC_KEYS`, ``mvtec_aupro`` (if asked),
        and ``threshold_px`` / ``threshold_sp``: the scores reaching F1-max (predict
        anomalous when ``score >= threshold``), Python floats of the maps' / scores' values.
        Undefined values are NaN (with a ``RuntimeWarning``), e.g. for one-class input.

    Raises:
        ValueError: on shape mismatch between masks and maps, or scores and labels,
            a different image count N, empty or non-binary input, non-finite scores.
    """
    return category_metrics_and_curves(
        gt_px, pr_px, gt_sp, pr_sp, with_mvtec_aupro, device=device, regions=regions, backend=backend
    )[0]
