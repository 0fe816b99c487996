"""Deterministic synthetic anomaly datasets in the MVTec-AD and VisA folder layouts.

Small stand-ins for MVTec AD (Bergmann et al., CVPR 2019) and VisA (Zou et al., ECCV 2022), the
benchmarks of APRIL-GAN (Chen et al., 2023, arXiv:2305.17382), for tests and smoke runs without
the real data. Each category is a simple drawn object or texture; every test anomaly gets one
painted defect (scratch, stain, crack or missing part) and its mask is exactly the set of pixels
that the defect changed. All images then get a light blur and noise. The same seed gives
byte-identical files; each category draws from its own RNG stream (seed + CRC32 of its name).
No meta.json is written here: another module indexes the generated folders.

    python -m tools.synthetic mvtec /tmp/synth_mvtec --categories bottle grid
    python -m tools.synthetic visa /tmp/synth_visa --image-size 120 90
"""

from __future__ import annotations

import csv
import shutil
import zlib
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from .defects import CATEGORIES, DEFECTS, Category

VISA_CSV_HEADER = ["object", "split", "label", "image", "mask"]


# ----------------------------------------------------------------------------- image synthesis
def _rng(seed: int, name: str) -> np.random.Generator:
    """Per-category stream from the seed and a stable hash of the name (not Python's hash())."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def _finish(rng: np.random.Generator, img: np.ndarray, gray: bool) -> Image.Image:
    """Gray conversion, light blur and noise, then quantise: (H, W, 3) float -> PIL "L" or "RGB"."""
    img = cv2.GaussianBlur(img.mean(-1) if gray else img, (0, 0), 0.6)  # (H, W) or (H, W, 3)
    img = img + rng.normal(0, 2.0, img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def _anomaly(rng: np.random.Generator, cat: Category, defect: str, w: int, h: int):
    """Returns (PIL image, mask (H, W) bool); redraws until the mask covers 1-10 % if it can."""
    best = None
    for _ in range(30):
        img, bg, obj = cat.render(rng, w, h)
        region, values = DEFECTS[defect](rng, img, bg, obj)
        bad = img.copy()
        bad[region] = values
        diff = np.abs(bad.mean(-1) - img.mean(-1)) if cat.gray else np.abs(bad - img).max(-1)  # (H, W)
        mask = diff > 0.5  # the pixels the defect changed
        ok = 0.01 <= mask.mean() <= 0.10
        if ok or (best is None and mask.any()):
            best = (bad, mask)
        if ok:
            break
    if best is None:
        raise RuntimeError(f"could not paint a visible {defect!r} defect at {w}x{h}")
    return _finish(rng, best[0], cat.gray), best[1]


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpg = path.suffix.upper() == ".JPG"
    img.save(path, "JPEG", quality=95, subsampling=0) if jpg else img.save(path, "PNG")


def _prepare(root, categories, image_size, counts, overwrite) -> tuple[Path, list[str], int, int]:
    """Validates arguments and clears (or refuses to touch) existing category folders."""
    categories = [categories] if isinstance(categories, str) else list(categories)
    w, h = (int(image_size),) * 2 if np.ndim(image_size) == 0 else map(int, image_size)
    if min(w, h) < 16 or min(counts) < 0:
        raise ValueError(f"need image_size >= 16 px and counts >= 0, got {image_size}, {list(counts)}")
    if not categories or len(set(categories)) != len(categories) or set(categories) - set(CATEGORIES):
        raise ValueError(f"categories must be distinct names from {list(CATEGORIES)}, got {list(categories)}")
    root = Path(root)
    busy = [root / c for c in categories if (root / c).is_dir() and any((root / c).iterdir())]
    if busy and not overwrite:
        raise ValueError(f"refusing to write into non-empty {[str(p) for p in busy]}; "
                         "pass overwrite=True (CLI: --overwrite) to replace them")
    for p in busy:
        shutil.rmtree(p)
    return root, categories, w, h


# ----------------------------------------------------------------------------- public API
def generate_mvtec(root: str | Path, categories: Sequence[str] = ("bottle", "grid"), n_train: int = 5,
                   n_test_good: int = 3, n_test_defect: int = 3, image_size: int | Sequence[int] = 96,
                   seed: int = 0, overwrite: bool = False) -> Path:
    """Writes an MVTec-AD style dataset.

    Layout: `<cat>/train/good/NNN.png`, `<cat>/test/good/NNN.png`, `<cat>/test/<defect>/NNN.png`
    and `<cat>/ground_truth/<defect>/NNN_mask.png` (0/255, "L"). Defects cycle through
    `CATEGORIES[cat].defects`; numbering restarts at 000 in each defect folder.

    Args:
        root: dataset root, created if needed.
        categories: names from `CATEGORIES` (or one name).
        n_train, n_test_good, n_test_defect: numbers of images per category.
        image_size: int (square) or (width, height).
        seed: master seed; each category draws from its own stream.
        overwrite: replace non-empty category folders instead of raising ValueError.

    Returns:
        root as a Path.
    """
    counts = (n_train, n_test_good, n_test_defect)
    root, categories, w, h = _prepare(root, categories, image_size, counts, overwrite)
    for name in categories:
        cat, rng, d = CATEGORIES[name], _rng(seed, name), root / name
        for split, n in (("train", n_train), ("test", n_test_good)):
            for i in range(n):
                _save(_finish(rng, cat.render(rng, w, h)[0], cat.gray), d / split / "good" / f"{i:03d}.png")
        seen: Counter[str] = Counter()
        for i in range(n_test_defect):
            defect = cat.defects[i % len(cat.defects)]
            img, mask = _anomaly(rng, cat, defect, w, h)
            _save(img, d / "test" / defect / f"{seen[defect]:03d}.png")
            mask_img = Image.fromarray(mask.astype(np.uint8) * 255)  # (H, W) 0/255
            _save(mask_img, d / "ground_truth" / defect / f"{seen[defect]:03d}_mask.png")
            seen[defect] += 1
    return root


def generate_visa(root: str | Path, categories: Sequence[str] = ("candle", "pcb1"), n_train: int = 5,
                  n_test_normal: int = 3, n_test_anomaly: int = 3,
                  image_size: int | Sequence[int] = (120, 90), seed: int = 0,
                  overwrite: bool = False) -> Path:
    """Writes a VisA style dataset and its `split_csv/1cls.csv`.

    Layout: `<cat>/Data/Images/Normal/NNNN.JPG` (train normals first, then test normals),
    `<cat>/Data/Images/Anomaly/NNN.JPG` and `<cat>/Data/Masks/Anomaly/NNN.png` ("L"; pixels are 0
    or the defect's class id, its index in `CATEGORIES[cat].defects` + 1). The CSV (object, split,
    label, image, mask; paths relative to root; empty mask for normals) keeps the rows of other
    categories already in it and replaces those of the generated ones.

    Args:
        root, categories, image_size, seed, overwrite: as for `generate_mvtec`.
        n_train, n_test_normal, n_test_anomaly: numbers of images per category.

    Returns:
        root as a Path.
    """
    counts = (n_train, n_test_normal, n_test_anomaly)
    root, categories, w, h = _prepare(root, categories, image_size, counts, overwrite)
    rows = []
    for name in categories:
        cat, rng = CATEGORIES[name], _rng(seed, name)
        for i in range(n_train + n_test_normal):
            rel = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            _save(_finish(rng, cat.render(rng, w, h)[0], cat.gray), root / rel)
            rows.append([name, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_test_anomaly):
            k = i % len(cat.defects)
            img, mask = _anomaly(rng, cat, cat.defects[k], w, h)
            rel, mrel = f"{name}/Data/Images/Anomaly/{i:03d}.JPG", f"{name}/Data/Masks/Anomaly/{i:03d}.png"
            _save(img, root / rel)
            _save(Image.fromarray(mask.astype(np.uint8) * (k + 1)), root / mrel)
            rows.append([name, "test", "anomaly", rel, mrel])
    csv_path = root / "split_csv" / "1cls.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and r[0] not in categories] + rows
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([VISA_CSV_HEADER, *rows])  # csv default CRLF, as in VisA
    return root
