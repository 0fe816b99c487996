"""Texture sources and colour changes for the anomaly synthesizer.

Three sources feed the DRAEM-style defect (Zavrtanik et al., ICCV 2021, which blends Perlin
regions with DTD textures): procedural patterns drawn here, crops of the image itself (in
``defects.py``), and an optional folder of any images (``TextureFolder``). All functions work on
float32 arrays with values in [0, 255] and C = 1 (grayscale) or 3 (RGB) channels.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .noise import smooth_field

PATTERNS = ("fractal", "stripes", "checker", "speckle", "marble", "flat")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                  ".pnm", ".tga", ".jfif")
TEXTURE_SIDE = 384  # textures from a folder are decoded and kept at most this large
CACHE_SIZE = 48  # decoded folder textures kept per synthesizer (per DataLoader worker)


def colour_pair(rng: np.random.Generator, channels: int, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two colours (C,) for a pattern: c0 is random or near ``ref`` (the local mean colour);
    c1 = c0 + m·d with a random unit direction d and magnitude m ~ U[40, 160], clipped to [0, 255]."""
    c0 = rng.uniform(0, 255, channels) if rng.random() < 0.5 else ref + rng.normal(0, 30, channels)
    d = rng.normal(0, 1, channels)
    d /= max(float(np.linalg.norm(d)), 1e-6)
    c1 = c0 + rng.uniform(40, 160) * d
    return np.clip(c0, 0, 255).astype(np.float32), np.clip(c1, 0, 255).astype(np.float32)


