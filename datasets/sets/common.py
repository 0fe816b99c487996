"""Pieces the benchmark-set builders share: listing images, pairing masks by name, records.

Masks are always paired with their image by file name (stem plus the layout's suffix), never by
sorted position, so a missing or extra file is an error naming it instead of a silent shift.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from errors import DatasetError
from utils.io import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def images(folder: Path) -> list[str]:
    """Sorted image file names in ``folder`` (hidden files skipped); [] when it is absent."""
    if not folder.is_dir():
        return []
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} (is the release unpacked at the root you "
                           "gave?)")
    return path


def record(root: Path, img: Path, mask: Path | None, cls: str, specie: str,
           anomaly: int) -> dict:
    """One meta.json record with paths relative to ``root`` (``../`` steps for a file the
    builder made outside it, in the index's folder)."""
    rel = lambda p: Path(os.path.relpath(p, root)).as_posix() if p else ""  # noqa: E731
    return {"img_path": rel(img), "mask_path": rel(mask), "cls_name": cls,
            "specie_name": specie, "anomaly": int(anomaly)}


def mask_for(img: Path, mask_dir: Path, names: Callable[[str], Iterable[str]]) -> Path:
    """The mask of ``img`` in ``mask_dir``: the first existing name of ``names(stem)``;
    DatasetError naming the image and the names tried when none exists."""
    tried = list(names(img.stem))
    for n in tried:
        if (mask_dir / n).is_file():
            return mask_dir / n
    raise DatasetError(f"image {img} has no mask in {mask_dir} (looked for "
                       f"{', '.join(tried)})")


def with_suffix(suffix: str, exts: Iterable[str] = (".png",)) -> Callable[[str], list[str]]:
    """``stem -> [stem + suffix + ext ...]``: e.g. ``with_suffix("_mask")``."""
    return lambda stem: [f"{stem}{suffix}{e}" for e in exts]


def save_mask(path: Path, marked: np.ndarray) -> Path:
    """Write a boolean array as a 0/255 PNG mask, atomically (folders made as needed)."""
    image = Image.fromarray(marked.astype(np.uint8) * 255, mode="L")
    return atomic_write(path, lambda f: image.save(f, format="PNG"))


def marks_anything(mask: Path) -> bool:
    """Whether a mask file has any pixel > 0 (a defect)."""
    with Image.open(mask) as m:
        return bool(np.asarray(m).any())


def normals(root: Path, folder: Path, cls: str, specie: str = "good") -> list[dict]:
    """A record per image of ``folder``, each normal."""
    return [record(root, folder / n, None, cls, specie, 0) for n in images(folder)]


def one_category(root: Path, cls: str, good: list[Path], bad: list[tuple[Path, Path | None]],
                 bad_specie: str, *, labels: str = "pixel") -> dict:
    """The meta dict of a one-category release without a split: every image is a test image
    (the normal ones of ``good`` in the order given, then the defective ones with their mask or
    None) and "train" is empty; a few-shot run draws its references from the normal images."""
    return meta({cls: []},
                {cls: [record(root, p, None, cls, "good", 0) for p in good]
                 + [record(root, i, m, cls, bad_specie, 1) for i, m in bad]}, labels=labels)


def meta(train: dict, test: dict, labels: str = "pixel") -> dict:
    """The meta.json dict; DatasetError when a category has no test image."""
    for cls, rows in test.items():
        if not rows:
            raise DatasetError(f"category {cls} has no test images")
    out = {"train": train, "test": test}
    if labels == "image":
        out["labels"] = "image"
    return out
