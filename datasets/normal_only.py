"""Training samples from normal images only: synthesized anomalies per sample (issue 16).

``train.py --synthesize_anomalies P`` trains the APRIL-GAN projections (Chen et al., 2023,
arXiv:2305.17382) on data that has no defect masks: a dataset's train split (MVTec-layout
``train/good``, VisA's train rows) or a plain folder of images (``folder_samples``). Each sample,
in each epoch, is given a synthesized defect and its exact mask (``AnomalySynthesizer``, DRAEM-
and CutPaste-style) with probability P; the others keep their own image and mask (empty for a
normal image). Both the decision and the defect are drawn from generators seeded by
(seed, epoch, index), so a resumed run sees what an uninterrupted one would.

    ds = SynthesizingDataset(root, samples, 518, aug_rate=0.0, seed=111, synth_rate=0.5,
                             synthesizer=make_synthesizer(111))
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from errors import DatasetError

from .anomaly_dataset import AnomalyDataset, Sample, load_pair, mosaic
from .folder import list_files, readable_images
from .synthesis import AnomalySynthesizer

# Separates the synthesis draws from the mosaic draws of the same (seed, epoch, index).
SYNTH_STREAM = 0x53594E  # "SYN"
SYNTH_MODES = ("L", "LA", "RGB", "RGBA")


def synthesis_seed(seed: int) -> int:
    """The synthesizer's base seed for a training seed (its own stream, never the mosaic's)."""
    return int(np.random.SeedSequence([int(seed), SYNTH_STREAM]).generate_state(1)[0])


def make_synthesizer(seed: int, texture_dir: str | Path | None = None) -> AnomalySynthesizer:
    """The synthesizer of a training run seeded with ``seed``.

    Raises:
        DatasetError: ``texture_dir`` is missing, empty or unreadable (message names it).
    """
    try:
        return AnomalySynthesizer(synthesis_seed(seed), texture_dir=texture_dir)
    except ValueError as e:
        raise DatasetError(f"--{e}") from e


def folder_samples(folder: str | Path, object_name: str, recursive: bool = False,
                   warn: Callable[[str, str], None] | None = None) -> list[Sample]:
    """Every readable image of a plain folder as a normal sample of category ``object_name``.

    No extension filter (as predict.py): each non-hidden file is opened; unreadable ones are
    skipped through ``warn(path, why)``. Paths are relative to ``folder``, in sorted order.

    Raises:
        DatasetError: the folder is missing or holds no readable image.
    """
    folder = Path(folder)
    paths = list_files(folder, recursive, warn=warn, what="--train_image_dir")
    ok = readable_images(folder, paths, warn, f"no readable images in --train_image_dir "
                                              f"{folder} ({len(paths)} files tried)")
    return [Sample(p, "", object_name, "good", 0) for p in ok]


class SynthesizingDataset(AnomalyDataset):
    """An ``AnomalyDataset`` whose samples get a synthesized defect with probability ``synth_rate``.

    Per sample and epoch: first the released mosaic (probability ``aug_rate``, MVTec layout),
    then, independently, a synthesized defect on the (mosaic or own) image with probability
    ``synth_rate``; its mask is OR-ed into the sample's mask. A mosaic or synthesized sample is
    ``augmented`` (never cached). With ``synth_rate == 0`` it returns what ``AnomalyDataset``
    returns.

    Args:
        root, samples, image_size, aug_rate, seed, mosaic_pool: as ``AnomalyDataset``.
        synth_rate: probability P of a synthesized defect per sample and epoch.
        synthesizer: draws the defect of (epoch, index); see ``make_synthesizer``.
    """

    def __init__(self, root: str | Path, samples: Sequence[Sample], image_size: int,
                 aug_rate: float = 0.0, seed: int = 0, synth_rate: float = 0.0,
                 synthesizer: AnomalySynthesizer | None = None,
                 mosaic_pool: dict[str, list[Sample]] | None = None):
        super().__init__(root, samples, image_size, aug_rate, seed, mosaic_pool)
        if not 0.0 <= synth_rate <= 1.0:
            raise ValueError(f"synth_rate must be in [0, 1], got {synth_rate}")
        if synth_rate > 0 and synthesizer is None:
            raise ValueError("synth_rate > 0 needs a synthesizer")
        self.synth_rate, self.synthesizer = float(synth_rate), synthesizer

    def is_synthesized(self, index: int) -> bool:
        """Whether sample ``index`` gets a synthesized defect in the current epoch."""
        if self.synth_rate <= 0:
            return False
        rng = np.random.default_rng([self.seed, self.epoch, index, SYNTH_STREAM])
        return bool(rng.random() < self.synth_rate)

    def is_mosaic(self, index: int) -> bool:
        return super().is_augmented(index)

    def is_augmented(self, index: int) -> bool:
        return self.is_mosaic(index) or self.is_synthesized(index)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        mosaicked = False
        if self.aug_rate > 0:  # the released draw, from the released generator
            rng = self._rng(index)
            if rng.random() < self.aug_rate:
                img, mask = mosaic(self.root, self.mosaic_pool[s.cls_name], rng)
                mosaicked = True
        if not mosaicked:
            img, mask = load_pair(self.root, s)
        synthesized = self.is_synthesized(index)
        if synthesized:
            img, mask = self._synthesize(img, mask, index)
        return {"image": self.transform(img), "mask": self.target_transform(mask)[0],
                "label": int(s.anomaly or synthesized), "cls_name": s.cls_name,
                "path": s.img_path, "index": index, "augmented": mosaicked or synthesized}

    def _synthesize(self, img: Image.Image, mask: Image.Image,
                    index: int) -> tuple[Image.Image, Image.Image]:
        """(image with a defect, 0/255 mask = old mask OR the defect's exact mask)."""
        if img.mode not in SYNTH_MODES:
            img = img.convert("RGB")
        out, changed = self.synthesizer.synth(img, self.epoch, index)  # changed: [H, W] bool
        merged = (np.asarray(mask) > 0) | changed
        return out, Image.fromarray(merged.astype(np.uint8) * 255, mode="L")


def training_dataset(root: str | Path, samples: Sequence[Sample], image_size: int,
                     aug_rate: float, seed: int, synth_rate: float = 0.0,
                     texture_dir: str | Path | None = None) -> AnomalyDataset:
    """The training set of train.py: the released ``AnomalyDataset`` when ``synth_rate`` is 0
    (bit for bit as released), else a ``SynthesizingDataset`` whose synthesizer is seeded from
    ``seed``. Raises DatasetError for a bad ``texture_dir``."""
    if synth_rate <= 0:
        return AnomalyDataset(root, samples, image_size, aug_rate, seed)
    return SynthesizingDataset(root, samples, image_size, aug_rate, seed, synth_rate,
                               make_synthesizer(seed, texture_dir))
