"""Connected ground-truth regions, computed once per mask set and reused across runs.

PRO (Bergmann et al., IJCV 2021) averages over the 8-connected components of every image's
mask. Labelling stays on the CPU (``skimage.measure.label``). The few-shot runs of a
category share its masks, so compute the regions once and pass them to every run::

    regions = mask_regions(gt_px)                       # once per category
    for maps, scores in runs:                           # e.g. 15 few-shot runs
        category_metrics(gt_px, maps, gt_sp, scores, regions=regions)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage import measure

from .backend import NumpyOps

__all__ = ["MaskRegions", "mask_regions"]


@dataclass(frozen=True)
class MaskRegions:
    """The 8-connected regions of a mask set (N, H, W), pooled over the images.

    Attributes:
        shape: ``(N, H, W)`` of the masks.
        region_of_pixel: (P_pos,) int32, the region index (0..R-1) of every anomalous pixel,
            pixels in C order of the (N, H, W) masks; regions numbered image by image, in
            ``skimage.measure.label`` order within an image (the released loop's order).
        area: (R,) int64, pixels per region.
        pixels_per_image: (N,) int64, anomalous pixels per image (a consistency check).
    """

    shape: tuple[int, int, int]
    region_of_pixel: np.ndarray
    area: np.ndarray
    pixels_per_image: np.ndarray

    @property
    def n_regions(self) -> int:
        return int(self.area.size)

    def check(self, shape: tuple[int, ...], pixels_per_image: np.ndarray) -> None:
        """Raises ``ValueError`` unless these regions can belong to masks of that shape and counts."""
        if tuple(shape) != self.shape or not np.array_equal(pixels_per_image, self.pixels_per_image):
            raise ValueError(
                f"regions were computed from other masks (shape {self.shape}, "
                f"{int(self.pixels_per_image.sum())} anomalous pixels) than these {tuple(shape)}"
            )


def _label_image(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> region labels 1..n of its anomalous pixels in C order, (P_i,) int32.

    Labels the bounding box of the anomalous pixels only: cropping keeps the raster order
    of the pixels, so the labels and their numbering are those of the whole image.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros(0, np.int32)
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)
    lab = measure.label(crop.view(np.uint8), connectivity=2)  # (h, w) 8-connectivity
    return lab[crop].astype(np.int32)


def mask_regions(gt_px: Any) -> MaskRegions:
    """Connected components (8-connectivity) of every image's mask, for reuse across runs.

    Args:
        gt_px: (N, H, W) binary masks (numpy array or torch tensor; a CUDA tensor's masks
            are copied to the host, as labelling runs on the CPU).

    Returns:
        The :class:`MaskRegions` to pass as ``regions=`` to :func:`metrics.category_metrics`,
        :func:`metrics.pro` or :func:`metrics.mvtec_aupro` with the same masks.

    Raises:
        ValueError: on non-[N, H, W], empty or non-binary masks.
    """
    masks = NumpyOps.host(gt_px)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
    masks = NumpyOps().labels(masks, "masks").reshape(masks.shape)  # (N,H,W) bool
    parts, areas, offset = [], [], 0
    for mask in masks:
        lab = _label_image(mask)  # (P_i,) 1..n_i
        n_i = int(lab.max()) if lab.size else 0
        areas.append(np.bincount(lab, minlength=n_i + 1)[1:])
        parts.append(lab + (offset - 1))
        offset += n_i
    return MaskRegions(
        shape=tuple(masks.shape),
        region_of_pixel=np.concatenate(parts).astype(np.int32, copy=False),
        area=np.concatenate(areas).astype(np.int64, copy=False),
        pixels_per_image=np.array([p.size for p in parts], dtype=np.int64),
    )
