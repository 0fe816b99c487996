"""Builders of the industrial benchmark sets, from their raw releases as distributed.

Layouts were learned from each release's own description and the public loaders of anomalib
(openvinotoolkit/anomalib, ``src/anomalib/data``), AnomalyCLIP (zqhang/AnomalyCLIP,
``generate_dataset_json``), AdaCLIP (caoyunkang/AdaCLIP, ``data_preprocess``) and the KSDD
authors (vicoslab/mixed-segdec-net-comind2021, ``data``); each builder names its source.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from errors import DatasetError

from .common import (
    images,
    marks_anything,
    mask_for,
    meta,
    need_dir,
    normals,
    one_category,
    record,
    save_mask,
    with_suffix,
)
from .registry import register
from .released import mvtec_layout_meta

NC_SA = "CC BY-NC-SA 4.0"


def _mvtec_like(root: Path) -> dict:
    return mvtec_layout_meta(root, standard=())


@register("mpdd", title="MPDD (metal parts)", kind="industrial", labels="pixel",
          official_split=True, test="test/ (good and defect folders)", train="train/good",
          objects="the category folder names (bracket_black, ..., tubes)",
          licence="CC BY-NC-SA 4.0 (the LICENSE of stepanje/MPDD, since July 2024)",
          source="MVTec layout; stepanje/MPDD README, AnomalyCLIP mpdd.py", archive=None)
def mpdd(root: Path, out: Path) -> dict:
    return _mvtec_like(root)


@register("dtd_synthetic", title="DTD-Synthetic (textures)", kind="industrial", labels="pixel",
          official_split=True, test="test/ (good and defect folders)", train="train/good",
          objects="the texture folder names (Blotchy_099, ...)",
          licence="not stated (Aota et al., WACV 2023; research use)",
          source="MVTec layout; AnomalyCLIP DTD.py", archive=None)
def dtd_synthetic(root: Path, out: Path) -> dict:
    return _mvtec_like(root)


@register("btad", title="BTAD (BeanTech)", kind="industrial", labels="pixel",
          official_split=True, test="<cat>/test/ok (normal) and <cat>/test/ko (defects)",
          train="<cat>/train/ok",
          objects="01, 02, 03 (the folder names, as the peers use them)",
          licence="CC BY-SA 4.0 (BeanTech, per the VT-ADL README; anomalib says BY-NC-SA)",
          source="anomalib btech.py (layout, mixed .bmp/.png per category)",
          archive="btad.zip, sha256 461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a")
def btad(root: Path, out: Path) -> dict:
    if (root / "BTech_Dataset_transformed").is_dir():
        root_data = root / "BTech_Dataset_transformed"
    else:
        root_data = root
    cats = sorted(d.name for d in root_data.iterdir() if (d / "train" / "ok").is_dir())
    if not cats:
        raise DatasetError(f"no BTAD category folders (01, 02, 03 with train/ok) under {root}")
    train, test = {}, {}
    for c in cats:
        d = root_data / c
        train[c] = normals(root, d / "train" / "ok", c, "ok")
        test[c] = normals(root, d / "test" / "ok", c, "ok")
        gt = d / "ground_truth" / "ko"
        for n in images(d / "test" / "ko"):
            img = d / "test" / "ko" / n
            m = mask_for(img, gt, with_suffix("", (".png", ".bmp")))
            test[c].append(record(root, img, m, c, "ko", 1))
    return meta(train, test)


@register("mvtec_loco", title="MVTec LOCO AD", kind="industrial", labels="pixel",
          official_split=True, test="test/{good,logical_anomalies,structural_anomalies}",
          train="train/good (validation/good is not used)",
          objects="the category folder names (breakfast_box, ...)", licence=NC_SA,
          source="anomalib mvtec_loco.py (several masks per image, merged)",
          archive="mvtec_loco_anomaly_detection.tar.xz, sha256 "
                  "9e7c84dba550fd2e59d8e9e231c929c45ba737b6b6a6d3814100f54d63aae687")
def mvtec_loco(root: Path, out: Path) -> dict:
    """The masks of one anomalous image (``ground_truth/<type>/<stem>/*.png``, one per defect)
    are merged (pixel > 0 in any) into ``merged_masks/<cat>/<type>/<stem>.png`` under OUT (the
    index's folder), written once (kept when it exists)."""
    cats = sorted(d.name for d in root.iterdir() if (d / "train" / "good").is_dir()
                  and (d / "test").is_dir())
    if not cats:
        raise DatasetError(f"no MVTec LOCO category folders (train/good, test) under {root}")
    train, test = {}, {}
    for c in cats:
        d = root / c
        train[c] = normals(root, d / "train" / "good", c)
        test[c] = []
        for specie in sorted(p.name for p in (d / "test").iterdir() if p.is_dir()):
            for n in images(d / "test" / specie):
                img = d / "test" / specie / n
                if specie == "good":
                    test[c].append(record(root, img, None, c, specie, 0))
                    continue
                parts = images(d / "ground_truth" / specie / img.stem)
                if not parts:
                    raise DatasetError(f"image {img} has no masks in "
                                       f"{d / 'ground_truth' / specie / img.stem}")
                merged = out / "merged_masks" / c / specie / f"{img.stem}.png"
                if not merged.is_file():
                    union = None
                    for p in parts:
                        with Image.open(d / "ground_truth" / specie / img.stem / p) as m:
                            a = np.asarray(m)
                        a = (a.max(axis=2) if a.ndim == 3 else a) > 0
                        union = a if union is None else union | a
                    save_mask(merged, union)
                test[c].append(record(root, img, merged, c, specie, 1))
    return meta(train, test)


@register("mvtec_ad2", title="MVTec AD 2", kind="industrial", labels="pixel",
          official_split=True,
          test="test_public/{good,bad} (test_private* has no ground truth: not indexed)",
          train="train/good", objects="the category folder names (can, fabric, ...)",
          licence=NC_SA, source="anomalib mvtecad2.py; MVTec's evaluation script",
          archive="mvtec_ad_2.tar.gz, sha256 "
                  "c0ded99ef32bfc8e352d52beb44515e5b292b8598cb963aadfa91ca0763505e4")
def mvtec_ad2(root: Path, out: Path) -> dict:
    cats = sorted(d.name for d in root.iterdir() if (d / "test_public").is_dir())
    if not cats:
        raise DatasetError(f"no MVTec AD 2 category folders (with test_public/) under {root}")
    train, test = {}, {}
    for c in cats:
        d = root / c
        train[c] = normals(root, d / "train" / "good", c)
        test[c] = normals(root, d / "test_public" / "good", c)
        gt = d / "test_public" / "ground_truth" / "bad"
        for n in images(d / "test_public" / "bad"):
            img = d / "test_public" / "bad" / n
            test[c].append(record(root, img, mask_for(img, gt, with_suffix("_mask")), c, "bad", 1))
    return meta(train, test)


@register("ksdd", title="KolektorSDD", kind="industrial", labels="pixel",
          test="every image (kosNN/PartN.jpg, normal and defective)",
          train="the normal images", official_split=False, objects="commutator",
          licence="CC BY-NC-SA 4.0 per anomalib (confirm on vicos.si)",
          source="anomalib kolektor.py; vicoslab input_ksdd.py (kosNN/PartN.jpg + "
                 "PartN_label.bmp, a defect when the label marks any pixel)",
          archive="KolektorSDD.zip, sha256 "
                  "65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc")
def ksdd(root: Path, out: Path) -> dict:
    folders = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("kos"))
    if not folders:
        raise DatasetError(f"no kosNN folders under {root} (the KolektorSDD release)")
    good, bad = [], []
    for d in folders:
        for n in images(d):
            if "_label." in n.lower():
                continue
            img = d / n
            m = mask_for(img, d, with_suffix("_label", (".bmp", ".png")))
            (bad if marks_anything(m) else good).append((img, m))
    return one_category(root, "commutator", [i for i, _ in good], bad, "defect")


@register("ksdd2", title="KolektorSDD2", kind="industrial", labels="pixel",
          official_split=True, test="test/ (normal and defective)",
          train="the normal images of train/",
          objects="surface",
          licence="unconfirmed: copies say CC BY-NC-SA 4.0 or CC BY-SA 4.0; check vicos.si",
          source="vicoslab input_ksdd2.py (<id>.png + <id>_GT.png for every image)",
          archive="KolektorSDD2.zip, md5 1ed0f628122776ace4965afa30dfe316")
def ksdd2(root: Path, out: Path) -> dict:
    c, out = "surface", {}
    for split in ("train", "test"):
        d = need_dir(root / split, f"KolektorSDD2 {split} folder")
        rows = []
        for n in images(d):
            if Path(n).stem.endswith("_GT"):
                continue
            img = d / n
            m = mask_for(img, d, with_suffix("_GT"))
            bad = marks_anything(m)  # every image has a _GT mask: black for a normal one
            if split == "test" or not bad:
                rows.append(record(root, img, m if bad else None, c,
                                   "defect" if bad else "good", int(bad)))
        out[split] = {c: rows}
    return meta(out["train"], out["test"])


@register("dagm", title="DAGM 2007", kind="industrial", labels="pixel",
          official_split=True, test="ClassN/Test (normal and defective)",
          train="the normal images of ClassN/Train",
          objects="Class1 ... Class10 (the folder names, as the peers use them)",
          licence="none on the organisers' page; a Zenodo copy is labelled CC BY 4.0",
          source="vicoslab input_dagm.py, AnomalyCLIP DAGM.py (Label/<stem>_label.PNG; the "
                 "masks are coarse ellipses)", archive=None)
def dagm(root: Path, out: Path) -> dict:
    cats = sorted((d for d in root.iterdir() if d.is_dir() and d.name.startswith("Class")),
                  key=lambda d: (len(d.name), d.name))
    if not cats:
        raise DatasetError(f"no ClassN folders under {root} (the DAGM 2007 release)")
    train, test = {}, {}
    for d in cats:
        if (d / d.name).is_dir() and not (d / "Train").is_dir():
            d = d / d.name  # some downloads nest ClassN/ClassN
        c = d.name
        for split, table in (("Train", train), ("Test", test)):
            s = need_dir(d / split, f"DAGM {split} folder")
            rows = []
            for n in images(s):
                img, m = s / n, s / "Label" / f"{Path(n).stem}_label.PNG"
                if not m.is_file():
                    m = s / "Label" / f"{Path(n).stem}_label.png"
                bad = m.is_file()
                if split == "Test" or not bad:
                    rows.append(record(root, img, m if bad else None, c,
                                       "defect" if bad else "good", int(bad)))
            table[c] = rows
    return meta(train, test)


@register("realiad", title="Real-IAD", kind="industrial", labels="pixel",
          official_split=True, test="the 'test' list of realiad_jsons/<cat>.json",
          train="the 'train' list of realiad_jsons/<cat>.json (normal)",
          objects="the 30 category names (audiojack, ..., zipper)",
          licence="CC BY-NC-SA 4.0 per anomalib (gated download: confirm its terms)",
          source="Tencent/AnomalyDetection_Real-IAD README and explicit_dataset.py (JSON keys "
                 "category, anomaly_class, image_path, mask_path; paths relative to "
                 "realiad_1024/<cat>/)", archive=None)
def realiad(root: Path, out: Path) -> dict:
    jsons = next((p for p in (root / "realiad_jsons" / "realiad_jsons", root / "realiad_jsons")
                  if p.is_dir()), None)
    if jsons is None:
        raise DatasetError(f"realiad_jsons/ not found under {root} (unzip realiad_jsons.zip "
                           "there)")
    res = next((root / r for r in ("realiad_1024", "realiad_512", "realiad_256", "realiad_raw")
                if (root / r).is_dir()), None)
    if res is None:
        raise DatasetError(f"no realiad_1024/ (or _512, _256, _raw) image folder under {root}")
    train, test = {}, {}
    for f in sorted(jsons.glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        c, normal = f.stem, (data.get("meta") or {}).get("normal_class", "OK")
        if not (res / c).is_dir():
            continue  # a category not downloaded
        for split, table in (("train", train), ("test", test)):
            rows = []
            for s in data.get(split, []):
                img = res / c / s["image_path"]
                bad = s.get("mask_path") is not None and s.get("anomaly_class") != normal
                m = res / c / s["mask_path"] if bad else None
                if m is not None and not m.is_file():
                    raise DatasetError(f"{f} lists mask {s['mask_path']}, not found in {res / c}")
                if split == "train" and bad:
                    continue
                rows.append(record(root, img, m, c, s.get("anomaly_class") or normal, int(bad)))
            table[c] = rows
    if not test:
        raise DatasetError(f"no Real-IAD category of {jsons} has images in {res}")
    return meta(train, test)


@register("elpv", title="ELPV (solar cells)", kind="industrial", labels="image",
          test="every cell of labels.csv (defect probability 0: normal, > 0: defective)",
          train="the cells with probability 0", official_split=False, objects="solar_cell",
          licence=NC_SA,
          source="zae-bayern/elpv-dataset README and labels.csv (whitespace-separated: path, "
                 "probability 0, 1/3, 2/3 or 1, type)", archive=None)
def elpv(root: Path, out: Path) -> dict:
    """A cell is anomalous when its defect probability is above 0 (any rater saw a defect);
    image-level labels only."""
    labels = next((p for p in (root / "labels.csv", root / "src" / "elpv_dataset" / "data" /
                               "labels.csv") if p.is_file()), None)
    if labels is None:
        raise DatasetError(f"labels.csv not found under {root} (the elpv-dataset release)")
    good, bad = [], []
    for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            path, prob = parts[0], float(parts[1])
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{labels}:{n}: expected 'path probability type', got "
                               f"{line!r}") from e
        img = labels.parent / path
        if not img.is_file():
            raise DatasetError(f"{labels}:{n} lists {path}, not found in {labels.parent}")
        (bad if prob > 0 else good).append(img)
    return one_category(root, "solar_cell", sorted(good), [(i, None) for i in sorted(bad)],
                        "defect", labels="image")
