"""Anomaly detection and segmentation metrics of APRIL-GAN (SPEC §7).

Pure functions of arrays: numpy on the CPU, torch on a CUDA device, the same algorithm
and the same values on both (one value sort per category, integer counts, float64
arithmetic in numpy). ``from metrics import pro`` gives the released ``cal_pro_score``
(SPEC §9). For a category::

    regions = mask_regions(gt_px)           # connected components, once per mask set
    values = category_metrics(gt_px, pr_px, gt_sp, pr_sp, device="cuda", regions=regions)
    values, curves = category_metrics_and_curves(gt_px, pr_px, gt_sp, pr_sp)

The algorithms before the counts rewrite stay in :mod:`metrics.reference`.
"""

from .category import category_metrics_and_curves
from .classification import auroc, average_precision, f1_max, f1_max_threshold
from .pro import mvtec_aupro, pro, pro_reference
from .regions import MaskRegions, mask_regions
from .report import (
    METRIC_KEYS,
    category_metrics,
    format_table,
    mean_metrics,
    table_rows,
    vand_summary,
)

__all__ = [
    "METRIC_KEYS",
    "MaskRegions",
    "auroc",
    "average_precision",
    "category_metrics",
    "category_metrics_and_curves",
    "f1_max",
    "f1_max_threshold",
    "format_table",
    "mask_regions",
    "mean_metrics",
    "mvtec_aupro",
    "pro",
    "pro_reference",
    "table_rows",
    "vand_summary",
]