def _pattern(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """(h, w) float32 pattern in [0, 1]."""
    if name == "fractal":
        t = smooth_field(rng, h, w, rng.uniform(2, 12), octaves=3)
        t = 1.0 / (1.0 + np.exp(-rng.uniform(1.0, 4.0) * t))  # logistic contrast
    elif name == "flat":
        t = 0.1 * smooth_field(rng, h, w, 2.0, octaves=1)
    elif name == "speckle":
        t = (smooth_field(rng, h, w, rng.uniform(8, 24), octaves=1) > rng.uniform(0.5, 1.5))
    else:
        theta, period = rng.uniform(0, math.pi), rng.uniform(3.0, max(4.0, min(h, w) / 3.0))
        y = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
        x = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
        u = (x * math.cos(theta) + y * math.sin(theta)) * (2 * math.pi / period)
        if name == "marble":
            u = u + rng.uniform(2, 6) * smooth_field(rng, h, w, rng.uniform(2, 6), octaves=2)
        if name == "checker":
            v = (y * math.cos(theta) - x * math.sin(theta)) * (2 * math.pi / period)
            s = np.sin(u) * np.sin(v)
        else:
            s = np.sin(u + rng.uniform(0, 2 * math.pi))
        t = np.clip(0.5 + 0.5 * s * rng.uniform(1.0, 8.0), 0.0, 1.0)  # sharpened sine
    return t.astype(np.float32)


def procedural_texture(rng: np.random.Generator, h: int, w: int, channels: int,
                       ref: np.ndarray) -> np.ndarray:
    """A random pattern in two colours: ``c0 + t · (c1 - c0)`` with ``t ∈ [0, 1]`` one of
    ``PATTERNS`` (fractal Perlin, stripes, checker, speckle, marble veins, near-flat paint).

    Args:
        rng: generator.
        h, w: size.
        channels: C, 1 or 3.
        ref: (C,) local mean colour the pattern may stay close to.

    Returns:
        (h, w, C) float32 in [0, 255].
    """
    name = PATTERNS[int(rng.integers(len(PATTERNS)))]
    t = _pattern(rng, name, h, w)
    c0, c1 = colour_pair(rng, channels, ref)
    mat = np.concatenate([(c1 - c0)[:, None], c0[:, None]], axis=1)  # (C, 2): t ↦ c0 + t (c1 - c0)
    return cv2.transform(t[:, :, None], mat).reshape(h, w, channels)


def _hue_matrix(degrees: float, saturation: float = 1.0) -> np.ndarray:
    """3×3 ``R S``: rotation by ``degrees`` about the gray axis k = (1, 1, 1)/√3 (Rodrigues,
    ``R = cos θ I + sin θ [k]× + (1 - cos θ) k kᵀ``) after the saturation scaling
    ``S = σ I + (1 - σ) k kᵀ`` (σ = ``saturation``); gray stays gray under both."""
    th = math.radians(degrees)
    k = np.full(3, 1 / math.sqrt(3))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    kk = np.outer(k, k)
    rot = math.cos(th) * np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * kk
    return rot @ (saturation * np.eye(3) + (1 - saturation) * kk)


def hue_rotate(rgb: np.ndarray, degrees: float, saturation: float = 1.0) -> np.ndarray:
    """(h, w, 3) float32 colours mapped by ``_hue_matrix(degrees, saturation)``."""
    return cv2.transform(rgb, _hue_matrix(degrees, saturation).astype(np.float32))


def jitter_colour(rng: np.random.Generator, x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Random brightness, contrast and (RGB) saturation and hue change of a (h, w, C) float32 crop.

    One affine map per crop: contrast c ~ U[1 - 0.4s, 1 + 0.4s] about the crop mean μ and a
    brightness shift b ~ U[-40s, 40s] (s = strength), ``x' = c x + (1 - c) μ + b``; for RGB then
    ``x'' = R S x'`` with saturation σ ~ U[1 - 0.6s, 1 + 0.6s] and, with probability 0.4, a hue
    rotation by U[-90, 90]·s degrees (``_hue_matrix``).

    Returns:
        (h, w, C) float32 (not clipped; composing clips).
    """
    chans = x.shape[2]
    mu = np.array(cv2.mean(x)[:chans])
    c = rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength)
    lin, off = c * np.eye(chans), (1 - c) * mu + rng.uniform(-40, 40) * strength
    if chans == 3:
        sat = rng.uniform(1 - 0.6 * strength, 1 + 0.6 * strength)
        deg = rng.uniform(-90, 90) * strength if rng.random() < 0.4 else 0.0
        rs = _hue_matrix(deg, sat)
        lin, off = rs @ lin, rs @ off
    mat = np.concatenate([lin, off[:, None]], axis=1).astype(np.float32)  # (C, C + 1)
    return cv2.transform(x, mat).reshape(x.shape)


class TextureFolder:
    """Images of any size and format from a folder (searched recursively), used as textures.

    Files are listed and their headers checked once; unreadable ones are skipped with a warning
    (also a file that only fails when decoded later). Decoded textures (at most ``TEXTURE_SIDE``
    a side) are cached, up to ``CACHE_SIZE`` per instance; the cache is not pickled.

    Args:
        folder: the texture folder.

    Raises:
        ValueError: the folder is missing, holds no image files, or none of them can be read.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"texture_dir {self.folder}: no such folder")
        candidates = sorted(p for p in self.folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not candidates:
            raise ValueError(f"texture_dir {self.folder}: no image files in it "
                             f"(expected {', '.join(IMAGE_SUFFIXES[:5])}, ...)")
        self.files: list[Path] = []
        for path in candidates:
            try:
                with Image.open(path) as im:
                    im.size  # noqa: B018 - the header is parsed on open
                self.files.append(path)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                warnings.warn(f"texture_dir: skipping unreadable image {path}: {exc}", stacklevel=2)
        if not self.files:
            raise ValueError(f"texture_dir {self.folder}: none of its {len(candidates)} image files "
                             "could be read")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "files": self.files, "_bad": set(self._bad)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache = OrderedDict()

    def _load(self, i: int) -> np.ndarray | None:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        try:
            with Image.open(self.files[i]) as im:
                im.draft("RGB", (TEXTURE_SIDE, TEXTURE_SIDE))  # fast reduced JPEG decoding
                im = im.convert("RGB")
                im.thumbnail((TEXTURE_SIDE, TEXTURE_SIDE), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            warnings.warn(f"texture_dir: skipping unreadable image {self.files[i]}: {exc}", stacklevel=3)
            self._bad.add(i)
            return None
        self._cache[i] = arr
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return arr

    def sample(self, rng: np.random.Generator, tries: int = 8) -> np.ndarray | None:
        """A random texture as (h, w, 3) uint8, or None when ``tries`` picks were all unreadable.

        A known-bad file costs the same draw as a fresh failure, so the random stream does not
        depend on which process discovered it.
        """
        for _ in range(tries):
            i = int(rng.integers(len(self.files)))
            if i in self._bad:
                continue
            arr = self._load(i)
            if arr is not None:
                return arr
        return None
