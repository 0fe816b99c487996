"""The index builders of the two datasets of the paper, MVTec AD and VisA, and their standard
categories in the paper's order (METHOD §8); ``folder`` is any dataset in the MVTec layout.

MVTec-layout folders: ``<cat>/{train/good, test/<type>, ground_truth/<type>/<stem>_mask.png}``;
masks pair with images by their ``<stem>_mask`` name where every mask is named so, else by sorted
order within a defect type, as released. VisA: rows of ``split_csv/1cls.csv`` in file order.
Categories are the ones present (the standard ones first, in order), so a partial download works.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from PIL import Image

from errors import DatasetError

from .common import images

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                    "zipper")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                   "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")


def _entry(img: str, mask: str, cls: str, specie: str, anomaly: int) -> dict:
    return {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": specie,
            "anomaly": anomaly}


def _check_sizes(root: Path, entry: dict) -> None:
    """Raise if an anomalous image's mask has another pixel size than the image."""
    if not entry["mask_path"]:
        return
    try:
        with Image.open(root / entry["img_path"]) as im, Image.open(root / entry["mask_path"]) as m:
            isz, msz = im.size, m.size
    except OSError as e:
        raise DatasetError(f"cannot read {root / entry['img_path']} or its mask: {e}") from e
    if isz != msz:
        raise DatasetError(
            f"mask {root / entry['mask_path']} is {msz[0]}x{msz[1]} but its image "
            f"{root / entry['img_path']} is {isz[0]}x{isz[1]}: masks must match their image")


def check_all_sizes(root: Path, info: dict) -> None:
    for phase in (info.get("train", {}), info.get("test", {})):
        for entries in phase.values():
            for e in entries:
                _check_sizes(root, e)


def _ordered(found: list[str], standard: tuple[str, ...], kind: str) -> list[str]:
    missing = [c for c in standard if c not in found]
    if missing and any(c in standard for c in found):
        print(f"notice: {kind}: standard categories not found (skipped): {', '.join(missing)}",
              file=sys.stderr)
    return [c for c in standard if c in found] + sorted(c for c in found if c not in standard)


def mvtec_layout_meta(root: Path, standard: tuple[str, ...] = MVTEC_CATEGORIES,
                      check_sizes: bool = True) -> dict:
    """meta dict for a folder in the MVTec AD layout (any categories)."""
    cats = [d.name for d in root.iterdir() if (d / "train").is_dir() and (d / "test").is_dir()]
    if not cats:
        raise DatasetError(
            f"no category folders with train/ and test/ under {root}: expected the MVTec layout "
            "<root>/<category>/{train/good, test/<type>, ground_truth/<type>}")
    info = {"train": {}, "test": {}}
    for cls in _ordered(cats, standard, "mvtec"):
        for phase in ("train", "test"):
            entries = []
            for specie in sorted(os.listdir(root / cls / phase)):
                if not (root / cls / phase / specie).is_dir():
                    continue
                imgs = images(root / cls / phase / specie)
                if specie == "good":
                    entries += [_entry(f"{cls}/{phase}/{specie}/{n}", "", cls, specie, 0) for n in imgs]
                    continue
                gt_dir = root / cls / "ground_truth" / specie
                masks = images(gt_dir) if gt_dir.is_dir() else []
                by_stem = {Path(m).stem[:-5]: m for m in masks if Path(m).stem.endswith("_mask")}
                for i, n in enumerate(imgs):
                    if len(by_stem) == len(masks) and masks:
                        mask = by_stem.get(Path(n).stem)  # <stem>_mask.png, as MVTec names them
                    else:
                        mask = masks[i] if i < len(masks) else None  # sorted order, as released
                    if mask is None:
                        raise DatasetError(
                            f"anomalous image {root / cls / phase / specie / n} has no mask in "
                            f"{gt_dir} (expected {Path(n).stem}_mask.png)")
                    entries.append(_entry(f"{cls}/{phase}/{specie}/{n}",
                                          f"{cls}/ground_truth/{specie}/{mask}", cls, specie, 1))
            info[phase][cls] = entries
        if not info["test"][cls]:
            raise DatasetError(f"category {cls} has no test images under {root / cls / 'test'}")
    if check_sizes:
        check_all_sizes(root, info)
    return info


def visa_meta(root: Path, check_sizes: bool = True) -> dict:
    """meta dict for the VisA layout from ``split_csv/1cls.csv`` (rows in file order)."""
    csv_path = root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DatasetError(f"VisA split file not found: {csv_path} (it ships with VisA)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        try:
            rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"cannot read {csv_path}: {e}; it ships with VisA") from e
    if not rows:
        raise DatasetError(f"{csv_path} is empty; it ships with VisA")
    header = rows[0]
    if [h.strip() for h in header[:5]] != ["object", "split", "label", "image", "mask"]:
        raise DatasetError(f"{csv_path}: expected columns object,split,label,image,mask; got {header}")
    for n, r in enumerate(rows[1:], 2):
        if r and len(r) < 5:
            raise DatasetError(f"{csv_path}:{n}: a row needs 5 columns (object,split,label,image,"
                               f"mask; mask may be empty), found {len(r)}: {','.join(r)}")
        if r and r[1] not in ("train", "test"):
            raise DatasetError(f"{csv_path}:{n}: split must be train or test, found {r[1]!r}")
    rows = [r for r in rows[1:] if r]
    found = list(dict.fromkeys(r[0] for r in rows))
    info = {"train": {}, "test": {}}
    for cls in _ordered(found, VISA_CATEGORIES, "visa"):
        for phase in ("train", "test"):
            entries = []
            for r in rows:
                if r[0] != cls or r[1] != phase:
                    continue
                anomaly = 1 if r[2] == "anomaly" else 0
                mask = r[4] if anomaly else ""
                if anomaly and not mask:
                    raise DatasetError(f"{csv_path}: anomalous image {r[3]} has no mask")
                for p in (r[3], mask):
                    if p and not (root / p).is_file():
                        raise DatasetError(f"{csv_path} lists {p}, which is not under {root}")
                entries.append(_entry(r[3], mask, cls, "", anomaly))
            info[phase][cls] = entries
        if not info["test"][cls]:
            raise DatasetError(f"category {cls} has no test rows in {csv_path}")
    if check_sizes:
        check_all_sizes(root, info)
    return info
