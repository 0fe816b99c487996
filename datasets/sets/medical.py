"""Builders of the medical benchmark sets, from their releases as distributed.

Two kinds: image-level sets (HeadCT, BrainMRI, Br35H: normal and anomalous scans, no masks)
and segmentation sets (ISIC, ClinicDB, ColonDB, Kvasir, Endo, TN3K: every test image shows the
finding and has a mask, no normal image). The category name is the word put into the prompts,
as AnomalyCLIP (zqhang/AnomalyCLIP, ``generate_dataset_json``) uses it: brain, head, skin,
colon, thyroid. Sets without normal images have no train split (zero-shot only); the image-level
sets have no official split: every scan is a test image.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from errors import DatasetError

from .common import images, mask_for, meta, need_dir, one_category, record, save_mask, with_suffix
from .index_format import EVERY_IMAGE, PRANET
from .registry import register

UNSTATED = "not stated by the release (research use); check the source before use"
UNTOLD = "images/ and masks/ at the root (Kvasir-SEG or PraNet's copy: not told apart)"


def _yes_no(root: Path, word: str, yes: Path, no: Path) -> dict:
    """Image-level set from a folder of anomalous and one of normal scans, every scan tested."""
    need_dir(yes, "folder of anomalous scans")
    need_dir(no, "folder of normal scans")
    return one_category(root, word, [no / n for n in images(no)],
                        [(yes / n, None) for n in images(yes)], "tumor", labels="image")


@register("brainmri", title="Brain MRI (tumour)", kind="medical", labels="image",
          test="every scan of yes/ (tumour) and no/", train="the scans of no/",
          official_split=False, objects="brain", licence=UNSTATED,
          source="Kaggle navoneel/brain-mri-images-for-brain-tumor-detection (yes/, no/; "
                 "the copy in brain_tumor_dataset/ is used when present)", archive=None)
def brainmri(root: Path, out: Path) -> dict:
    base = root / "brain_tumor_dataset" if (root / "brain_tumor_dataset" / "yes").is_dir() \
        else root
    return _yes_no(root, "brain", base / "yes", base / "no")


@register("br35h", title="Br35H (brain tumour)", kind="medical", labels="image",
          test="every scan of yes/ (tumour) and no/", train="the scans of no/",
          official_split=False, objects="brain", licence=UNSTATED,
          source="Kaggle ahmedhamada0/brain-tumor-detection (yes/, no/; the unlabelled pred/ "
                 "and Br35H-Mask-RCNN/ are not indexed)", archive=None)
def br35h(root: Path, out: Path) -> dict:
    return _yes_no(root, "brain", root / "yes", root / "no")


@register("headct", title="Head CT (hemorrhage)", kind="medical", labels="image",
          test="every scan of labels.csv (hemorrhage 1: anomalous, 0: normal)",
          train="the scans with hemorrhage 0", official_split=False, objects="head",
          licence=UNSTATED,
          source="Kaggle felipekitamura/head-ct-hemorrhage (head_ct/NNN.png, labels.csv: id, "
                 "' hemorrhage')", archive=None)
def headct(root: Path, out: Path) -> dict:
    labels = next((p for p in (root / "labels.csv", root / "head_ct" / "labels.csv")
                   if p.is_file()), None)
    folder = next((p for p in (root / "head_ct" / "head_ct", root / "head_ct") if p.is_dir()),
                  None)
    if labels is None or folder is None:
        raise DatasetError(f"labels.csv and head_ct/ not found under {root} (the HeadCT release)")
    good, bad = [], []
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]] if rows else []
    if head[:2] != ["id", "hemorrhage"]:
        raise DatasetError(f"{labels}: expected the columns id, hemorrhage; got {rows[:1]}")
    for n, r in enumerate(rows[1:], 2):
        if not r:
            continue
        img = folder / f"{int(r[0]):03d}.png"
        if not img.is_file():
            raise DatasetError(f"{labels}:{n} names scan {int(r[0]):03d}.png, not in {folder}")
        (bad if int(r[1].strip()) else good).append(img)
    return one_category(root, "head", good, [(p, None) for p in bad], "hemorrhage",
                        labels="image")


def _lossless(root: Path, out: Path, mask: Path) -> Path:
    """A JPEG mask (Kvasir-SEG ships them) as a 0/255 PNG under ``OUT/binarised_masks/`` (> 127:
    JPEG ringing around the edges must not count as a finding), written once; others as they
    are (binarised > 0 when read)."""
    if mask.suffix.lower() not in (".jpg", ".jpeg"):
        return mask
    png = out / "binarised_masks" / mask.relative_to(root).with_suffix(".png")
    if not png.is_file():
        with Image.open(mask) as m:
            a = np.asarray(m.convert("L")) > 127
        save_mask(png, a)
    return png


def _segmentation(root: Path, out: Path, word: str, img_dir: Path, mask_dir: Path,
                  names) -> dict:
    """A set whose every image shows the finding, with its mask: test only, no train."""
    need_dir(img_dir, "image folder")
    need_dir(mask_dir, "mask folder")
    rows = [record(root, img_dir / n, _lossless(root, out, mask_for(img_dir / n, mask_dir, names)),
                   word, "lesion", 1) for n in images(img_dir)]
    return meta({word: []}, {word: rows})


def _same_name(stem: str) -> list[str]:
    return [f"{stem}{e}" for e in (".png", ".jpg", ".tif", ".bmp", ".jpeg", ".tiff")]


def _images_masks(root: Path, out: Path, word: str, copies: dict[str, str], at_root: str
                  ) -> dict:
    """``images/`` + ``masks/`` with the same file names, under the first folder of ``copies``
    (``{folder under ROOT: which images it holds}``) that has them, or at ROOT (``at_root``);
    ``"test_images"`` says which copy was indexed."""
    for base, held in [(root / n, h) for n, h in copies.items()] + [(root, at_root)]:
        if (base / "images").is_dir():
            return {**_segmentation(root, out, word, base / "images", base / "masks", _same_name),
                    "test_images": held}
    raise DatasetError(f"images/ and masks/ not found under {root}")


@register("isic", title="ISIC 2016 (skin lesions)", kind="medical", labels="pixel",
          test="ISBI2016_ISIC_Part1_Test_Data (every image a lesion, with its mask)",
          train="none (no normal images)", official_split=True, objects="skin",
          licence="CC0 (the ISIC Challenge 2016 data page)",
          source="ISIC 2016 challenge page (ISIC_<id>.jpg + ISIC_<id>_Segmentation.png)",
          archive=None)
def isic(root: Path, out: Path) -> dict:
    return _segmentation(root, out, "skin", root / "ISBI2016_ISIC_Part1_Test_Data",
                         root / "ISBI2016_ISIC_Part1_Test_GroundTruth",
                         with_suffix("_Segmentation"))


@register("clinicdb", title="CVC-ClinicDB (polyps)", kind="medical", labels="pixel",
          test="every image (a polyp, with its mask)", train="none (no normal images)",
          official_split=False, objects="colon", licence=UNSTATED,
          source="CVC release (Original/, 'Ground Truth/', same names) or the PraNet test "
                 "split (images/, masks/)", archive=None)
def clinicdb(root: Path, out: Path) -> dict:
    if (root / "Original").is_dir():
        return _segmentation(root, out, "colon", root / "Original", root / "Ground Truth",
                             _same_name)
    return _images_masks(root, out, "colon", {"TestDataset/CVC-ClinicDB": PRANET,
                                              "CVC-ClinicDB": PRANET}, PRANET)


@register("colondb", title="CVC-ColonDB (polyps)", kind="medical", labels="pixel",
          test="every image (a polyp, with its mask)", train="none (no normal images)",
          official_split=False, objects="colon", licence=UNSTATED,
          source="PraNet test split (images/, masks/)",
          archive=None)
def colondb(root: Path, out: Path) -> dict:
    return _images_masks(root, out, "colon", {"TestDataset/CVC-ColonDB": PRANET,
                                              "CVC-ColonDB": PRANET}, PRANET)


@register("kvasir", title="Kvasir-SEG (polyps)", kind="medical", labels="pixel",
          test="every image (a polyp, with its JPEG mask, binarised > 127 into a PNG)",
          train="none (no normal images)", official_split=False, objects="colon",
          licence="Simula terms: research and education only, commercial use needs written "
                  "permission, cite Jha et al. (MMM 2020)", source="Kvasir-SEG.zip (images/, "
          "masks/, same names)", archive=None)
def kvasir(root: Path, out: Path) -> dict:
    return _images_masks(root, out, "colon", {"Kvasir-SEG": EVERY_IMAGE,
                                              "TestDataset/Kvasir": PRANET}, UNTOLD)


@register("endo", title="EndoTect 2020 (polyps)", kind="medical", labels="pixel",
          test="every image (a finding, with its mask)", train="none (no normal images)",
          official_split=False, objects="colon", licence=UNSTATED,
          source="EndoTect_2020_Segmentation_Test_Dataset (images/, masks/), as AnomalyCLIP "
                 "reads it", archive=None)
def endo(root: Path, out: Path) -> dict:
    return _images_masks(root, out, "colon", {"EndoTect_2020_Segmentation_Test_Dataset":
                                              EVERY_IMAGE}, EVERY_IMAGE)


@register("tn3k", title="TN3K (thyroid nodules)", kind="medical", labels="pixel",
          test="test-image/ with test-mask/ (same names; every image a nodule)",
          train="none (no normal images)", official_split=True, objects="thyroid",
          licence="no dataset licence stated; the repository holding the archives is MIT, "
                  "stated for its code",
          source="haifangong/TRFE-Net dataloaders/tn3k.py", archive=None)
def tn3k(root: Path, out: Path) -> dict:
    base = root / "tn3k" if (root / "tn3k" / "test-image").is_dir() else root
    return _segmentation(root, out, "thyroid", base / "test-image", base / "test-mask", _same_name)
