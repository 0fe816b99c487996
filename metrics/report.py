"""Per-category metric dicts, their mean, the VAND summary and the paper tables (SPEC §7).

Each category gets a flat ``{metric: fraction}`` dict (:func:`category_metrics`); the
mean over categories is unweighted (:func:`mean_metrics`); tables show percentages
with one decimal, one row per category plus ``mean`` (:func:`format_table`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from tabulate import tabulate

from .classification import classification_metrics
from .pro import mvtec_aupro, pro

__all__ = [
    "METRIC_KEYS",
    "category_metrics",
    "mean_metrics",
    "vand_summary",
    "table_rows",
    "format_table",
]

METRIC_KEYS: tuple[str, ...] = ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")
THRESHOLD_KEYS: tuple[str, ...] = ("threshold_px", "threshold_sp")


def category_metrics(
    gt_px: np.ndarray,
    pr_px: np.ndarray,
    gt_sp: np.ndarray,
    pr_sp: np.ndarray,
    with_mvtec_aupro: bool = True,
) -> dict[str, float]:
    """All metrics of one category, as the released ``test.py`` computes them.

    Pixel metrics (``*_px``) pool every pixel of the category's test images; image
    metrics (``*_sp``) use one score per image. AUROC/AP/F1-max follow scikit-learn
    (see :mod:`metrics.classification`); ``pro`` is the released ``cal_pro_score``.

    Args:
        gt_px: (N, H, W) ground-truth masks, uint8 0/1 or bool.
        pr_px: (N, H, W) anomaly maps, float32 (kept float32; sklearn converts as needed).
        gt_sp: (N,) image labels, 0 = normal, 1 = anomalous.
        pr_sp: (N,) image scores.
        with_mvtec_aupro: also compute the MVTec benchmark's ``mvtec_aupro``.

    Returns:
        ``{key: float}`` for every key of :data:`METRIC_KEYS`, ``mvtec_aupro`` (if asked),
        and ``threshold_px`` / ``threshold_sp``: the scores reaching F1-max (predict
        anomalous when ``score >= threshold``). Undefined values are NaN (with a warning).

    Raises:
        ValueError: on shape mismatch between masks and maps, or scores and labels,
            a different image count N, empty or non-binary input.
    """
    gt_px, pr_px = np.asarray(gt_px), np.asarray(pr_px)
    gt_sp, pr_sp = np.asarray(gt_sp), np.asarray(pr_sp)
    if gt_px.shape != pr_px.shape or gt_px.ndim != 3:
        raise ValueError(f"gt_px {gt_px.shape} and pr_px {pr_px.shape} must both be [N, H, W]")
    if gt_sp.shape != pr_sp.shape or gt_sp.ndim != 1:
        raise ValueError(f"gt_sp {gt_sp.shape} and pr_sp {pr_sp.shape} must both be [N]")
    if gt_sp.shape[0] != gt_px.shape[0]:
        raise ValueError(f"{gt_sp.shape[0]} image labels for {gt_px.shape[0]} masks")
    px = classification_metrics(gt_px, pr_px)  # flattens internally; (N*H*W,) views
    sp = classification_metrics(gt_sp, pr_sp)
    out = {
        "auroc_px": px["auroc"],
        "f1_px": px["f1"],
        "ap_px": px["ap"],
        "pro": pro(gt_px, pr_px),
        "auroc_sp": sp["auroc"],
        "f1_sp": sp["f1"],
        "ap_sp": sp["ap"],
    }
    if with_mvtec_aupro:
        out["mvtec_aupro"] = mvtec_aupro(gt_px, pr_px)
    out["threshold_px"] = px["threshold"]
    out["threshold_sp"] = sp["threshold"]
    return out


def mean_metrics(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over categories of every metric key (thresholds excluded).

    ``mean[k] = sum_c v_c[k] / n_k`` over the categories whose value for ``k`` is finite
    (``n_k`` of them). A skipped NaN is reported with a ``RuntimeWarning`` naming the
    categories -- unlike ``np.nanmean`` this is never silent, and unlike the released
    plain ``np.mean`` one undefined category does not turn the mean into NaN. A key
    with no finite value at all gives NaN. Keys keep their first-seen order.

    Args:
        per_category: ``{category: {metric: value}}``.

    Returns:
        ``{metric: mean}``.
    """
    keys: dict[str, None] = {}
    for values in per_category.values():
        keys.update(dict.fromkeys(k for k in values if k not in THRESHOLD_KEYS))
    mean: dict[str, float] = {}
    for key in keys:
        vals = {c: float(v[key]) for c, v in per_category.items() if key in v}
        finite = [x for x in vals.values() if math.isfinite(x)]
        skipped = [c for c, x in vals.items() if not math.isfinite(x)]
        if skipped:
            warnings.warn(
                f"mean of {key!r} skips non-finite values of {skipped}", RuntimeWarning, stacklevel=2
            )
        mean[key] = float(np.mean(finite)) if finite else float("nan")
    return mean


def _harmonic(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def vand_summary(per_category: Mapping[str, Mapping[str, float]]) -> dict:
    """VAND challenge score: per category ``H = 2 f1_sp f1_px / (f1_sp + f1_px)``.

    ``H`` is 0 when both F1 are 0 and NaN when either is NaN.

    Returns:
        ``{"per_category": {category: H}, "mean": mean of the finite H}``.
    """
    per = {c: _harmonic(float(v["f1_sp"]), float(v["f1_px"])) for c, v in per_category.items()}
    finite = [h for h in per.values() if math.isfinite(h)]
    return {"per_category": per, "mean": float(np.mean(finite)) if finite else float("nan")}


def table_rows(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
    percent: bool = True,
    header: bool = True,
) -> list[list]:
    """Rows of the paper table: optional header, one row per category, then ``mean``.

    Args:
        per_category: ``{category: {metric: fraction}}``.
        mean: the ``mean`` row; computed with :func:`mean_metrics` when ``None``.
        keys: metric columns, in order.
        percent: multiply values by 100 (unrounded floats either way; NaN stays NaN).
        header: start with ``["objects", *keys]``.

    Returns:
        ``[[name, v_1, ..., v_K], ...]``, ready for ``csv.writer.writerows``.
    """
    if mean is None:
        mean = mean_metrics(per_category)
    scale = 100.0 if percent else 1.0
    rows: list[list] = [["objects", *keys]] if header else []
    for name, values in [*per_category.items(), ("mean", mean)]:
        rows.append([name, *(float(values.get(k, float("nan"))) * scale for k in keys)])
    return rows


def format_table(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
    tablefmt: str = "pipe",
) -> str:
    """The printed table: ``objects`` column, percentages with one decimal, NaN as ``nan``.

    Args:
        per_category: ``{category: {metric: fraction}}``.
        mean: the ``mean`` row; computed with :func:`mean_metrics` when ``None``.
        keys: metric columns, in order.
        tablefmt: any ``tabulate`` format (``"pipe"`` is Markdown).

    Returns:
        The table text.
    """
    header, *rows = table_rows(per_category, mean, keys)
    return tabulate(rows, headers=header, tablefmt=tablefmt, floatfmt=".1f", missingval="nan")
