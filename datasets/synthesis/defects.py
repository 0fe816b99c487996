"""The defect kinds of the anomaly synthesizer and the canvas they draw on.

Every kind has the signature ``(rng, canvas, area) -> None``: it draws one defect of about
``area`` pixels, centred on a foreground point when the canvas has a foreground, and composes it
into ``canvas.out`` inside one box as ``out = in + α · (content - in)`` with a per-pixel alpha
α ∈ [0, 1] (cut to the foreground). Kinds, after DRAEM (Zavrtanik et al., ICCV 2021) and
CutPaste (Li et al., CVPR 2021):

* ``texture``: a Perlin-noise region blended with a texture, α = β ~ U[0.35, 1] (DRAEM's
  ``(1 - β) I + β A`` inside the region); the texture is a jittered, rotated crop of the image
  itself, a procedural pattern, or an image from ``texture_dir``.
* ``cutpaste``: a rectangle (aspect 0.3-3.3, maybe rotated) cut elsewhere, jittered, pasted.
* ``scar``: a thin, long, straight or curved (tapered) stroke, pasted from elsewhere of the image
  or painted in a colour darker/brighter than the surface or random.
* ``corruption``: a soft-edged region where the surface is colour-shifted, tinted, blurred,
  noised, darkened/brightened or hue-rotated.
* ``hole``: a missing part (the background shows through) or a dark hole with shading.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from .foreground import channel_max
from .noise import rect_alpha, region_field, stroke_alpha
from .textures import TextureFolder, hue_rotate, jitter_colour, procedural_texture

Box = tuple[slice, slice]


@dataclass
class Canvas:
    """State of one synthesis attempt.

    Attributes:
        image: (H, W, C) uint8 input, C = 1 or 3; not modified.
        out: (H, W, C) uint8 output, edited in place.
        fg: (H, W) bool foreground, or None (defects go anywhere).
        fg_points: (K, 2) float64 (y, x) foreground points to centre defects on, or None.
        bg_points: (K', 2) float64 (y, x) background points (a missing part shows them), or None.
        textures: images from ``texture_dir``, or None.
        source_weights: relative weights of the texture sources "self", "procedural", "folder".
        boxes: the boxes written so far (the only places ``out`` may differ from ``image``).
        core: (H, W) bool, pixels where a defect's α is at least half its maximum.
    """

    image: np.ndarray
    out: np.ndarray
    fg: np.ndarray | None = None
    fg_points: np.ndarray | None = None
    bg_points: np.ndarray | None = None
    textures: TextureFolder | None = None
    source_weights: dict[str, float] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)
    core: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def point(self, rng: np.random.Generator, on_fg: bool = True) -> tuple[float, float]:
        """A random (y, x): a foreground point when known and ``on_fg``, else uniform."""
        pts = self.fg_points if on_fg else None
        if pts is not None and len(pts):
            return tuple(pts[int(rng.integers(len(pts)))])
        return rng.uniform(0, self.shape[0]), rng.uniform(0, self.shape[1])

    def locate(self, cy: float, cx: float, h: int, w: int) -> tuple[Box, Box]:
        """Image and local slices for an (h, w) array centred near (cy, cx): shifted to lie
        inside the image, and centre-cropped along any side longer than the image."""
        (H, W), out = self.shape, []
        for c, n, N in ((cy, h, H), (cx, w, W)):
            m = min(n, N)
            start = min(max(int(round(c - m / 2)), 0), N - m)
            local = (n - m) // 2
            out.append((slice(start, start + m), slice(local, local + m)))
        return (out[0][0], out[1][0]), (out[0][1], out[1][1])

    def apply(self, box: Box, alpha: np.ndarray, content: np.ndarray) -> None:
        """Compose ``out[box] = clip(round((1 - α) in + α content), 0, 255)``, α (h, w) cut to the
        foreground, content (h, w, C) float32 (any range)."""
        if self.fg is not None:
            alpha = alpha * self.fg[box]
        amax = float(alpha.max()) if alpha.size else 0.0
        if amax <= 0.0:
            return
        base = self.out[box]
        h, w, c = base.shape
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        new = cv2.blendLinear(base.astype(np.float32), np.ascontiguousarray(content, dtype=np.float32),
                              1.0 - alpha, alpha)  # (1 - α) in + α content
        np.maximum(new, 0.0, out=new)
        self.out[box] = cv2.convertScaleAbs(new).reshape(h, w, c)  # rounds and saturates at 255
        self.boxes.append(box)
        if self.core is None:
            self.core = np.zeros(self.shape, bool)
        self.core[box] |= alpha >= 0.5 * amax

    def changed(self, tolerance: int) -> np.ndarray:
        """(H, W) bool ``max_c |out - image| > tolerance``, evaluated on the written boxes only
        (everywhere else ``out`` equals ``image`` by construction)."""
        mask = np.zeros(self.shape, bool)
        for box in self.boxes:
            d = cv2.absdiff(self.out[box], self.image[box]).reshape(mask[box].shape + (-1,))  # (h, w, C)
            mask[box] = channel_max(d) > tolerance
        return mask

    def reset(self) -> None:
        """Undo every write (``out = image`` on the written boxes) for a new attempt."""
        for box in self.boxes:
            self.out[box] = self.image[box]
        self.boxes.clear()
        self.core = None

    def crop(self, box: Box) -> np.ndarray:
        """(h, w, C) float32 of the current output inside ``box``."""
        return self.out[box].astype(np.float32)

    def warp_from(self, centre: tuple[float, float], h: int, w: int, angle: float,
                  scale: float = 1.0, flip: bool = False, source: np.ndarray | None = None) -> np.ndarray:
        """An (h, w) patch of ``source`` (default: the input image) around ``centre`` (y, x),
        rotated by ``angle`` degrees, scaled (source pixels per patch pixel) and maybe mirrored.

        The inverse map is ``src = c_s + s R(θ) F (p - c_p)`` (F = diag(-1, 1) when flipped),
        sampled bilinearly with reflected borders.

        Returns:
            (h, w, C) float32, C the channels of ``source``.
        """
        src = self.image if source is None else source
        th = math.radians(angle)
        a, b = scale * math.cos(th), scale * math.sin(th)
        fx = -1.0 if flip else 1.0
        m = np.array([[a * fx, -b], [b * fx, a]])
        cp = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        t = np.array([centre[1], centre[0]]) - m @ cp
        mat = np.hstack([m, t[:, None]]).astype(np.float64)
        patch = cv2.warpAffine(src, mat, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)
        return patch.reshape(h, w, src.shape[2]).astype(np.float32)

    def other_point(self, rng: np.random.Generator, cy: float, cx: float, gap: float,
                    on_fg: bool) -> tuple[float, float]:
        """Of four random points, the first at least ``gap`` from (cy, cx), else the farthest."""
        best, best_d = None, -1.0
        for _ in range(4):
            p = self.point(rng, on_fg)
            d = math.hypot(p[0] - cy, p[1] - cx)
            if d >= gap:
                return p
            if d > best_d:
                best, best_d = p, d
        return best


def mean_colour(x: np.ndarray) -> np.ndarray:
    """(h, w, C) → (C,) float32 mean (cv2.mean, much faster than numpy's over a small last axis)."""
    return np.array(cv2.mean(x)[: x.shape[2]], np.float32)


def uniform_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean uniform noise of standard deviation ``sigma``: ``(U[0, 1) - 0.5) · σ √12``
    (float32; several times faster to draw than Gaussian noise, and looks alike)."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(sigma * math.sqrt(12.0))


def _as_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """(h, w, 3) → (h, w, C): gray (ITU-R 601 luma) when C = 1."""
    if channels == 3:
        return arr
    return (arr @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]


def _texture_content(rng: np.random.Generator, cv: Canvas, box: Box, cy: float, cx: float) -> np.ndarray:
    """(h, w, C) float32 texture for the box: a crop of the image, a pattern or a folder image."""
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    chans = cv.image.shape[2]
    names = [n for n in ("self", "procedural", "folder") if cv.source_weights.get(n, 0) > 0
             and (n != "folder" or cv.textures is not None)]
    p = np.array([cv.source_weights[n] for n in names], np.float64)
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    if name == "folder":
        tex = cv.textures.sample(rng)
        if tex is not None:
            th, tw = tex.shape[:2]
            scale = rng.uniform(0.25, 1.0) * min(th, tw) / max(h, w)  # the box spans 25-100 % of it
            centre = (rng.uniform(0.3, 0.7) * th, rng.uniform(0.3, 0.7) * tw)
            patch = cv.warp_from(centre, h, w, rng.uniform(0, 360), scale, source=tex)
            return jitter_colour(rng, _as_channels(patch, chans), 0.5)
        name = "procedural"
    if name == "self":
        src = cv.other_point(rng, cy, cx, 0.6 * max(h, w), on_fg=rng.random() < 0.5)
        angle = float(rng.choice([0, 90, 180, 270])) if rng.random() < 0.5 else rng.uniform(0, 360)
        patch = cv.warp_from(src, h, w, angle, rng.uniform(0.6, 1.6), bool(rng.random() < 0.5))
        return jitter_colour(rng, patch, rng.uniform(0.3, 1.5))
    ref = mean_colour(cv.out[box])
    return procedural_texture(rng, h, w, chans, ref)


def texture_defect(rng: np.random.Generator, cv: Canvas, area: float) -> None:
    """DRAEM-style: a Perlin region blended with a texture (see the module docstring)."""
    field_ = region_field(rng, area, cv.shape, rng.uniform(0.45, 0.85), rng.uniform(0.3, 3.0))
    cy, cx = cv.point(rng)
    box, local = cv.locate(cy, cx, *field_.shape)
    region = (field_[local] > 0).astype(np.float32)
    if rng.random() < 0.5:  # a slightly feathered edge
        region = cv2.GaussianBlur(region, (0, 0), rng.uniform(0.5, 1.5))
    beta = 1.0 if rng.random() < 0.3 else rng.uniform(0.35, 1.0)
    cv.apply(box, beta * region, _texture_content(rng, cv, box, cy, cx))


def cutpaste_defect(rng: np.random.Generator, cv: Canvas, area: float) -> None:
    """CutPaste: a rectangle from elsewhere, scaled, maybe rotated, flipped, colour-jittered."""
    H, W = cv.shape
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    ph, pw = math.sqrt(area / aspect), math.sqrt(area * aspect)
    shrink = min(1.0, 0.9 * H / ph, 0.9 * W / pw)
    ph, pw = max(2.0, ph * shrink), max(2.0, pw * shrink)
    angle = rng.uniform(-45, 45) if rng.random() < 0.5 else 0.0
    alpha = rect_alpha(ph, pw, angle)
    cy, cx = cv.point(rng)
    box, local = cv.locate(cy, cx, *alpha.shape)
    alpha = alpha[local]
    h, w = alpha.shape
    src = cv.other_point(rng, cy, cx, 0.7 * max(ph, pw), on_fg=rng.random() < 0.6)
    patch = cv.warp_from(src, h, w, angle + rng.uniform(-10, 10), rng.uniform(0.8, 1.25),
                         bool(rng.random() < 0.3))
    if rng.random() < 0.5:
        patch = jitter_colour(rng, patch, rng.uniform(0.2, 0.8))
    cv.apply(box, alpha, patch)


def scar_defect(rng: np.random.Generator, cv: Canvas, area: float) -> None:
    """A thin long stroke: pasted from elsewhere, or painted darker/brighter or in a colour."""
    H, W = cv.shape
    side = min(H, W)
    length = side * rng.uniform(0.12, 0.55)
    width = max(1.5, min(length * rng.uniform(0.015, 0.07), math.sqrt(area) * 0.5))
    curved = rng.random() < 0.6
    alpha = stroke_alpha(rng, length, width, curved, taper=curved and rng.random() < 0.6)
    cy, cx = cv.point(rng)
    box, local = cv.locate(cy, cx, *alpha.shape)
    alpha = alpha[local]
    h, w = alpha.shape
    chans = cv.image.shape[2]
    mode = rng.random()
    if mode < 0.35:
        src = cv.other_point(rng, cy, cx, 0.5 * length, on_fg=rng.random() < 0.5)
        content = jitter_colour(rng, cv.warp_from(src, h, w, rng.uniform(0, 360)), rng.uniform(0, 1))
    else:
        base = cv.crop(box)
        if mode < 0.8:  # darker or brighter than the surface (scratch, crack)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            content = base + sign * rng.uniform(40, 130)
        else:  # a foreign colour
            content = np.broadcast_to(rng.uniform(0, 255, chans).astype(np.float32), base.shape)
        content = content + uniform_noise(rng, (h, w, 1), rng.uniform(0, 8))
    cv.apply(box, alpha * rng.uniform(0.6, 1.0), content)


def _blur(rng: np.random.Generator, cv: Canvas, box: Box) -> np.ndarray:
    """Gaussian blur of the box (σ ~ U[1.5, 5] px per 256 px of image side) with a margin; large
    σ is applied on a downscaled copy to keep the cost flat."""
    H, W = cv.shape
    sigma = rng.uniform(1.5, 5.0) * max(1.0, min(H, W) / 256.0)
    m = int(math.ceil(2.5 * sigma))
    ys, xs = box
    y0, y1, x0, x1 = max(0, ys.start - m), min(H, ys.stop + m), max(0, xs.start - m), min(W, xs.stop + m)
    region = cv.out[y0:y1, x0:x1]
    f = max(1.0, sigma / 2.0)
    small = cv2.resize(region, (max(1, round((x1 - x0) / f)), max(1, round((y1 - y0) / f))),
                       interpolation=cv2.INTER_AREA) if f > 1.0 else region
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma / f)
    big = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) if f > 1.0 else small
    big = big.reshape(y1 - y0, x1 - x0, cv.image.shape[2])
    return big[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]


