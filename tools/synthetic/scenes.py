"""Drawn objects and textures of the synthetic datasets (the scenes defects are painted on).

A scene is (image (H, W, 3) float32 0..255, background under removable parts (H, W, 3), object
mask (H, W) bool).
"""
from __future__ import annotations

import cv2
import numpy as np

# A scene: image (H, W, 3) float32 0..255, background under removable parts (H, W, 3), object (H, W) bool.
Scene = tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------- drawing helpers
def _canvas(w: int, h: int, color) -> np.ndarray:
    return np.zeros((h, w, 3), np.float32) + np.asarray(color, np.float32)  # (H, W, 3)


def _jitter(rng: np.random.Generator, color, amount: float = 10.0) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _disk(w: int, h: int, c, r: float) -> np.ndarray:
    y, x = np.ogrid[0:h, 0:w]
    return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= max(r, 1.0) ** 2  # (H, W) bool


def _poly(w: int, h: int, pts, thickness: int = 0) -> np.ndarray:
    """Filled polygon (thickness 0) or open polyline through pts (N, 2) x,y, as (H, W) bool."""
    m, pts = np.zeros((h, w), np.uint8), [np.round(np.asarray(pts)).astype(np.int32).reshape(-1, 1, 2)]
    cv2.polylines(m, pts, False, 255, int(thickness)) if thickness > 0 else cv2.fillPoly(m, pts, 255)
    return m > 0


def _blob(rng: np.random.Generator, c, r: float, k: int = 12) -> np.ndarray:
    """Vertices (k, 2) of an irregular closed polygon of mean radius r around c."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    return np.asarray(c) + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.65, 1.3, (k, 1))


def _centre(rng: np.random.Generator, w: int, h: int, amount: float = 0.04) -> np.ndarray:
    return np.array([w, h]) / 2 + rng.uniform(-amount, amount, 2) * min(w, h)


# ----------------------------------------------------------------------------- category renderers
def _bottle(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Top view of a bottle: concentric coloured rings on a dark background."""
    s, c = min(w, h), _centre(rng, w, h)
    img = _canvas(w, h, _jitter(rng, (22, 22, 28), 5))
    bg = img.copy()
    col, r = _jitter(rng, (70, 190, 120), 20), 0.42 * s * rng.uniform(0.95, 1.02)
    obj = _disk(w, h, c, r)
    img[obj] = col
    img[_disk(w, h, c, 0.8 * r)] = col * 0.55
    img[_disk(w, h, c, 0.35 * r)] = col * 0.35
    img[_disk(w, h, c - 0.5 * r, 0.1 * r)] = 230
    return img, bg, obj


def _grid(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Periodic wire mesh (grayscale); missing parts show the dark backing."""
    period = min(w, h) / rng.uniform(10, 13)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ox, oy = rng.uniform(0, period, 2)
    wires = ((x + ox) % period < 0.3 * period) | ((y + oy) % period < 0.3 * period)
    img = _canvas(w, h, rng.uniform(70, 90))
    img[wires] = rng.uniform(160, 185)
    return img, _canvas(w, h, rng.uniform(20, 35)), np.ones((h, w), bool)


def _screw(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A threaded screw at a random angle on a light background (grayscale)."""
    s, c = min(w, h), _centre(rng, w, h, 0.05)
    img = _canvas(w, h, rng.uniform(190, 210))
    bg = img.copy()
    a = rng.uniform(0, np.pi)
    d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    length, half_w, tone = 0.3 * s, 0.07 * s, rng.uniform(95, 125)
    shaft = _poly(w, h, [c - length * d - half_w * n, c + length * d - half_w * n,
                         c + length * d + half_w * n, c - length * d + half_w * n])
    head = _disk(w, h, c - length * d, 0.14 * s)
    obj = shaft | head
    img[obj] = tone
    for t in np.linspace(-0.6, 0.9, 9) * length:  # thread ridges across the shaft
        ridge = _poly(w, h, [c + t * d - half_w * n, c + (t + 0.05 * s) * d + half_w * n], 1)
        img[ridge & shaft] = tone * 0.65
    img[_poly(w, h, [c - length * d - 0.1 * s * n, c - length * d + 0.1 * s * n], 2) & head] = tone * 0.4
    return img, bg, obj


def _carpet(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Woven coloured texture with fibre noise; missing parts show a dark backing."""
    f = 2 * np.pi * rng.uniform(14, 18) / min(w, h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    weave = np.sin(x * f + rng.uniform(0, 6.3)) * np.sin(y * f + rng.uniform(0, 6.3))  # (H, W)
    fuzz = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    base = _jitter(rng, (150, 60, 50), 25)
    img = np.clip(base * (1 + 0.15 * weave + 0.12 * fuzz)[..., None], 0, 255).astype(np.float32)
    return img, _canvas(w, h, base * 0.25), np.ones((h, w), bool)


def _capsule(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A horizontal two-coloured pill on a light background."""
    s, c = min(w, h), _centre(rng, w, h)
    img = _canvas(w, h, _jitter(rng, (225, 225, 220), 6))
    bg = img.copy()
    r, half = 0.16 * s, min(0.36 * s, 0.45 * w)
    lc, rc = c - [half - r, 0], c + [half - r, 0]
    body = _poly(w, h, [lc - [0, r], rc - [0, r], rc + [0, r], lc + [0, r]])
    obj = _disk(w, h, lc, r) | _disk(w, h, rc, r) | body
    left = obj & (np.arange(w)[None, :] < c[0])
    img[left], img[obj & ~left] = _jitter(rng, (35, 35, 35), 8), _jitter(rng, (215, 110, 50), 12)
    return img, bg, obj


def _candle(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Top view of candles (cream discs with wicks) on a dark brown background."""
    n = max(1, round(1.5 * w / h))
    img = _canvas(w, h, _jitter(rng, (60, 40, 30), 6))
    bg, obj = img.copy(), np.zeros((h, w), bool)
    r = min(0.25 * h, 0.4 * w / n)
    for i in range(n):
        c = np.array([w * (i + 0.5) / n, h / 2]) + rng.uniform(-0.04, 0.04, 2) * min(w, h)
        disc = _disk(w, h, c, r * rng.uniform(0.92, 1.05))
        obj |= disc
        img[disc] = _jitter(rng, (240, 225, 200), 6)
        img[_disk(w, h, c + rng.uniform(-0.1, 0.1, 2) * r, 0.12 * r)] = (30, 25, 20)
    return img, bg, obj


def _pcb(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A green circuit board with traces, a chip and pads; missing parts show bare board."""
    s = min(w, h)
    img = _canvas(w, h, _jitter(rng, (30, 120, 50), 8))
    for y in np.linspace(0.13, 0.87, 5) * h + rng.uniform(-0.02, 0.02) * h:
        img[_poly(w, h, [(0.04 * w, y), (0.96 * w, y)], max(1, s // 45))] = _jitter(rng, (200, 180, 70), 8)
    bg = img.copy()
    c = _centre(rng, w, h, 0.05)
    chip = _poly(w, h, [c - [0.15 * w, 0.2 * h], c + [0.15 * w, -0.2 * h], c + [0.15 * w, 0.2 * h],
                        c + [-0.15 * w, 0.2 * h]])
    pads = np.zeros((h, w), bool)
    for i in range(4):
        pads |= _disk(w, h, (0.1 * w + i * 0.045 * s, 0.8 * h), 0.022 * s)
    img[chip], img[pads] = _jitter(rng, (25, 25, 25), 5), _jitter(rng, (220, 230, 220), 5)
    return img, bg, chip | pads
