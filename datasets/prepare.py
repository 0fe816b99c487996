"""Index a dataset folder into ``meta.json`` in the released format (METHOD §8).

    python -m datasets.prepare {mvtec,visa,folder,NAME} ROOT [--out DIR]

The index goes beside the data (``ROOT/meta.json``) when the user may write there, or into a
folder ``--out DIR`` names; preparing never writes into an installed package (``site-packages``)
or a folder that is not writable. DIR is then the ``--data_path`` of the later commands: paths
in its index are relative to DIR for files under it (masks a builder made) and absolute for the
data outside it.

``meta.json`` = ``{"train"|"test": {cat: [{"img_path", "mask_path", "cls_name", "specie_name",
"anomaly"}]}}`` with paths relative to ROOT; a benchmark set's index also records its name,
``index_version``, ``official_split`` and ``test_images`` (``datasets.sets.index_format``). MVTec-layout folders: ``<cat>/{train/good,
test/<type>, ground_truth/<type>/<stem>_mask.png}``; masks pair with images by sorted order within
a defect type, as released. VisA: rows of ``split_csv/1cls.csv`` in file order. Categories are
the ones present, so a partial download works.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from PIL import Image

from errors import DatasetError, one_line
from utils.io import atomic_write_text, read_json

from .categories import MVTEC_CATEGORIES, VISA_CATEGORIES
from .sets import SET_NAMES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _entry(img: str, mask: str, cls: str, specie: str, anomaly: int) -> dict:
    return {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": specie,
            "anomaly": anomaly}


def _images(folder: Path) -> list[str]:
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


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


def _check_all_sizes(root: Path, info: dict) -> None:
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
                imgs = _images(root / cls / phase / specie)
                if specie == "good":
                    entries += [_entry(f"{cls}/{phase}/{specie}/{n}", "", cls, specie, 0) for n in imgs]
                    continue
                gt_dir = root / cls / "ground_truth" / specie
                masks = _images(gt_dir) if gt_dir.is_dir() else []
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
        _check_all_sizes(root, info)
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
        _check_all_sizes(root, info)
    return info


def _set_builder(name: str):
    def build(root: Path, out: Path) -> dict:
        from .sets import SETS
        from .sets.index_format import stamp

        info = SETS[name].build(root, out)
        _check_all_sizes(root, info)
        return stamp(info, name, SETS[name].official_split)
    return build


BUILDERS = {
    "mvtec": lambda root, out: mvtec_layout_meta(root),
    "folder": lambda root, out: mvtec_layout_meta(root, standard=()),
    "visa": lambda root, out: visa_meta(root),
    **{name: _set_builder(name) for name in SET_NAMES},
}
PACKAGE_FOLDERS = ("site-packages", "dist-packages")  # where pip and the distributions install
OUT_HINT = "name a folder for the index with --out DIR, then pass DIR as --data_path"


def index_folder(root: Path, out: str | Path | None = None) -> Path:
    """The folder ``meta.json`` goes to: ``out`` when given (made if missing), else ``root``.

    Raises:
        DatasetError: the folder lies in an installed package (a ``site-packages`` or
            ``dist-packages`` folder: the user's package manager owns it) or the user may not
            write there (``os.access``); without ``out`` the message names ``--out``.
    """
    home = Path(out) if out is not None else root
    flag = "--out" if out is not None else "the dataset root"
    package = next((p for p in home.resolve().parts if p in PACKAGE_FOLDERS), None)
    if package:
        raise DatasetError(f"{flag} {home} lies in an installed Python package ({package}): "
                           f"meta.json is never written there; {OUT_HINT}")
    if out is not None:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"cannot make the --out folder {home}: {e.strerror or e}") from e
    if not os.access(home, os.W_OK | os.X_OK):
        raise DatasetError(f"{flag} {home} is not writable: cannot write meta.json there; "
                           + (OUT_HINT if out is None else "name a folder you may write to"))
    return home


def relocate(info: dict, root: Path, home: Path) -> dict:
    """``info`` (paths relative to ``root``) with its paths for an index in ``home``: relative to
    ``home`` for a file under it, absolute for one outside it (the data)."""
    base = home.resolve()

    def move(rel: str) -> str:
        if not rel:
            return rel
        full = Path(os.path.normpath(os.path.join(os.path.abspath(root), rel))).resolve()
        return (full.relative_to(base) if full.is_relative_to(base) else full).as_posix()

    for split in ("train", "test"):
        for rows in info.get(split, {}).values():
            for r in rows:
                r["img_path"], r["mask_path"] = move(r["img_path"]), move(r["mask_path"])
    return info


def prepare(kind: str, root: str | Path, out: str | Path | None = None) -> Path:
    """Write ``meta.json`` for a dataset of layout ``kind`` at ``root`` into ``out`` (default:
    ``root``; see ``index_folder``); returns its path. Nothing is written under ``root`` when
    ``out`` names another folder."""
    if kind not in BUILDERS:
        raise DatasetError(f"unknown dataset {kind!r}: choose one of {', '.join(BUILDERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    home = index_folder(root, out)
    info = BUILDERS[kind](root, home)
    if home.resolve() != root.resolve():
        info = relocate(info, root, home)
    path = home / "meta.json"
    atomic_write_text(path, json.dumps(info, indent=4) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m datasets.prepare",
        description="Write ROOT/meta.json (the released index format) for a dataset folder.")
    p.add_argument("kind", choices=list(BUILDERS), metavar="NAME",
                   help="mvtec: MVTec AD; visa: VisA (uses split_csv/1cls.csv); folder: any "
                        "dataset in the MVTec layout; or a benchmark set from its raw release: "
                        + ", ".join(SET_NAMES) + " (the README lists their layouts)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write meta.json (and any masks a builder makes) into DIR instead of "
                        "ROOT, which is then only read; pass DIR as --data_path afterwards. "
                        "Needed when ROOT is not writable or lies in an installed package "
                        "(site-packages)")
    args = p.parse_args(argv)
    try:
        path = prepare(args.kind, args.root, args.out)
    except DatasetError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    meta = read_json(path, "dataset index")
    for phase in ("train", "test"):
        n = sum(len(v) for v in meta[phase].values())
        a = sum(e["anomaly"] for v in meta[phase].values() for e in v)
        print(f"{phase}: {len(meta[phase])} categories, {n} images ({a} anomalous)")
    if meta.get("official_split") is False:
        print("no official split: zero-shot tests every image; a few-shot run draws its "
              "references from the normal ones and leaves them out of its test images")
    print(f"wrote {path}")
    if Path(path).parent.resolve() != Path(args.root).resolve():
        print(f"pass --data_path {Path(path).parent} to test.py, train.py and prompt_study.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
