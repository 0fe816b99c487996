"""Smooth random fields and defect shapes for the anomaly synthesizer.

Perlin gradient noise (K. Perlin, "Improving noise", SIGGRAPH 2002), as DRAEM (Zavrtanik et al.,
ICCV 2021) uses it to shape its anomaly regions, written here directly in numpy. Every shape is
returned in its own small local box (a few hundred pixels a side at most) so that the cost of a
defect does not grow with the image; fields are drawn on a grid of at most ``FIELD_SIDE`` samples
a side and resized bilinearly, which keeps their outlines smooth.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

FIELD_SIDE = 64  # largest side of the grid a smooth field is drawn on before it is resized


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)  # 6t^5 - 15t^4 + 10t^3


def perlin_noise(rng: np.random.Generator, shape: tuple[int, int], res: tuple[int, int]) -> np.ndarray:
    """2-D Perlin gradient noise.

    Unit gradients ``g_ij = (cos θ_ij, sin θ_ij)``, ``θ_ij ~ U[0, 2π)``, sit on the corners of a
    lattice of ``ry × rx`` cells stretched over the output. A sample at lattice coordinates
    ``(i + u, j + v)`` (cell ``(i, j)``, offsets ``u, v ∈ [0, 1)``) is::

        d_ab = g_{i+a, j+b} · (u - a, v - b)                 for a, b ∈ {0, 1}
        n    = lerp(lerp(d00, d01, f(v)), lerp(d10, d11, f(v)), f(u)),  f(t) = 6t^5 - 15t^4 + 10t^3

    Args:
        rng: generator the gradient angles are drawn from.
        shape: (H, W) number of samples.
        res: (ry, rx) lattice cells along y and x, each ≥ 1.

    Returns:
        (H, W) float32 noise, 0 on lattice points, within about [-0.71, 0.71].
    """
    h, w = shape
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    theta = rng.uniform(0.0, 2.0 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(theta).astype(np.float32), np.cos(theta).astype(np.float32)  # (ry+1, rx+1)
    y = (np.arange(h, dtype=np.float32) + 0.5) * (ry / h)
    x = (np.arange(w, dtype=np.float32) + 0.5) * (rx / w)
    i = np.minimum(y.astype(np.int64), ry - 1)
    j = np.minimum(x.astype(np.int64), rx - 1)
    u, v = (y - i)[:, None], (x - j)[None, :]  # (H, 1), (1, W)
    ii, jj = i[:, None], j[None, :]

    def corner(a: int, b: int) -> np.ndarray:  # (H, W) dot product with corner (i+a, j+b)
        return gy[ii + a, jj + b] * (u - a) + gx[ii + a, jj + b] * (v - b)

    fu, fv = _fade(u), _fade(v)
    d00, d01, d10, d11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    n0 = d00 + fv * (d01 - d00)
    n1 = d10 + fv * (d11 - d10)
    return (n0 + fu * (n1 - n0)).astype(np.float32)


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], res: tuple[int, int],
                  octaves: int = 2, persistence: float = 0.5) -> np.ndarray:
    """Sum of Perlin octaves, ``n = Σ_k p^k · perlin(res · 2^k)``, scaled to unit standard deviation.

    Args:
        rng: generator.
        shape: (H, W) number of samples.
        res: (ry, rx) lattice cells of the first octave; finer octaves stop at one cell per sample.
        octaves: number of octaves (≥ 1).
        persistence: amplitude ratio p between successive octaves.

    Returns:
        (H, W) float32 field with zero mean and unit standard deviation (all zeros if flat).
    """
    h, w = shape
    total = np.zeros(shape, np.float32)
    for k in range(max(1, octaves)):
        r = (min(h, res[0] * 2 ** k), min(w, res[1] * 2 ** k))
        total += persistence ** k * perlin_noise(rng, shape, r)
    total -= total.mean()
    std = float(total.std())
    return total / std if std > 1e-8 else total


def _grid_shape(h: int, w: int) -> tuple[int, int]:
    f = min(1.0, FIELD_SIDE / max(h, w))
    return max(3, round(h * f)), max(3, round(w * f))


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 2) -> np.ndarray:
    """Fractal noise of about ``cells`` lattice cells across the longer side, resized to (h, w).

    Returns:
        (h, w) float32, roughly unit standard deviation.
    """
    lh, lw = _grid_shape(h, w)
    side = max(lh, lw)
    res = (max(1, round(cells * lh / side)), max(1, round(cells * lw / side)))
    field = fractal_noise(rng, (lh, lw), res, octaves)
    return cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR) if (lh, lw) != (h, w) else field


def region_field(rng: np.random.Generator, area: float, max_hw: tuple[int, int], fill: float,
                 irregularity: float, max_aspect: float = 4.0) -> np.ndarray:
    """Signed field of an irregular region of about ``area`` pixels: the region is ``field > 0``.

    An ellipse with semi-axes a ≥ b (aspect ρ = a/b ~ logU[1, max_aspect]) rotated by φ ~ U[0, π)
    bounds the region; in its normalised coordinates ``r² = (x'/a)² + (y'/b)²`` the score is::

        s = irregularity · n + (1 - r²)         (n: unit-variance fractal Perlin noise)

    and the region is the top ``fill`` share of the ellipse by score, so ``π a b · fill = area``.
    A small irregularity gives a wobbly ellipse, a large one DRAEM-like Perlin blobs (sometimes
    several pieces) inside the ellipse. The field is ``s - threshold`` (below it outside the ellipse),
    so ``clip(field / softness, 0, 1)`` is a soft-edged alpha.

    Args:
        rng: generator.
        area: wanted region area in pixels (the ellipse shrinks to fit ``max_hw``).
        max_hw: (H, W) the largest box allowed (the image size).
        fill: share of the ellipse the region covers, in (0, 1).
        irregularity: weight of the noise against the elliptic falloff (≥ 0).
        max_aspect: largest axis ratio a/b.

    Returns:
        (h, w) float32 field over the ellipse's bounding box, h ≤ H, w ≤ W.
    """
    rho = math.exp(rng.uniform(0.0, math.log(max_aspect)))
    phi = rng.uniform(0.0, math.pi)
    ab = max(area, 4.0) / (fill * math.pi)
    a, b = math.sqrt(ab * rho), math.sqrt(ab / rho)
    c, s = math.cos(phi), math.sin(phi)
    hx, hy = math.hypot(a * c, b * s), math.hypot(a * s, b * c)  # half extents of the rotated ellipse
    shrink = min(1.0, (max_hw[1] - 1) / (2 * hx + 1e-6), (max_hw[0] - 1) / (2 * hy + 1e-6))
    a, b, hx, hy = a * shrink, b * shrink, hx * shrink, hy * shrink
    h = int(min(max_hw[0], max(3, math.ceil(2 * hy) + 2)))
    w = int(min(max_hw[1], max(3, math.ceil(2 * hx) + 2)))
    lh, lw = _grid_shape(h, w)
    dy = ((np.arange(lh, dtype=np.float32) + 0.5) / lh - 0.5)[:, None] * h  # (lh, 1) pixels from centre
    dx = ((np.arange(lw, dtype=np.float32) + 0.5) / lw - 0.5)[None, :] * w  # (1, lw)
    r2 = ((dx * c + dy * s) / max(a, 0.5)) ** 2 + ((dy * c - dx * s) / max(b, 0.5)) ** 2  # (lh, lw)
    cells = rng.uniform(1.5, 6.0)
    side = max(lh, lw)
    res = (max(1, round(cells * lh / side)), max(1, round(cells * lw / side)))
    score = irregularity * fractal_noise(rng, (lh, lw), res) + (1.0 - r2)
    inside = r2 <= 1.0
    if not inside.any():
        inside = r2 <= r2.min()
    thr = float(np.quantile(score[inside], 1.0 - fill))
    score = np.where(inside, score, min(float(score.min()), thr) - 1.0) - thr
    return cv2.resize(score, (w, h), interpolation=cv2.INTER_LINEAR) if (lh, lw) != (h, w) else score


def stroke_alpha(rng: np.random.Generator, length: float, width: float, curved: bool,
                 taper: bool) -> np.ndarray:
    """Anti-aliased stroke (a scratch or scar) along a quadratic Bézier curve, in its own box.

    The curve ``B(t) = (1-t)² P0 + 2t(1-t) P1 + t² P2`` runs from P0 to P2 (distance ``length``,
    direction ~ U[0, π)); P1 is pushed sideways by ``bend · length``, bend ~ U[-0.35, 0.35] when
    ``curved`` else 0. The width is constant, or ``width · (0.25 + 0.75 sin(π t))`` when ``taper``.

    Returns:
        (h, w) float32 alpha in [0, 1].
    """
    theta = rng.uniform(0.0, math.pi)
    d = np.array([math.cos(theta), math.sin(theta)])
    p0, p2 = -0.5 * length * d, 0.5 * length * d
    p1 = np.array([-d[1], d[0]]) * (rng.uniform(-0.35, 0.35) * length if curved else 0.0)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2  # (24, 2) x, y
    widths = width * (0.25 + 0.75 * np.sin(np.pi * t[:, 0])) if taper else np.full(len(t), width)
    pad = width + 2.0
    lo = pts.min(0) - pad
    pts = pts - lo
    w, h = (np.ceil(pts.max(0) + pad)).astype(int)
    canvas = np.zeros((max(h, 1), max(w, 1)), np.uint8)
    fixed = np.round(pts * 16).astype(np.int32)  # 4 fractional bits (cv2 shift=4)
    for k in range(len(pts) - 1):
        cv2.line(canvas, tuple(int(v) for v in fixed[k]), tuple(int(v) for v in fixed[k + 1]), 255,
                 max(1, round(float(widths[k]))), cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255.0


def rect_alpha(height: float, width: float, angle_deg: float) -> np.ndarray:
    """Filled rectangle of the given sides rotated by ``angle_deg``, in its bounding box.

    Returns:
        (h, w) float32 alpha, 1 inside and 0 outside (hard edge).
    """
    box = cv2.boxPoints(((0.0, 0.0), (float(width), float(height)), float(angle_deg)))  # (4, 2) x, y
    box -= box.min(0) - 0.5
    w, h = (np.ceil(box.max(0) + 0.5)).astype(int)
    canvas = np.zeros((max(h, 1), max(w, 1)), np.uint8)
    cv2.fillPoly(canvas, [np.round(box * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    return canvas.astype(np.float32) / 255.0
