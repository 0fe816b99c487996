"""Thumbnails for the reports: small JPEG rows (image | overlay [| ground truth]) written at once.

A row's panels are each fitted into a ``panel_px`` square (aspect kept) and put side by side
with a thin white gap, so one file per image keeps the folder small and the page quick.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GAP = 2  # white pixels between panels
JPEG_QUALITY = 80


def as_rgb(array: np.ndarray, what: str = "image") -> np.ndarray:
    """An RGB, RGBA or grey ``[H, W]`` uint8 array as ``[H, W, 3]`` uint8 (a view where possible).

    Raises:
        ValueError: for another shape or dtype.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return a[..., :3]
    raise ValueError(f"{what} must be [H, W, 3] (or [H, W]), got shape {a.shape}")


def mask_panel(gt: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """A ground-truth mask ``[H, W]`` (bool, 0/1 or 0/255) as a white-on-black RGB panel;
    a dark grey panel of ``like``'s size where there is no mask (``None``)."""
    if gt is None:
        return np.full(like.shape[:2] + (3,), 64, np.uint8)
    g = np.asarray(gt)
    if g.ndim == 3:
        g = g[..., 0]
    if g.ndim != 2:
        raise ValueError(f"ground truth must be [H, W], got shape {g.shape}")
    return np.repeat(((g > 0) * np.uint8(255)).astype(np.uint8)[..., None], 3, axis=2)


def fit(array: np.ndarray, box: int) -> Image.Image:
    """``array`` ``[H, W, 3]`` uint8 as a PIL image whose long side is at most ``box`` px."""
    img = Image.fromarray(np.ascontiguousarray(array))
    if max(img.size) > box:
        img.thumbnail((box, box), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def thumb_row(panels: list[np.ndarray], panel_px: int) -> Image.Image:
    """The ``panels`` (each ``[H, W, 3]`` uint8) fitted into ``panel_px`` squares, side by side on
    white, each centred vertically; returns the row image."""
    imgs = [fit(p, panel_px) for p in panels]
    height = max(i.height for i in imgs)
    width = sum(i.width for i in imgs) + GAP * (len(imgs) - 1)
    row = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for i in imgs:
        row.paste(i, (x, (height - i.height) // 2))
        x += i.width + GAP
    return row


def save_jpeg(img: Image.Image, path: Path, quality: int = JPEG_QUALITY) -> tuple[int, int]:
    """Write ``img`` as a JPEG file at ``path`` (folders made); returns its ``(width, height)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality, optimize=False)
    return img.size


def save_row(path: Path, panels: list[np.ndarray], panel_px: int,
             quality: int = JPEG_QUALITY) -> tuple[int, int]:
    """:func:`thumb_row` of ``panels`` written as a JPEG at ``path``; returns ``(width, height)``."""
    return save_jpeg(thumb_row(panels, panel_px), path, quality)
