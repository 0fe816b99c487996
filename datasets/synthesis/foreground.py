"""Rough object/background split used to place synthesized defects on the object.

Otsu's threshold (N. Otsu, IEEE TSMC 1979) on up to three cues of a downscaled image: intensity,
HSV saturation, and the distance to the median border colour. For each cue the side of the
threshold that covers less of the image border is the candidate foreground; it is cleaned with a
morphological opening and closing, small holes are filled and tiny components dropped. A candidate
is plausible when it covers 5 %-95 % of the image and at most 20 % of the border, is compact (at
most 35 % of its pixels on its rim, which rejects the lines of a grid and the speckle of a carpet)
and has at most 12 parts; the plausible
candidate with the best Otsu separability ``η = σ_b² / σ²`` minus its border share wins. Textures
and images without a clear object (uniform noise, carpet, grid) give None: defects go anywhere.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

LOW_SIDE = 160  # the longer side of the image the split is computed on
MIN_FRACTION, MAX_FRACTION = 0.05, 0.95  # plausible foreground share of the image
MAX_BORDER = 0.20  # largest share of the border pixels the foreground may cover
MIN_SEPARATION = 0.5  # smallest Otsu separability η of a usable cue
MAX_RIM = 0.35  # largest share of foreground pixels on its 1-pixel rim (thin lines, speckle: texture)
MAX_PARTS = 12  # most connected components of a plausible foreground


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or uint8 array as a (H, W, C) uint8 array with C = 1 or 3 (alpha dropped)."""
    if isinstance(image, Image.Image):
        if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
            image = image.convert("L")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(image)
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        return arr
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        return arr[:, :, : arr.shape[2] - 1]
    raise ValueError(f"expected an image array (H, W) or (H, W, C), got shape {arr.shape}")


def channel_max(x: np.ndarray) -> np.ndarray:
    """(h, w, C) → (h, w) maximum over channels (faster than ``max(axis=2)`` for small C)."""
    out = x[:, :, 0]
    for c in range(1, x.shape[2]):
        out = np.maximum(out, x[:, :, c])
    return out


def downscale(arr: np.ndarray, side: int = LOW_SIDE) -> np.ndarray:
    """(H, W, C) uint8 → (h, w, C) uint8 with max(h, w) ≤ side (area averaging)."""
    h, w, c = arr.shape
    f = min(1.0, side / max(h, w))
    if f >= 1.0:
        return arr
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if f < 0.5:  # nearest-neighbour to twice the size first, then 2×2 area averaging (much faster)
        arr = cv2.resize(arr, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return small.reshape(small.shape[0], small.shape[1], c)  # cv2 drops a single channel axis


def otsu(channel: np.ndarray) -> tuple[int, float]:
    """Otsu's threshold of a uint8 channel and its separability.

    For a threshold t splitting the histogram into classes with weights w0, w1 and means μ0, μ1,
    the between-class variance is ``σ_b²(t) = w0 w1 (μ0 - μ1)²``; t* maximises it (pixels > t* form
    the upper class) and ``η = σ_b²(t*) / σ²`` ∈ [0, 1] measures how bimodal the channel is.

    Returns:
        (t*, η); η = 0 for a constant channel.
    """
    hist = np.bincount(channel.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * levels)
    mean = m0[-1]
    var = float((p * (levels - mean) ** 2).sum())
    if var <= 1e-12:
        return 0, 0.0
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    t = int(np.argmax(between))
    return t, float(between[t] / var)


def border_share(mask: np.ndarray) -> float:
    """Share of the outermost rows and columns of (h, w) bool ``mask`` that are True."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(ring.mean()) if ring.size else 0.0


def _cleanup(fg: np.ndarray) -> np.ndarray:
    """Opening and closing, filling of holes under 10 % of the object, dropping of specks."""
    k = max(3, (min(fg.shape) // 48) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    m = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel) > 0
    # holes: components of the background that do not touch the border
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~m).astype(np.uint8), connectivity=4)
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    inner = (x > 0) & (y > 0) & (x + w < m.shape[1]) & (y + h < m.shape[0])
    small = 1 + np.flatnonzero(inner & (area < 0.1 * max(int(np.count_nonzero(m)), 1)))
    if small.size:
        m |= np.isin(labels, small)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = 1 + np.flatnonzero(areas >= max(0.05 * areas.max(), 0.002 * m.size))
        m = np.isin(labels, keep)
    return m


def _cues(low: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """(channel (h, w) uint8, whether its high side must be the foreground) for each cue."""
    gray = low[:, :, 0] if low.shape[2] == 1 else cv2.cvtColor(low, cv2.COLOR_RGB2GRAY)
    cues = [(gray, False)]
    if low.shape[2] == 3:
        cues.append((cv2.cvtColor(low, cv2.COLOR_RGB2HSV)[:, :, 1], False))
    ring = np.concatenate([low[0], low[-1], low[1:-1, 0], low[1:-1, -1]]).astype(np.int16)
    dist = channel_max(np.abs(low.astype(np.int16) - np.median(ring, axis=0).astype(np.int16)))
    cues.append((np.clip(dist, 0, 255).astype(np.uint8), True))
    return cues


def foreground_lowres(low: np.ndarray) -> np.ndarray | None:
    """Foreground of a small (h, w, C) uint8 image as (h, w) bool, or None when implausible."""
    if min(low.shape[:2]) < 8:
        return None
    best: tuple[float, np.ndarray] | None = None
    for channel, high_is_fg in _cues(low):
        channel = cv2.GaussianBlur(channel, (3, 3), 0)
        t, eta = otsu(channel)
        if eta < MIN_SEPARATION:
            continue
        high = channel > t
        fg = high if high_is_fg or border_share(high) <= 0.5 else ~high
        if border_share(fg) > 2 * MAX_BORDER:  # cheap early exit (noise, textures)
            continue
        fg = _cleanup(fg)
        share, frac = border_share(fg), float(fg.mean())
        if not (MIN_FRACTION <= frac <= MAX_FRACTION) or share > MAX_BORDER:
            continue
        inner = cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        parts = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)[0] - 1
        if (fg & ~inner).sum() > MAX_RIM * fg.sum() or parts > MAX_PARTS:
            continue
        if best is None or eta - share > best[0]:
            best = (eta - share, fg)
    return None if best is None else best[1]


def upscale_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) bool → (height, width) bool by bilinear resizing and a 0.5 threshold."""
    if mask.shape == (height, width):
        return mask.copy()
    up = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
    return up > 127


def estimate_foreground(image: Image.Image | np.ndarray) -> np.ndarray | None:
    """Estimate the object's pixels (see the module docstring for the method).

    Args:
        image: PIL image (any mode; alpha ignored) or uint8 array (H, W) / (H, W, C).

    Returns:
        (H, W) bool foreground mask, or None when no plausible foreground was found.
    """
    arr = as_array(image)
    fg = foreground_lowres(downscale(arr))
    return None if fg is None else upscale_mask(fg, arr.shape[0], arr.shape[1])
