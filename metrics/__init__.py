"""Anomaly detection and segmentation metrics of APRIL-GAN (METHOD §7).

Pure functions of arrays: numpy on the CPU, torch on a CUDA device, the same algorithm
and the same values on both (one value sort per category, integer counts, float64
arithmetic in numpy). ``from metrics import pro`` gives the released ``cal_pro_score``
(METHOD §9). For a category::

    regions = mask_regions(gt_px)           # connected components, once per mask set
    values = category_metrics(gt_px, pr_px, gt_sp, pr_sp, device="cuda", regions=regions)
    values, curves = category_metrics_and_curves(gt_px, pr_px, gt_sp, pr_sp)

The algorithms before the counts rewrite stay in :mod:`metrics.reference`.
"""

import importlib

# eager: the submodule ``metrics.pro`` would otherwise shadow the function ``pro``
from .pro import mvtec_aupro, pro, pro_reference

_LAZY = {  # name -> module; loaded on first use, so ``from metrics import METRIC_KEYS`` is light
    "METRIC_KEYS": "keys", "THRESHOLD_KEYS": "keys",
    "category_metrics": "category", "category_metrics_and_curves": "category",
    "auroc": "classification", "average_precision": "classification", "f1_max": "classification",
    "f1_max_threshold": "classification",
    "MaskRegions": "regions", "mask_regions": "regions",
    "format_table": "report", "mean_metrics": "report", "table_rows": "report",
    "vand_summary": "report",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")


__all__ = [
    "METRIC_KEYS",
    "MaskRegions",
    "THRESHOLD_KEYS",
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
