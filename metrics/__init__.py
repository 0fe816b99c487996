"""Anomaly detection and segmentation metrics of APRIL-GAN (SPEC §7), pure numpy.

``from metrics import pro`` gives the released ``cal_pro_score`` (SPEC §9).
"""

from .classification import auroc, average_precision, f1_max, f1_max_threshold
from .pro import mvtec_aupro, pro, pro_reference
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
    "auroc",
    "average_precision",
    "category_metrics",
    "f1_max",
    "f1_max_threshold",
    "format_table",
    "mean_metrics",
    "mvtec_aupro",
    "pro",
    "pro_reference",
    "table_rows",
    "vand_summary",
]
