"""Heatmap overlays on one fixed colour scale per category and run, with a colour bar.

A normal part must look cool and a defect hot, so the map is never rescaled per image: a
``ColorScale`` (vmin, vmax) is chosen once per category and run (``fixed_scale``) and every
overlay of it uses that scale, drawn at the original image's resolution (the map resized to
it; ``max_side`` caps the size) beside a colour bar with its values. ``--heatmap_scale image``
keeps the old per-image min-max overlays at S x S (``heatmap_overlay``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ColorScale:
    """Map values ``vmin`` -> blue ... ``vmax`` -> red (jet); ``source`` says where it came from."""

    vmin: float
    vmax: float
    source: str

    def normalise(self, amap: np.ndarray) -> np.ndarray:
        span = self.vmax - self.vmin
        return np.clip((amap - self.vmin) / span, 0, 1) if span > 0 else np.zeros_like(amap)


def fixed_scale(n_stages: int, n_memory_stages: int = 0, pixel_threshold: float | None = None,
                normal_level: float | None = None) -> ColorScale:
    """The colour scale of one category and run.

    1. A known pixel threshold t (thresholds.json of test.py, ``--thresholds``/
       ``--pixel_threshold`` of predict.py) sits at mid-scale: [0, 2 t].
    2. Else, few-shot: the references' normal map peak mu (``normal_level``) at mid-scale:
       [0, 2 mu].
    3. Else the map's range of possible values: [0, #stages] (zero-shot sum of probabilities,
       plus 2 per memory stage, the largest cosine distance).
    """
    if pixel_threshold is not None and np.isfinite(pixel_threshold) and pixel_threshold > 0:
        return ColorScale(0.0, 2.0 * float(pixel_threshold),
                          f"pixel threshold {pixel_threshold:.4g} at mid-scale")
    if normal_level is not None and np.isfinite(normal_level) and normal_level > 0:
        return ColorScale(0.0, 2.0 * float(normal_level),
                          f"references' map peak {normal_level:.4g} at mid-scale")
    top = float(n_stages + 2 * n_memory_stages)
    return ColorScale(0.0, top, f"the map's range [0, {top:g}]")


def _jet(norm: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 RGB (OpenCV's jet)."""
    return cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]


def heatmap_overlay(image: Image.Image, amap: np.ndarray, vmax: float | None = None,
                    alpha: float = 0.5) -> np.ndarray:
    """The old overlay: per-image min-max (or min..vmax) at the map's S x S (``--heatmap_scale
    image``). Returns [S, S, 3] uint8 RGB."""
    s = amap.shape[0]
    rgb = np.asarray(image.convert("RGB").resize((s, s), Image.BICUBIC), dtype=np.float32)
    lo = float(amap.min())
    hi = float(vmax) if vmax is not None else float(amap.max())
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    return (alpha * _jet(norm) + (1 - alpha) * rgb).clip(0, 255).astype(np.uint8)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    w, h = size
    f = min(1.0, max_side / max(w, h)) if max_side else 1.0
    return max(1, round(w * f)), max(1, round(h * f))


def colour_bar(height: int, scale: ColorScale) -> np.ndarray:
    """[H, W, 3] uint8: a vertical jet bar (vmax at the top) with vmin, middle and vmax values."""
    bar_w = max(8, height // 24)
    font = max(0.3, height / 400)
    thick = max(1, round(font * 1.5))
    label_w = int(cv2.getTextSize("0.000", cv2.FONT_HERSHEY_SIMPLEX, font, thick)[0][0]) + 6
    panel = np.full((height, bar_w + label_w + 4, 3), 255, np.uint8)
    ramp = np.linspace(1, 0, height, dtype=np.float32)[:, None].repeat(bar_w, 1)
    panel[:, 2:2 + bar_w] = _jet(ramp)
    for frac in (0.0, 0.5, 1.0):
        value = scale.vmin + frac * (scale.vmax - scale.vmin)
        y = int(round((1 - frac) * (height - 1)))
        y = min(max(y + int(10 * font) // 2, int(10 * font) + 2), height - 3)
        cv2.putText(panel, f"{value:.3g}", (bar_w + 5, y), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), thick, cv2.LINE_AA)
    return panel


def render_overlay(image: Image.Image, amap: np.ndarray, scale: ColorScale,
                   alpha: float = 0.5, max_side: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(image [H, W, 3], overlay [H, W, 3]) at the image's resolution (capped at ``max_side``)."""
    w, h = _fit(image.size, max_side)
    rgb = np.asarray(image.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
    full = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    over = (alpha * _jet(scale.normalise(full)) + (1 - alpha) * rgb).clip(0, 255)
    return rgb.astype(np.uint8), over.astype(np.uint8)


def _mask_panel(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    m = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.repeat(m[..., None], 3, axis=2)


def overlay_panels(image: Image.Image, amap: np.ndarray, gt: np.ndarray | None = None,
                   scale: ColorScale | None = None, max_side: int = 1024) -> np.ndarray:
    """``image | overlay [| mask] [| colour bar]`` as one [H, W', 3] uint8 array.

    With ``scale`` None: the old per-image overlay at S x S and no bar.
    """
    if scale is None:
        s = amap.shape[0]
        panels = [np.asarray(image.convert("RGB").resize((s, s), Image.BICUBIC)),
                  heatmap_overlay(image, amap)]
        if gt is not None:
            panels.append(_mask_panel(gt, s, s))
        return np.concatenate(panels, axis=1)
    rgb, over = render_overlay(image, amap, scale, max_side=max_side)
    h, w = rgb.shape[:2]
    panels = [rgb, over] + ([_mask_panel(gt, w, h)] if gt is not None else [])
    return np.concatenate(panels + [colour_bar(h, scale)], axis=1)


def save_overlay(path: str | Path, image: Image.Image, amap: np.ndarray,
                 gt: np.ndarray | None = None, scale: ColorScale | None = None,
                 max_side: int = 1024) -> Path:
    """Write ``overlay_panels`` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_panels(image, amap, gt, scale, max_side)).save(path)
    return path


def save_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Binary [H, W] mask -> 0/255 PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return path
