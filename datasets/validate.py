"""Checks of a dataset that run before the long work: a bad file at image 3,000 must not waste an
hour. Every image is opened (header and integrity check, no full decode), its size checked
against PIL's safety limit, every mask of an anomalous image checked to exist and match its
image's size, and a mask given for a normal image checked to mark nothing anomalous.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from errors import DatasetError

from .anomaly_dataset import Sample
from .transforms import binary_mask_image, image_errors


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, after PIL's integrity check (DatasetError if bad)."""
    with image_errors(path):
        with Image.open(path) as im:
            size = im.size
            im.verify()
    if min(size) < 1:
        raise DatasetError(f"image {path} is empty ({size[0]}x{size[1]} pixels)")
    return size


def check_samples(root: Path, samples: Iterable[Sample]) -> int:
    """Check every image and mask of ``samples``; returns how many images were checked."""
    n = 0
    for s in samples:
        size = image_size(root / s.img_path)
        n += 1
        if s.mask_path:
            msize = image_size(root / s.mask_path)
            if s.anomaly and msize != size:
                raise DatasetError(
                    f"mask {root / s.mask_path} is {msize[0]}x{msize[1]} but its image "
                    f"{root / s.img_path} is {size[0]}x{size[1]}: masks must match their image")
            if not s.anomaly:
                marked = int(np.count_nonzero(np.asarray(binary_mask_image(root / s.mask_path))))
                if marked:
                    raise DatasetError(
                        f"{root / s.img_path} is labelled normal but its mask {root / s.mask_path} "
                        f"marks {marked} pixels anomalous: fix the label or the mask in meta.json")
    return n


def check_split(root: Path, per_category: dict[str, Sequence[Sample]]) -> int:
    """``check_samples`` over a split; returns the number of images."""
    return sum(check_samples(root, samples) for samples in per_category.values())
