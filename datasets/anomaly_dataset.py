"""Samples indexed by ``meta.json`` and the torch Dataset that loads them (METHOD §2, §6, §8).

Indexing (``make_samples``) is separate from loading (``AnomalyDataset``), and checks every
record up front so a bad dataset fails before any work is done.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from errors import DatasetError
from utils.io import read_json

from .sets.index_format import PREPARE_HINT, read_index, rebuild_advice
from .transforms import binary_mask_image, empty_mask_image, image_transform, mask_transform, open_image


@dataclass(frozen=True)
class Sample:
    """One indexed image. Paths are relative to the dataset root, as in meta.json."""

    img_path: str
    mask_path: str
    cls_name: str
    specie_name: str
    anomaly: int


def load_meta(root: str | Path, kind: str = "mvtec") -> dict:
    """Read ``<root>/meta.json``; DatasetError naming the fix when it or the root is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    path = root / "meta.json"
    hint = PREPARE_HINT.format(kind=kind or "folder", root=root)
    if not path.is_file():
        raise DatasetError(f"{path} not found: index the dataset first with `{hint}`")
    meta = read_json(path, "dataset index", hint=f"rebuild it with `{hint}`")
    if not {"train", "test"} & set(meta) or not all(isinstance(meta[k], dict) for k in
                                                    {"train", "test"} & set(meta)):
        raise DatasetError(f"{path} is not a meta.json index (needs 'train'/'test' tables of "
                           f"categories); rebuild it with `{hint}`")

    read_index(meta, root, kind)
    return meta


