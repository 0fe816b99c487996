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


MIN_SIDE = 256  # heatmaps of smaller images are drawn at least this large, to stay legible


def _fit(size: tuple[int, int], max_side: int, min_side: int = 0) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most ``max_side`` and at least ``min_side``."""
    w, h = size
    f = min(1.0, max_side / max(w, h)) if max_side else 1.0
    if min_side and max(w, h) * f < min_side:
        f = min_side / max(w, h)
    return max(1, round(w * f)), max(1, round(h * f))


def colour_bar(height: int, scale: ColorScale) -> np.ndarray:
    """[H, W, 3] uint8: a vertical jet bar (vmax at the top) with vmin, middle and vmax values."""
    bar_w = max(8, height // 24)
    font = max(0.3, height / 400)
    thick = max(1, round(font * 1.5))
    labels = [(frac, f"{scale.vmin + frac * (scale.vmax - scale.vmin):.3g}")
              for frac in (0.0, 0.5, 1.0)]
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font, thick) for _, t in labels]
    label_w = max(w for (w, _), _ in sizes) + 10  # the widest label, never clipped
    text_h = max(h + b for (_, h), b in sizes)
    panel = np.full((height, bar_w + label_w + 4, 3), 255, np.uint8)
    ramp = np.linspace(1, 0, height, dtype=np.float32)[:, None].repeat(bar_w, 1)
    panel[:, 2:2 + bar_w] = _jet(ramp)
    for frac, text in labels:
        y = int(round((1 - frac) * (height - 1))) + text_h // 2  # baseline, centred on the tick
        y = min(max(y, text_h), height - 2)
        cv2.putText(panel, text, (bar_w + 5, y), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), thick, cv2.LINE_AA)
    return panel


def _titled(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The panels side by side under a white strip naming each (image, heatmap, ...)."""
    h = panels[0][1].shape[0]
    font = max(0.45, min(0.9, h / 600))
    thick = 1 if font < 0.7 else 2
    strip = int(cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, font, thick)[0][1] * 2.2) + 4
    out = []
    for name, arr in panels:
        head = np.full((strip, arr.shape[1], 3), 255, np.uint8)
        (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        x = max(2, (arr.shape[1] - tw) // 2)
        cv2.putText(head, name, (x, (strip + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), thick, cv2.LINE_AA)
        out.append(np.concatenate([head, arr], axis=0))
    return np.concatenate(out, axis=1)


def render_overlay(image: Image.Image, amap: np.ndarray, scale: ColorScale,
                   alpha: float = 0.5, max_side: int = 1024, min_side: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(image [H, W, 3], overlay [H, W, 3]) at the image's resolution (capped at ``max_side``,
    enlarged to ``min_side``)."""
    w, h = _fit(image.size, max_side, min_side)
    rgb = np.asarray(image.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
    full = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    over = (alpha * _jet(scale.normalise(full)) + (1 - alpha) * rgb).clip(0, 255)
    return rgb.astype(np.uint8), over.astype(np.uint8)


def _mask_panel(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    m = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.repeat(m[..., None], 3, axis=2)


def overlay_panels(image: Image.Image, amap: np.ndarray, gt: np.ndarray | None = None,
                   scale: ColorScale | None = None, max_side: int = 1024,
                   mask_name: str = "mask") -> np.ndarray:
    """``image | heatmap [| mask] [| scale]`` as one [H', W', 3] uint8 array, each panel named
    in a strip above it; images under ``MIN_SIDE`` pixels are drawn at ``MIN_SIDE``.

    With ``scale`` None: the old per-image overlay at S x S, unnamed, and no bar.
    """
    if scale is None:
        s = amap.shape[0]
        panels = [np.asarray(image.convert("RGB").resize((s, s), Image.BICUBIC)),
                  heatmap_overlay(image, amap)]
        if gt is not None:
            panels.append(_mask_panel(gt, s, s))
        return np.concatenate(panels, axis=1)
    rgb, over = render_overlay(image, amap, scale, max_side=max_side,
                               min_side=min(MIN_SIDE, max_side))
    h, w = rgb.shape[:2]
    panels = [("image", rgb), ("heatmap", over)]
    if gt is not None:
        panels.append((mask_name, _mask_panel(gt, w, h)))
    return _titled(panels + [("scale", colour_bar(h, scale))])


def save_overlay(path: str | Path, image: Image.Image, amap: np.ndarray,
                 gt: np.ndarray | None = None, scale: ColorScale | None = None,
                 max_side: int = 1024, mask_name: str = "ground truth") -> Path:
    """Write ``overlay_panels`` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_panels(image, amap, gt, scale, max_side, mask_name)).save(path)
    return path


def save_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Binary [H, W] mask -> 0/255 PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return path
