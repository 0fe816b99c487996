"""Heatmap overlays in the style of the paper's Fig. 3-4 (image | overlay [| ground truth])."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def heatmap_overlay(image: Image.Image, amap: np.ndarray, vmax: float | None = None,
                    alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured anomaly map over the image.

    Args:
        image: the original image (any size; resized to the map's S x S, as the model saw it).
        amap: [S, S] anomaly map.
        vmax: value shown as full red (default: the map's own max; min is the map's min).

    Returns:
        [S, S, 3] uint8 RGB.
    """
    s = amap.shape[0]
    rgb = np.asarray(image.convert("RGB").resize((s, s), Image.BICUBIC), dtype=np.float32)
    lo = float(amap.min())
    hi = float(vmax) if vmax is not None else float(amap.max())
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    color = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (alpha * color + (1 - alpha) * rgb).clip(0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: Image.Image, amap: np.ndarray,
                 gt: np.ndarray | None = None, vmax: float | None = None) -> Path:
    """Write ``image | overlay [| gt mask]`` side by side as a PNG."""
    s = amap.shape[0]
    panels = [np.asarray(image.convert("RGB").resize((s, s), Image.BICUBIC)),
              heatmap_overlay(image, amap, vmax)]
    if gt is not None:
        panels.append(np.repeat((gt.astype(np.uint8) * 255)[..., None], 3, axis=2))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels, axis=1)).save(path)
    return path


def save_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Binary [H, W] mask -> 0/255 PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return path
