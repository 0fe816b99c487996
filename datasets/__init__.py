"""Dataset indexing (meta.json), loading, preprocessing and synthetic data (SPEC §2, §8)."""
from .anomaly_dataset import AnomalyDataset, Sample, collate, load_meta, make_samples
from .errors import DatasetError, one_line
from .transforms import image_transform, mask_transform, open_image

DATASETS = ("mvtec", "visa", "folder")

__all__ = ["AnomalyDataset", "DATASETS", "DatasetError", "Sample", "collate", "image_transform",
           "load_meta", "make_samples", "mask_transform", "one_line", "open_image"]