def _sample(entry, category: str, path: Path, split: str) -> Sample:
    """One meta.json record as a Sample (DatasetError naming the record when it is malformed)."""
    try:
        return Sample(str(entry["img_path"]), str(entry.get("mask_path", "") or ""),
                      str(entry.get("cls_name", category)), str(entry.get("specie_name", "")),
                      int(entry["anomaly"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"key {e}" if isinstance(e, KeyError) else str(e)
        raise DatasetError(f"{path}: a {split} record of {category!r} is malformed ({what}): "
                           f"{str(entry)[:120]}; rebuild it with datasets.prepare") from e


def make_samples(root: str | Path, split: str, categories: Sequence[str] | None = None,
                 kind: str = "mvtec", meta: dict | None = None) -> dict[str, list[Sample]]:
    """Records of one split, per category in meta.json order, validated.

    A dataset labelled per image only (``meta.json`` ``"labels": "image"``: HeadCT, BrainMRI,
    ELPV, ...) has anomalous images without masks; anywhere else such an image is an error.

    Raises DatasetError for: unknown split or category, a category with no images, a malformed
    record, an image file that is missing, an anomalous image without a mask.
    """
    root = Path(root)
    meta = meta if meta is not None else load_meta(root, kind)
    if split not in meta:
        raise DatasetError(f"{root / 'meta.json'} has no {split!r} split")
    table = meta[split]
    image_level = meta.get("labels") == "image"
    cats = list(table) if categories is None else list(categories)
    unknown = [c for c in cats if c not in table]
    if unknown:
        raise DatasetError(f"categories {unknown} are not in {root / 'meta.json'} "
                           f"(known: {', '.join(table)})")
    out: dict[str, list[Sample]] = {}
    for c in cats:
        entries = table[c] if isinstance(table[c], list) else None
        if entries is None:
            raise DatasetError(f"{root / 'meta.json'}: {split}/{c} must be a list of records")
        samples = [_sample(e, c, root / "meta.json", split) for e in entries]
        if not samples:
            raise DatasetError(f"category {c} has no {split} images in {root / 'meta.json'}")
        for s in samples:
            if not (root / s.img_path).is_file():
                raise DatasetError(f"image listed in {root / 'meta.json'} not found: "
                                   f"{root / s.img_path}; if it was removed, "
                                   f"{rebuild_advice(root, kind, s.img_path)}")
            if s.anomaly and not s.mask_path:
                if image_level:
                    continue
                raise DatasetError(f"anomalous image {root / s.img_path} has no mask in meta.json")
            if s.anomaly and not (root / s.mask_path).is_file():
                raise DatasetError(f"mask not found for anomalous image {root / s.img_path}: "
                                   f"{root / s.mask_path}; restore it, or remove the image too "
                                   f"and {rebuild_advice(root, kind, s.img_path)}")
        out[c] = samples
    return out


def load_pair(root: Path, s: Sample) -> tuple[Image.Image, Image.Image]:
    """(image, 0/255 mask) as PIL images; a normal image (and an anomalous one of a dataset
    labelled per image only, which has no mask) gets an all-zero mask."""
    img = open_image(root / s.img_path)
    if not s.anomaly or not s.mask_path:
        return img, empty_mask_image(img.size)
    mask = binary_mask_image(root / s.mask_path)
    if mask.size != img.size:
        raise DatasetError(
            f"mask {root / s.mask_path} is {mask.size[0]}x{mask.size[1]} but its image "
            f"{root / s.img_path} is {img.size[0]}x{img.size[1]}: masks must match their image")
    return img, mask


def mosaic(root: Path, pool: Sequence[Sample], rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """2x2 mosaic of 4 images (and masks) from one category's test split (METHOD §6).

    As released: each tile picks a defect type uniformly (``good`` included), then a file of
    that type uniformly; tiles are pasted at the first image's size, row-major.
    """
    species = sorted({s.specie_name for s in pool})
    tiles = []
    for _ in range(4):
        sp = species[int(rng.integers(len(species)))]
        cands = [s for s in pool if s.specie_name == sp]
        tiles.append(load_pair(root, cands[int(rng.integers(len(cands)))]))
    w, h = tiles[0][0].size
    image, mask = Image.new("RGB", (2 * w, 2 * h)), Image.new("L", (2 * w, 2 * h))
    for i, (im, m) in enumerate(tiles):
        xy = ((i % 2) * w, (i // 2) * h)
        image.paste(im.convert("RGB"), xy)
        mask.paste(m, xy)
    return image, mask


class AnomalyDataset(Dataset):
    """Images of one split for evaluation or training.

    Args:
        root: dataset root holding meta.json.
        samples: records to load, e.g. ``sum(make_samples(...).values(), [])``.
        image_size: S.
        aug_rate: probability that a sample is replaced by a mosaic of its category (training on
            MVTec-layout data); 0 disables it.
        seed: seed of the mosaic draws; each (seed, epoch, index) has its own generator, so a
            resumed run draws what an uninterrupted one would.
        mosaic_pool: per-category records the mosaic draws from (default: ``samples``).

    ``__getitem__`` returns ``{"image": [3,S,S], "mask": [S,S] 0/1, "label": int,
    "cls_name": str, "path": str (relative), "index": int, "augmented": bool}``.
    """

    def __init__(self, root: str | Path, samples: Sequence[Sample], image_size: int,
                 aug_rate: float = 0.0, seed: int = 0,
                 mosaic_pool: dict[str, list[Sample]] | None = None):
        self.root = Path(root)
        self.samples = list(samples)
        self.image_size = image_size
        self.aug_rate = float(aug_rate)
        self.seed = int(seed)
        self.epoch = 0
        self.transform, self.target_transform = image_transform(image_size), mask_transform(image_size)
        if mosaic_pool is None:
            mosaic_pool = {}
            for s in self.samples:
                mosaic_pool.setdefault(s.cls_name, []).append(s)
        self.mosaic_pool = mosaic_pool

    def set_epoch(self, epoch: int) -> None:
        """Select the mosaic draws of ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def is_augmented(self, index: int) -> bool:
        """Whether sample ``index`` is replaced by a mosaic in the current epoch."""
        return self.aug_rate > 0 and self._rng(index).random() < self.aug_rate

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        augmented = False
        if self.aug_rate > 0:
            rng = self._rng(index)
            if rng.random() < self.aug_rate:
                img, mask = mosaic(self.root, self.mosaic_pool[s.cls_name], rng)
                augmented = True
        if not augmented:
            img, mask = load_pair(self.root, s)
        return {"image": self.transform(img), "mask": self.target_transform(mask)[0],
                "label": s.anomaly, "cls_name": s.cls_name, "path": s.img_path,
                "index": index, "augmented": augmented}


def collate(batch: list[dict]) -> dict:
    """Stack tensors, keep strings as lists (a DataLoader ``collate_fn``)."""
    return {"image": torch.stack([b["image"] for b in batch]),
            "mask": torch.stack([b["mask"] for b in batch]),
            "label": torch.tensor([b["label"] for b in batch]),
            "cls_name": [b["cls_name"] for b in batch], "path": [b["path"] for b in batch],
            "index": torch.tensor([b["index"] for b in batch]),
            "augmented": torch.tensor([b["augmented"] for b in batch])}
