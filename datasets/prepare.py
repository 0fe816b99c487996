"""Index a dataset folder into ``meta.json`` in the released format (METHOD §8).

    python -m datasets.prepare {mvtec,visa,folder,NAME} ROOT [--out DIR]

The index goes beside the data (``ROOT/meta.json``) when the user may write there, or into a
folder ``--out DIR`` names; preparing never writes into an installed package (``site-packages``)
or a folder that is not writable. DIR is then the ``--data_path`` of the later commands: paths
in its index are relative to DIR for files under it (masks a builder made) and absolute for the
data outside it.

``meta.json`` = ``{"train"|"test": {cat: [{"img_path", "mask_path", "cls_name", "specie_name",
"anomaly"}]}}`` with paths relative to ROOT; a benchmark set's index also records its name,
``index_version``, ``official_split`` and ``test_images`` (``datasets.sets.index_format``).
MVTec-layout folders: ``<cat>/{train/good, test/<type>, ground_truth/<type>/<stem>_mask.png}``;
masks pair with images by sorted order within a defect type, as released. VisA: rows of
``split_csv/1cls.csv`` in file order. Categories are the ones present, so a partial download
works.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from errors import DatasetError, one_line
from utils.io import read_json

from .sets import SET_NAMES
from .sets.indexing import BUILDERS, prepare


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
