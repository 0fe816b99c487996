"""Dataset indexing (meta.json), loading, preprocessing and reference images (METHOD §2, §8).

The names below load their module on first use, so ``import datasets`` (and the ``--help`` of
the scripts) does not import torch.
"""
from __future__ import annotations

import importlib

from .sets import DATASETS, MVTEC_CATEGORIES, VISA_CATEGORIES

_LAZY = {
    "AnomalyDataset": "anomaly_dataset", "Sample": "anomaly_dataset", "collate": "anomaly_dataset",
    "load_meta": "anomaly_dataset", "make_samples": "anomaly_dataset",
    "image_transform": "transforms", "mask_transform": "transforms", "open_image": "transforms",
}

__all__ = ["DATASETS", "MVTEC_CATEGORIES", "VISA_CATEGORIES", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
