"""``AnomalySynthesizer``: a normal image in, the image with a synthesized defect and its exact mask out.

Used to train the APRIL-GAN projections (Chen et al., 2023, arXiv:2305.17382) from normal images
only, in the spirit of DRAEM (Zavrtanik et al., ICCV 2021) and CutPaste (Li et al., CVPR 2021).
One call draws everything from ``np.random.default_rng([seed, epoch, index])``:

1. the foreground is estimated once (``foreground.estimate_foreground``); defects are centred on it
   and cut to it, or go anywhere when none is plausible;
2. a total defect area ``A = a · H · W``, a ~ logU(area_range), capped at 30 % of the foreground;
   with probability ``p_multiple`` it is split over 2..max_defects smaller defects;
3. each defect's kind is drawn with the normalised ``weights`` over ``kinds`` (``defects.DEFECTS``);
4. the mask is exactly ``max_c |out - in| > tolerance`` on the uint8 values;
5. a draw is accepted when the mask has at least ``max(1, min_area · H · W)`` pixels and covers at
   least ``min_coverage`` of the drawn defects' cores (where α ≥ half its maximum), so no defect is
   mostly invisible; otherwise the next draw of the same generator is tried, up to ``max_tries``.
   If none is accepted, the draw with the largest mask is returned; if every draw changed nothing
   (e.g. a flat image and only blur allowed), a fallback ellipse of about 1 % of the image (on the
   foreground when known) has every value moved by 64 levels (+64 below 128, -64 otherwise), so the
   mask is never empty (``tolerance`` must be < 64).

Same inputs give bit-identical outputs with the same numpy/OpenCV build.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from .defects import DEFECTS, Canvas
from .foreground import downscale, foreground_lowres, upscale_mask
from .textures import TextureFolder

KINDS = tuple(DEFECTS)
DEFAULT_WEIGHTS = {"texture": 0.3, "cutpaste": 0.2, "scar": 0.15, "corruption": 0.25, "hole": 0.1}
SUPPORTED_MODES = ("L", "LA", "RGB", "RGBA")
MAX_POINTS = 4096  # foreground/background points kept to centre defects on


@dataclass(eq=False)
class AnomalySynthesizer:
    """Synthesizes one anomaly per call, deterministically per (seed, epoch, index).

    Args:
        seed: base seed; the generator of a call is ``default_rng([seed, epoch, index])``.
        texture_dir: optional folder of any images used as DRAEM textures.
        kinds: the defect kinds to draw from (a subset of ``KINDS``), e.g. ``("cutpaste",)``.
        weights: relative weight per kind (missing kinds: ``DEFAULT_WEIGHTS``).
        tolerance: a pixel is in the mask when a channel changed by more than this (0..63).
        area_range: (min, max) total defect area as a share of the image.
        p_multiple: probability of splitting the area over several smaller defects.
        max_defects: most defects in one call (≥ 2 to allow splitting).
        on_foreground: place defects on the estimated foreground when there is one.
        max_tries: draws tried before the fallback (≥ 1).
        min_coverage: share of the drawn cores the mask must cover for a draw to be accepted.
        min_area: smallest accepted mask as a share of the image.
        texture_weights: weights of the texture sources "self", "procedural", "folder" of the
            ``texture`` kind (default 0.4/0.6/0 without ``texture_dir``, 0.3/0.3/0.4 with it).

    Raises:
        ValueError: a bad argument, or ``texture_dir`` missing, empty or unreadable.
    """

    seed: int
    texture_dir: str | Path | None = None
    kinds: Sequence[str] = KINDS
    weights: Mapping[str, float] | None = None
    tolerance: int = 8
    area_range: tuple[float, float] = (0.005, 0.10)
    p_multiple: float = 0.25
    max_defects: int = 4
    on_foreground: bool = True
    max_tries: int = 8
    min_coverage: float = 0.4
    min_area: float = 0.0005
    texture_weights: Mapping[str, float] | None = None
    _textures: TextureFolder | None = field(init=False, repr=False, default=None)
    _probs: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        unknown = [k for k in self.kinds if k not in DEFECTS]
        if not self.kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        w = {**DEFAULT_WEIGHTS, **dict(self.weights or {})}
        probs = np.array([float(w.get(k, 0.0)) for k in self.kinds])
        if (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"weights must be ≥ 0 with a positive sum over {self.kinds}, got {w}")
        self._probs = probs / probs.sum()
        if not 0 <= int(self.tolerance) < 64:
            raise ValueError(f"tolerance must be in 0..63, got {self.tolerance}")
        lo, hi = self.area_range
        if not 0 < lo <= hi < 1:
            raise ValueError(f"area_range must satisfy 0 < min <= max < 1, got {self.area_range}")
        if self.max_tries < 1 or self.max_defects < 1 or not 0 <= self.p_multiple <= 1:
            raise ValueError("max_tries and max_defects must be >= 1 and p_multiple in [0, 1]")
        if self.texture_dir is not None:
            self._textures = TextureFolder(self.texture_dir)
        default = {"self": 0.4, "procedural": 0.6, "folder": 0.0} if self._textures is None else \
            {"self": 0.3, "procedural": 0.3, "folder": 0.4}
        self.texture_weights = {**default, **dict(self.texture_weights or {})}
        usable = [n for n, v in self.texture_weights.items() if v > 0 and (n != "folder" or self._textures)]
        if not usable:
            raise ValueError(f"texture_weights leave no usable texture source: {self.texture_weights}")

    def synth(self, image: Image.Image, epoch: int, index: int) -> tuple[Image.Image, np.ndarray]:
        """Synthesize a defect on ``image``.

        Args:
            image: PIL image in mode L, LA, RGB or RGBA (alpha is kept unchanged), any size.
            epoch: epoch number (≥ 0).
            index: sample index (≥ 0).

        Returns:
            (image with the defect, same size and mode; mask (H, W) bool, True where a value
            changed by more than ``tolerance``, never empty).
        """
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        if image.mode not in SUPPORTED_MODES:
            raise ValueError(f"image mode {image.mode!r} is not supported; convert it to RGB or L first")
        arr = np.asarray(image)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        colour = arr.shape[2] - (1 if image.mode in ("LA", "RGBA") else 0)
        out, mask = self.synth_array(arr[:, :, :colour], epoch, index)
        if colour < arr.shape[2]:
            out = np.concatenate([out, arr[:, :, colour:]], axis=2)
        result = Image.fromarray(out[:, :, 0] if out.shape[2] == 1 else np.ascontiguousarray(out))
        return result, mask

    def synth_array(self, array: np.ndarray, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``synth`` on a uint8 array.

        Args:
            array: (H, W) or (H, W, C) uint8, C = 1 or 3.
            epoch: epoch number (≥ 0).
            index: sample index (≥ 0).

        Returns:
            (output of the input's shape, uint8; mask (H, W) bool).
        """
        image = np.asarray(array)
        squeeze = image.ndim == 2
        image = image[:, :, None] if squeeze else image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"expected a uint8 array (H, W) or (H, W, 1|3), got {image.dtype} {image.shape}")
        if min(int(epoch), int(index), int(self.seed)) < 0:
            raise ValueError(f"seed, epoch and index must be >= 0, got {self.seed}, {epoch}, {index}")
        image = np.ascontiguousarray(image)
        rng = np.random.default_rng([int(self.seed), int(epoch), int(index)])
        fg, fg_points, bg_points = self._placement(rng, image)
        H, W = image.shape[:2]
        min_pixels = max(1, math.ceil(self.min_area * H * W))
        best: tuple[int, np.ndarray, np.ndarray] | None = None
        cv = Canvas(image, image.copy(), fg, fg_points, bg_points, self._textures, dict(self.texture_weights))
        for attempt in range(self.max_tries):
            if attempt:
                cv.reset()
            self._draw(rng, cv, fg)
            mask = cv.changed(self.tolerance)
            n = int(np.count_nonzero(mask))
            core = int(np.count_nonzero(cv.core)) if cv.core is not None else 0
            if n >= min_pixels and n >= self.min_coverage * core:
                best = (n, cv.out, mask)
                break
            if n > 0 and (best is None or n > best[0]):
                best = (n, cv.out.copy(), mask)
        if best is None:
            out, mask = self._fallback(image, fg_points)
        else:
            out, mask = best[1], best[2]
        return (out[:, :, 0] if squeeze else out), mask

    def _placement(self, rng: np.random.Generator, image: np.ndarray):
        """Full-size foreground (H, W) bool and (K, 2) fg/bg points (y, x), or Nones."""
        if not self.on_foreground:
            return None, None, None
        low = downscale(image)
        fg_low = foreground_lowres(low)
        if fg_low is None:
            return None, None, None
        H, W = image.shape[:2]
        fy, fx = H / fg_low.shape[0], W / fg_low.shape[1]

        def points(mask: np.ndarray) -> np.ndarray | None:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                return None
            if idx.size > MAX_POINTS:
                idx = idx[np.linspace(0, idx.size - 1, MAX_POINTS).astype(np.int64)]
            y, x = np.divmod(idx, mask.shape[1])
            jit = rng.uniform(0.0, 1.0, (idx.size, 2))
            return np.stack([(y + jit[:, 0]) * fy, (x + jit[:, 1]) * fx], axis=1)

        inner = fg_low & _eroded(fg_low)  # centres away from the rim
        fg_points = points(inner if inner.sum() >= 16 else fg_low)
        return upscale_mask(fg_low, H, W), fg_points, points(~fg_low)

    def _draw(self, rng: np.random.Generator, cv: Canvas, fg: np.ndarray | None) -> None:
        H, W = cv.shape
        lo, hi = self.area_range
        area = math.exp(rng.uniform(math.log(lo), math.log(hi))) * H * W
        if fg is not None:
            area = min(area, 0.3 * float(np.count_nonzero(fg)))
        n = 1
        if self.max_defects > 1 and rng.random() < self.p_multiple:
            n = int(rng.integers(2, self.max_defects + 1))
        for _ in range(n):
            kind = self.kinds[int(rng.choice(len(self.kinds), p=self._probs))]
            DEFECTS[kind](rng, cv, max(area / n, 4.0))

    def _fallback(self, image: np.ndarray, fg_points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """An ellipse of ~1 % of the image with every value moved by 64 levels (mask never empty)."""
        H, W = image.shape[:2]
        cy, cx = (fg_points[len(fg_points) // 2] if fg_points is not None else ((H - 1) / 2, (W - 1) / 2))
        ry, rx = max(0.5, 0.056 * H), max(0.5, 0.056 * W)
        y, x = np.ogrid[0:H, 0:W]
        region = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        if not region.any():
            region[min(int(cy), H - 1), min(int(cx), W - 1)] = True
        out = image.copy()
        v = out[region]
        out[region] = np.where(v < 128, v + 64, v - 64).astype(np.uint8)
        mask = np.abs(out.astype(np.int16) - image.astype(np.int16)).max(axis=2) > self.tolerance
        return out, mask


def _eroded(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool eroded by a square of about 1/32 of the shorter side."""
    k = max(3, (min(mask.shape) // 32) | 1)
    return cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
