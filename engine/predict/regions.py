"""Defect regions: the connected parts of a thresholded anomaly map (predict.py's regions.csv).

A region is a set of pixels with ``map >= threshold`` joined through their 8 neighbours, taken
at the resolution of the map given (predict.py gives the map resized to the image's own size, the
map its ``masks/`` file is cut from). Per region: its box in pixels ``x0, y0, x1, y1`` (``x1`` and
``y1`` exclusive, so width = x1 - x0), ``area_px`` (its pixel count), ``area_fraction``
(area_px / (H * W)), and the ``max_score`` and ``mean_score`` of the map over its pixels.
Regions are numbered from 1 by falling ``max_score`` (ties: larger area, then top-to-bottom,
left-to-right). Regions smaller than ``min_area`` pixels are dropped from the list *and* from
the mask, so the areas of an image's regions always add up to the white pixels of its mask.
"""
from __future__ import annotations

import cv2
import numpy as np

REGION_COLUMNS = ("region", "x0", "y0", "x1", "y1", "area_px", "area_fraction", "max_score",
                  "mean_score")


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 0
                 ) -> tuple[np.ndarray, list[dict]]:
    """(mask [H, W] bool, regions) of ``score_map >= threshold`` (see the module docstring)."""
    values = np.asarray(score_map, np.float64)
    mask = values >= threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask, []
    flat, vals = labels[mask], values[mask]
    sums = np.bincount(flat, weights=vals, minlength=n)
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, flat, vals)
    h, w = mask.shape
    found = []
    for lab in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[lab])
        if area < min_area:
            continue
        found.append({"label": lab, "x0": x, "y0": y, "x1": x + bw, "y1": y + bh,
                      "area_px": area, "area_fraction": area / (h * w),
                      "max_score": float(peaks[lab]), "mean_score": float(sums[lab] / area)})
    found.sort(key=lambda r: (-r["max_score"], -r["area_px"], r["y0"], r["x0"]))
    keep = np.zeros(n, bool)
    keep[[r["label"] for r in found]] = True
    out = []
    for i, r in enumerate(found, 1):
        del r["label"]
        out.append({"region": i, **r})
    return keep[labels], out


def draw_boxes(rgb: np.ndarray, regions: list[dict], full_size: tuple[int, int]) -> np.ndarray:
    """``rgb`` [h, w, 3] (a picture of an image of ``full_size`` = (W, H)) with each region's
    box drawn, scaled to it: a black outline around a white one, visible on any colour."""
    out = np.ascontiguousarray(rgb).copy()
    sx, sy = out.shape[1] / full_size[0], out.shape[0] / full_size[1]
    for r in regions:
        p0 = (int(r["x0"] * sx), int(r["y0"] * sy))
        p1 = (max(p0[0], int(np.ceil(r["x1"] * sx)) - 1), max(p0[1], int(np.ceil(r["y1"] * sy)) - 1))
        cv2.rectangle(out, p0, p1, (0, 0, 0), 3)
        cv2.rectangle(out, p0, p1, (255, 255, 255), 1)
    return out
