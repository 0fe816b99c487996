"""Small replicas of the benchmark sets' raw releases, one layout per function, for tests.

Each ``make_<name>(root)`` writes a few tiny images (and masks) in the folder tree, file names
and formats the release uses (see ``datasets/sets``), and returns what an index of it must hold:
``{"train": {cat: n}, "test": {cat: (n_normal, n_anomalous)}}``. Images are seeded noise with a
bright square where a defect is, masks mark that square; the same call writes the same files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40


def _img(path: Path, seed: int, defect: bool = False, gray: bool = False,
         boxes=((10, 20, 12, 22),)) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(40, 120, (SIZE, SIZE) if gray else (SIZE, SIZE, 3)).astype(np.uint8)
    if defect:
        for y0, y1, x0, x1 in boxes:
            a[y0:y1, x0:x1] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _mask(path: Path, on: bool = True, value: int = 255, box=(10, 20, 12, 22)) -> None:
    m = np.zeros((SIZE, SIZE), np.uint8)
    if on:
        m[box[0]:box[1], box[2]:box[3]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)


def make_mvtec_like(root: Path, cats=("alpha", "beta"), defect="crack") -> dict:
    for i, c in enumerate(cats):
        for k in range(3):
            _img(root / c / "train" / "good" / f"{k:03d}.png", 100 * i + k)
        for k in range(2):
            _img(root / c / "test" / "good" / f"{k:03d}.png", 100 * i + 10 + k)
            _img(root / c / "test" / defect / f"{k:03d}.png", 100 * i + 20 + k, True)
            _mask(root / c / "ground_truth" / defect / f"{k:03d}_mask.png")
    return {"train": {c: 3 for c in cats}, "test": {c: (2, 2) for c in cats}}


def make_btad(root: Path) -> dict:
    exts = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}
    for c, (ie, me) in exts.items():
        d = root / "BTech_Dataset_transformed" / c
        for k in range(2):
            _img(d / "train" / "ok" / f"{k:04d}{ie}", k)
            _img(d / "test" / "ok" / f"{k + 10:04d}{ie}", k + 10)
            _img(d / "test" / "ko" / f"{k + 20:04d}{ie}", k + 20, True)
            _mask(d / "ground_truth" / "ko" / f"{k + 20:04d}{me}")
    return {"train": {c: 2 for c in exts}, "test": {c: (2, 2) for c in exts}}


def make_mvtec_loco(root: Path) -> dict:
    c = "juice_bottle"
    for k in range(2):
        _img(root / c / "train" / "good" / f"{k:03d}.png", k)
        _img(root / c / "validation" / "good" / f"{k:03d}.png", k + 5)
        _img(root / c / "test" / "good" / f"{k:03d}.png", k + 10)
    for specie, boxes in (("logical_anomalies", [(2, 8, 2, 8), (30, 36, 30, 36)]),
                          ("structural_anomalies", [(10, 20, 12, 22)])):
        _img(root / c / "test" / specie / "000.png", 30, True, boxes=boxes)
        for j, box in enumerate(boxes):  # one mask file per defect, to be merged
            _mask(root / c / "ground_truth" / specie / "000" / f"{j:03d}.png", value=1 + j,
                  box=box)
    return {"train": {c: 2}, "test": {c: (2, 2)}}


def make_mvtec_ad2(root: Path) -> dict:
    c = "vial"
    for k in range(2):
        _img(root / c / "train" / "good" / f"{k:03d}_regular.png", k)
        _img(root / c / "test_public" / "good" / f"{k:03d}_regular.png", k + 10)
        _img(root / c / "test_public" / "bad" / f"{k:03d}_regular.png", k + 20, True)
        _mask(root / c / "test_public" / "ground_truth" / "bad" / f"{k:03d}_regular_mask.png")
        _img(root / c / "test_private" / f"{k:03d}_regular.png", k + 30)  # no ground truth
    return {"train": {c: 2}, "test": {c: (2, 2)}}


def make_ksdd(root: Path) -> dict:
    for f in range(3):
        for p in range(4):
            bad = (f, p) in ((0, 1), (2, 3))
            _img(root / f"kos{f + 1:02d}" / f"Part{p}.jpg", 10 * f + p, bad)
            m = np.zeros((SIZE, SIZE), np.uint8)
            if bad:
                m[10:20, 12:22] = 255
            Image.fromarray(m).save(root / f"kos{f + 1:02d}" / f"Part{p}_label.bmp")
    return {"train": {"commutator": 0}, "test": {"commutator": (10, 2)}}  # no split: every image


def make_ksdd2(root: Path) -> dict:
    for split, bad_ids in (("train", {10001}), ("test", {20000, 20002})):
        for i in range(10000 if split == "train" else 20000, (10000 if split == "train" else
                                                               20000) + 4):
            _img(root / split / f"{i}.png", i, i in bad_ids)
            _mask(root / split / f"{i}_GT.png", on=i in bad_ids)  # every image has a _GT mask
    return {"train": {"surface": 3}, "test": {"surface": (2, 2)}}


def make_dagm(root: Path) -> dict:
    for c in ("Class1", "Class2"):
        for split in ("Train", "Test"):
            d = root / c / split
            lines = ["Labels"]
            for k in range(4):
                bad = k % 2 == 1
                _img(d / f"{k + 1:04d}.PNG", k, bad, gray=True)
                if bad:
                    _mask(d / "Label" / f"{k + 1:04d}_label.PNG")
                lines.append(f"{k + 1}\t{int(bad)}\t{k + 1:04d}.PNG\t0\t"
                             + (f"{k + 1:04d}_label.PNG" if bad else "0"))
            (d / "Label").mkdir(parents=True, exist_ok=True)
            (d / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return {"train": {"Class1": 2, "Class2": 2}, "test": {"Class1": (2, 2), "Class2": (2, 2)}}


def make_realiad(root: Path) -> dict:
    c = "audiojack"
    base = root / "realiad_1024" / c
    train, test = [], []
    for k in range(2):
        p = f"OK/S{k:04d}/{c}_{k:04d}_OK_C1_2023.jpg"
        _img(base / p, k)
        train.append({"category": c, "anomaly_class": "OK", "image_path": p, "mask_path": None})
        q = f"OK/S{k + 10:04d}/{c}_{k + 10:04d}_OK_C1_2023.jpg"
        _img(base / q, k + 10)
        test.append({"category": c, "anomaly_class": "OK", "image_path": q, "mask_path": None})
        r = f"NG/QS/S{k + 20:04d}/{c}_{k + 20:04d}_NG_QS_C1_2023"
        _img(base / f"{r}.jpg", k + 20, True)
        _mask(base / f"{r}.png")
        test.append({"category": c, "anomaly_class": "QS", "image_path": f"{r}.jpg",
                     "mask_path": f"{r}.png"})
    j = root / "realiad_jsons" / "realiad_jsons"
    j.mkdir(parents=True)
    (j / f"{c}.json").write_text(json.dumps({"meta": {"prefix": "", "normal_class": "OK"},
                                             "train": train, "test": test}))
    (j / "toy.json").write_text(json.dumps({"meta": {}, "train": [], "test": []}))  # not here
    return {"train": {c: 2}, "test": {c: (2, 2)}}


def make_elpv(root: Path) -> dict:
    probs = [0.0, 0.0, 1.0, 0.3333333333333333, 0.0, 0.0, 0.6666666666666666, 0.0, 0.0, 0.0]
    lines = []
    for k, p in enumerate(probs):
        _img(root / "images" / f"cell{k + 1:04d}.png", k, p > 0, gray=True)
        lines.append(f"images/cell{k + 1:04d}.png  {p}  {'mono' if k % 2 else 'poly'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return {"train": {"solar_cell": 0}, "test": {"solar_cell": (7, 3)}}  # no split: every cell


def make_yes_no(root: Path, nested: str = "") -> dict:
    base = root / nested if nested else root
    for k in range(5):
        _img(base / "no" / f"{k + 1} no.jpg", k, gray=True)
    for k in range(3):
        _img(base / "yes" / f"Y{k + 1}.jpg", k + 10, True, gray=True)
    _img(base / "pred" / "pred0.jpg", 99)  # unlabelled: never indexed
    return {"train": {"brain": 0}, "test": {"brain": (5, 3)}}  # no split: every scan


def make_headct(root: Path) -> dict:
    rows = ["id, hemorrhage"]
    for k in range(6):
        _img(root / "head_ct" / "head_ct" / f"{k:03d}.png", k, k >= 4, gray=True)
        rows.append(f"{k},{int(k >= 4)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"train": {"head": 0}, "test": {"head": (4, 2)}}  # no split: every scan


def make_segmentation(root: Path, img_dir: str, mask_dir: str, img_ext: str, mask_name,
                      word: str, n: int = 3) -> dict:
    """A set of findings only: every image with its mask (``mask_name(stem) -> file name``)."""
    for k in range(n):
        stem = f"{k + 1}" if "ISIC" not in img_dir else f"ISIC_{k:07d}"
        _img(root / img_dir / f"{stem}{img_ext}", k, True)
        _mask(root / mask_dir / mask_name(stem))
    return {"train": {word: 0}, "test": {word: (0, n)}}


RAW_SETS = {
    "mpdd": lambda r: make_mvtec_like(r, ("bracket_black", "tubes")),
    "dtd_synthetic": lambda r: make_mvtec_like(r, ("Woven_001", "Mesh_114"), "bad"),
    "btad": make_btad, "mvtec_loco": make_mvtec_loco, "mvtec_ad2": make_mvtec_ad2,
    "ksdd": make_ksdd, "ksdd2": make_ksdd2, "dagm": make_dagm, "realiad": make_realiad,
    "elpv": make_elpv,
    "brainmri": lambda r: make_yes_no(r, "brain_tumor_dataset"),
    "br35h": make_yes_no, "headct": make_headct,
    "isic": lambda r: make_segmentation(r, "ISBI2016_ISIC_Part1_Test_Data",
                                        "ISBI2016_ISIC_Part1_Test_GroundTruth", ".jpg",
                                        lambda s: f"{s}_Segmentation.png", "skin"),
    "clinicdb": lambda r: make_segmentation(r, "Original", "Ground Truth", ".tif",
                                            lambda s: f"{s}.tif", "colon"),
    "colondb": lambda r: make_segmentation(r, "images", "masks", ".png", lambda s: f"{s}.png",
                                           "colon"),
    "kvasir": lambda r: make_segmentation(r, "Kvasir-SEG/images", "Kvasir-SEG/masks", ".jpg",
                                          lambda s: f"{s}.jpg", "colon"),
    "endo": lambda r: make_segmentation(r, "EndoTect_2020_Segmentation_Test_Dataset/images",
                                        "EndoTect_2020_Segmentation_Test_Dataset/masks", ".jpg",
                                        lambda s: f"{s}.jpg", "colon"),
    "tn3k": lambda r: make_segmentation(r, "tn3k/test-image", "tn3k/test-mask", ".jpg",
                                        lambda s: f"{s}.jpg", "thyroid"),
}
