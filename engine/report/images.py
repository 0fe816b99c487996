"""Thumbnails for the reports: small JPEG rows (image | overlay [| ground truth]) written at once.

Each panel keeps its image's aspect ratio: it is fitted into a ``panel_px`` square (a small
image enlarged to fill it), then enlarged again until its short side is at least
:data:`MIN_SIDE` px, as far as a long side of :data:`MAX_LONG` px allows, so that a 4000 x 100
strip or an 8 x 8 image stays legible (:func:`panel_size`). The panels stand side by side with a
thin white gap, or one above the other when side by side they would be wider than
:data:`MAX_LONG`; one file per image keeps the folder small and the page quick.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GAP = 2  # white pixels between panels
JPEG_QUALITY = 80
MIN_SIDE = 48  # a panel's short side at least this (px), as far as MAX_LONG allows
MAX_LONG = 1200  # a panel's (and a row's) long side at most this: within the page's 1240 px


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
    """A ground-truth mask ``[H, W]`` (bool, 0/1 or 0/255) as a white-on-black RGB panel of
    ``like``'s size (a mask at the model's square size is stretched back, nearest neighbour, as
    the model squashed the image); a dark grey panel where there is no mask (``None``)."""
    if gt is None:
        return np.full(like.shape[:2] + (3,), 64, np.uint8)
    g = np.asarray(gt)
    if g.ndim == 3:
        g = g[..., 0]
    if g.ndim != 2:
        raise ValueError(f"ground truth must be [H, W], got shape {g.shape}")
    white = ((g > 0) * np.uint8(255)).astype(np.uint8)
    if white.shape != like.shape[:2]:
        white = np.asarray(Image.fromarray(white).resize((like.shape[1], like.shape[0]),
                                                         Image.Resampling.NEAREST))
    return np.repeat(white[..., None], 3, axis=2)


def panel_size(w: int, h: int, box: int, min_side: int = MIN_SIDE,
               max_long: int = MAX_LONG) -> tuple[int, int]:
    """The ``(width, height)`` a ``w`` x ``h`` image is drawn at, aspect kept: fitted into a
    ``box`` square (enlarged when smaller); then, where its short side would be under
    ``min_side``, enlarged until it is ``min_side`` or the long side reaches ``max_long``."""
    f = box / max(w, h)
    if min(w, h) * f < min_side:
        f = max(f, min(min_side / min(w, h), max_long / max(w, h)))
    return max(1, round(w * f)), max(1, round(h * f))


def source_side(size: tuple[int, int], box: int) -> int:
    """The long side (px) a picture of ``size`` must have for its panel to be drawn without
    enlarging it (what to ask of a renderer before :func:`fit`)."""
    return max(panel_size(*size, box))


def fit(array: np.ndarray, box: int) -> Image.Image:
    """``array`` ``[H, W, 3]`` uint8 as a PIL image of :func:`panel_size` (nearest neighbour
    where enlarged 4x or more, so that the pixels of a tiny image stay sharp)."""
    img = Image.fromarray(np.ascontiguousarray(array))
    size = panel_size(img.width, img.height, box)
    if size == img.size:
        return img
    if size[0] < img.width:
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    sharp = size[0] >= 4 * img.width
    return img.resize(size, Image.Resampling.NEAREST if sharp else Image.Resampling.BICUBIC)


def thumb_row(panels: list[np.ndarray], panel_px: int) -> Image.Image:
    """The ``panels`` (each ``[H, W, 3]`` uint8) fitted by :func:`fit`, side by side on white
    (each centred vertically), or one above the other (each centred horizontally) when side by
    side they would be wider than :data:`MAX_LONG`; returns the row image."""
    imgs = [fit(p, panel_px) for p in panels]
    gaps = GAP * (len(imgs) - 1)
    across = sum(i.width for i in imgs) + gaps <= MAX_LONG
    if across:
        size = (sum(i.width for i in imgs) + gaps, max(i.height for i in imgs))
    else:
        size = (max(i.width for i in imgs), sum(i.height for i in imgs) + gaps)
    row = Image.new("RGB", size, (255, 255, 255))
    at = 0
    for i in imgs:
        if across:
            row.paste(i, (at, (size[1] - i.height) // 2))
            at += i.width + GAP
        else:
            row.paste(i, ((size[0] - i.width) // 2, at))
            at += i.height + GAP
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