def corruption_defect(rng: np.random.Generator, cv: Canvas, area: float) -> None:
    """A soft region, α = clip(field / softness, 0, 1), with a local corruption of the surface."""
    field_ = region_field(rng, area, cv.shape, rng.uniform(0.5, 0.9), rng.uniform(0.1, 2.5))
    cy, cx = cv.point(rng)
    box, local = cv.locate(cy, cx, *field_.shape)
    alpha = np.clip(field_[local] / rng.uniform(0.05, 0.6), 0.0, 1.0)
    base = cv.crop(box)
    chans = base.shape[2]
    ops = ("shift", "tint", "blur", "noise", "gain") + (("hue",) if chans == 3 else ())
    op = ops[int(rng.integers(len(ops)))]
    if op == "shift":  # colour shift: + m·d, m ~ U[25, 90]
        d = rng.normal(0, 1, chans)
        d = d / max(float(np.linalg.norm(d)), 1e-6)  # a random direction (±1 for grayscale)
        content = base + (rng.uniform(25, 90) * d).astype(np.float32)
    elif op == "tint":  # stain: pull towards a random colour
        s = rng.uniform(0.3, 0.8)
        content = (1 - s) * base + s * rng.uniform(0, 255, chans).astype(np.float32)
    elif op == "blur":
        content = _blur(rng, cv, box)
    elif op == "noise":
        grain = 1 if rng.random() < 0.6 else 2  # fine, or 2-pixel grain
        h, w = base.shape[:2]
        size = (-(-h // grain), -(-w // grain), chans if rng.random() < 0.5 else 1)
        noise = uniform_noise(rng, size, rng.uniform(12, 45))
        if grain > 1:
            noise = noise.repeat(grain, 0).repeat(grain, 1)[:h, :w]
        content = base + noise
    elif op == "gain":  # darker or brighter: x·g + 30(g - 1)
        g = rng.uniform(0.3, 0.7) if rng.random() < 0.5 else rng.uniform(1.3, 1.9)
        content = base * g + 30.0 * (g - 1.0)
    else:
        content = hue_rotate(base, rng.uniform(40, 180), saturation=rng.uniform(1.0, 2.0))
    cv.apply(box, alpha, content)


def hole_defect(rng: np.random.Generator, cv: Canvas, area: float) -> None:
    """A missing part (a background crop shows through) or a dark hole, darker towards its middle."""
    field_ = region_field(rng, area, cv.shape, rng.uniform(0.6, 0.9), rng.uniform(0.1, 1.2))
    cy, cx = cv.point(rng)
    box, local = cv.locate(cy, cx, *field_.shape)
    f = field_[local]
    alpha = np.clip(f / rng.uniform(0.02, 0.15), 0.0, 1.0)
    h, w = f.shape
    if cv.bg_points is not None and len(cv.bg_points) and rng.random() < 0.7:
        src = tuple(cv.bg_points[int(rng.integers(len(cv.bg_points)))])
        content = cv.warp_from(src, h, w, rng.uniform(0, 360))
    else:
        base = cv.crop(box)
        depth = np.clip(f / max(float(f.max()), 1e-6), 0.0, 1.0)[:, :, None]  # 0 at the rim, 1 inside
        level = mean_colour(base) * rng.uniform(0.05, 0.4) + rng.uniform(0, 20)
        content = level * (1.0 - rng.uniform(0.2, 0.7) * depth)
        content = content + uniform_noise(rng, (h, w, 1), rng.uniform(1, 6))
    cv.apply(box, alpha, content)


DefectFn = Callable[[np.random.Generator, Canvas, float], None]
DEFECTS: dict[str, DefectFn] = {
    "texture": texture_defect,
    "cutpaste": cutpaste_defect,
    "scar": scar_defect,
    "corruption": corruption_defect,
    "hole": hole_defect,
}
