"""The metric names of METHOD §7, in the paper's column order, and the F1-max threshold keys."""
from __future__ import annotations

METRIC_KEYS: tuple[str, ...] = ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")
THRESHOLD_KEYS: tuple[str, ...] = ("threshold_px", "threshold_sp")
