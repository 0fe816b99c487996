"""Defect painters of the synthetic test sets and the category table (scene + defect kinds).

A painter takes (rng, image, background, object mask) and returns (region (H, W) bool, its new
values (M, 3)). Regions are centred on an object pixel and scaled with the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .scenes import Scene, _blob, _bottle, _candle, _capsule, _carpet, _grid, _jitter, _pcb, _poly, _screw


def _contrast(rng: np.random.Generator, img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A paint colour far from the mean brightness of img under mask m."""
    lum = float(img[m].mean()) if m.any() else 128.0
    return _jitter(rng, (35, 30, 28) if lum > 110 else (225, 220, 205), 10)


def _seed_point(rng: np.random.Generator, obj: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(obj)
    i = rng.integers(len(ys))
    return np.array([xs[i], ys[i]], np.float64)


def _scratch(rng, img, bg, obj):
    """A thin curved line (quadratic Bezier) in a contrasting colour."""
    (h, w), c, a = obj.shape, _seed_point(rng, obj), rng.uniform(0, np.pi)
    d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    half = rng.uniform(0.2, 0.35) * min(w, h)
    p0, p1, ctrl = c - half * d, c + half * d, c + rng.uniform(-0.5, 0.5) * half * n
    t = np.linspace(0, 1, 24)[:, None]  # (24, 1)
    m = _poly(w, h, (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1, max(2, round(min(w, h) / 32)))
    return m, _contrast(rng, img, m)


def _stain(rng, img, bg, obj):
    """An irregular brownish blob, mostly opaque."""
    h, w = obj.shape
    m = _poly(w, h, _blob(rng, _seed_point(rng, obj), rng.uniform(0.07, 0.12) * min(w, h)))
    return m, 0.15 * img[m] + 0.85 * _contrast(rng, img, m) * np.array([1.0, 0.85, 0.7], np.float32)


def _crack(rng, img, bg, obj):
    """A dark random-walk polyline with one short branch."""
    (h, w), a = obj.shape, rng.uniform(0, 2 * np.pi)
    pts, s = [_seed_point(rng, obj)], min(w, h)
    for _ in range(rng.integers(8, 13)):
        a += rng.normal(0, 0.5)
        pts.append(pts[-1] + s / 18 * np.array([np.cos(a), np.sin(a)]))
    branch, b = [pts[len(pts) // 2]], a + rng.choice([-1.0, 1.0]) * 0.9
    for _ in range(4):
        b += rng.normal(0, 0.4)
        branch.append(branch[-1] + s / 20 * np.array([np.cos(b), np.sin(b)]))
    m = _poly(w, h, pts, max(2, round(s / 48))) | _poly(w, h, branch, max(1, round(s / 64)))
    return m, _contrast(rng, img, m) * 0.8


def _missing(rng, img, bg, obj):
    """An irregular region of the object replaced by the background."""
    h, w = obj.shape
    m = _poly(w, h, _blob(rng, _seed_point(rng, obj), rng.uniform(0.11, 0.17) * min(w, h)))
    return m, bg[m]


DEFECTS = {"scratch": _scratch, "stain": _stain, "crack": _crack, "missing": _missing}


@dataclass(frozen=True)
class Category:
    render: Callable[[np.random.Generator, int, int], Scene]
    gray: bool  # saved as 8-bit "L" images
    defects: tuple[str, ...]  # test anomalies cycle through these; VisA mask id = index + 1


CATEGORIES: dict[str, Category] = {
    "bottle": Category(_bottle, False, ("missing", "stain", "scratch")),
    "grid": Category(_grid, True, ("crack", "scratch", "missing")),
    "screw": Category(_screw, True, ("scratch", "missing")),
    "carpet": Category(_carpet, False, ("stain", "crack", "missing")),
    "capsule": Category(_capsule, False, ("crack", "stain", "missing")),
    "candle": Category(_candle, False, ("stain", "missing")),
    "pcb1": Category(_pcb, False, ("scratch", "missing", "stain")),
}
