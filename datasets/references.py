"""Few-shot reference images: seeded draws, explicit lists, and the ``references.json`` format.

References come from the normal train images; on a set without an official split (every image
a test image) from the normal test images, which the run then leaves out of its test set.

``references.json`` (and ``--reference_list``) = ``{category: [image path relative to the data
root, ...]}``. The released code draws ``torch.randint(0, n_train, (k,))`` per category (with
replacement, so duplicates are possible); we draw the same way from a generator seeded with
(seed, category), so a run is reproducible whatever else the program did before.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import torch

from errors import DatasetError
from utils.io import read_json

from .anomaly_dataset import Sample


def draw_references(train: dict[str, list[Sample]], k: int, seed: int) -> dict[str, list[str]]:
    """k train images per category, drawn with replacement under ``seed``."""
    if k < 1:
        raise DatasetError(f"--k_shot must be >= 1, got {k}")
    out = {}
    for cls, samples in train.items():
        samples = [s for s in samples if not s.anomaly]
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(cls.encode()))
        idx = torch.randint(0, len(samples), (k,), generator=g).tolist()
        out[cls] = [samples[i].img_path for i in idx]
    return out


def draw_from_test(test: dict[str, list[Sample]], k: int, seed: int, dataset: str
                   ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Few-shot on a set without an official split: (references, left out).

    The k references of each category are drawn as ``draw_references`` draws them, from its
    normal test images; "left out" lists each drawn image once (first-drawn order): the run
    does not test them. Raises DatasetError when a category has no normal image, or when the
    draw takes every normal image (none would be left to test).
    """
    normal = {c: [s for s in v if not s.anomaly] for c, v in test.items()}
    for c, v in normal.items():
        if not v:
            raise DatasetError(f"category {c!r} of {dataset} has no normal images: few-shot "
                               "needs reference images (zero-shot only)")
    refs = draw_references(normal, k, seed)
    left = {c: list(dict.fromkeys(v)) for c, v in refs.items()}
    for c, v in left.items():
        if len(v) == len(normal[c]):
            raise DatasetError(f"--k_shot {k} --seed {seed} draws all {len(v)} normal images of "
                               f"{c!r} ({dataset} has no official split; references are left "
                               "out of the test images): none would be left to test; use a "
                               "smaller --k_shot")
    return refs, left


def read_reference_list(path: str | Path, categories: Sequence[str], root: Path,
                        test: dict[str, list[Sample]], from_test: bool = False
                        ) -> dict[str, list[str]]:
    """Load and check a ``--reference_list`` JSON.

    Raises DatasetError when the file is missing or malformed, a category has no entry, a
    listed image does not exist, or a listed image is one of the category's test images
    (``from_test``, a set without an official split: one of its anomalous test images; the
    normal ones it lists are left out of the run's test images).
    """
    path = Path(path)
    refs = read_json(path, "reference list", hint="it maps category -> list of image paths "
                     "relative to the data root (the format of references.json)")
    out = {}
    for cls in categories:
        paths = refs.get(cls)
        if not paths or not isinstance(paths, list):
            raise DatasetError(f"{path} lists no reference images for category {cls!r}")
        bad = [p for p in paths if not isinstance(p, str) or not p]
        if bad:
            raise DatasetError(f"{path}: the entry of {cls!r} must be a list of image paths "
                               f"(relative to the data root), found {bad[0]!r}")
        test_paths = {s.img_path for s in test.get(cls, []) if s.anomaly or not from_test}
        for p in paths:
            if not (root / p).is_file():
                raise DatasetError(f"reference image in {path} not found: {root / p}")
            if p in test_paths:
                raise DatasetError(
                    f"reference image {p} in {path} is an anomalous test image of {cls!r}: "
                    "references must be normal images" if from_test else
                    f"reference image {p} in {path} is a test image of {cls!r}: "
                    "references must come from the train split")
        out[cls] = [str(p) for p in paths]
    return out


def check_train_split(meta: dict, categories: Sequence[str], root: Path) -> None:
    """Few-shot needs normal train images for every evaluated category (raises DatasetError)."""
    table = meta.get("train", {})
    for cls in categories:
        if not any(not e.get("anomaly") for e in table.get(cls, [])):
            raise DatasetError(
                f"category {cls!r} has no normal train images in {root / 'meta.json'}: few-shot "
                "needs reference images (add <category>/train/good, or pass --reference_list)")
