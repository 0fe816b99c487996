"""What an index of a benchmark set records about its test images, and the check that an index
was written under the current rule.

A set whose release has an official split keeps it. A set without one (KolektorSDD, ELPV,
BrainMRI, Br35H, HeadCT, the polyp sets) puts every image into "test" and none into "train":
zero-shot tests every image, and a few-shot run draws its k references from the normal test
images under its seed and leaves them out of its own test set (``datasets.references``).

``meta.json`` of a set carries ``"index_version"`` (``INDEX_VERSION``), ``"official_split"`` and
``"test_images"`` (which images its "test" table holds: ``TEST_SPLIT``, ``EVERY_IMAGE`` or a
named copy such as ``PRANET``), recorded in each run's ``metrics.json`` so that a comparison
with published figures can say whether the same images were tested. Indexes of sets without an
official split written before version 2 held normal images back (1 in 5 or 4 in 5): they are
refused with the command that rebuilds them, never silently reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from errors import DatasetError

from .registry import SETS

INDEX_VERSION = 2
TEST_SPLIT = "the release's test split"
EVERY_IMAGE = "every image"
PRANET = "PraNet's test split"  # TestDataset/<set>/{images,masks} of the PraNet polyp archive
LEFT_OUT = "every image but the run's references"  # few-shot on a set without a split


@dataclass(frozen=True)
class IndexInfo:
    """What an index says of its test images (``official_split``: few-shot draws from train)."""

    official_split: bool = True
    test_images: str | None = None  # None: not a benchmark set's index (MVTec AD, VisA, folder)


def stamp(info: dict, name: str, official_split: bool) -> dict:
    """``info`` (a builder's meta dict) with the dataset name, index version, split kind and
    the default ``test_images`` (the builder's own value wins)."""
    default = TEST_SPLIT if official_split else EVERY_IMAGE
    return {"dataset": name, "index_version": INDEX_VERSION, "official_split": official_split,
            "test_images": info.pop("test_images", default), **info}


def read_index(meta: dict, root: Path, dataset: str) -> IndexInfo:
    """The ``IndexInfo`` of a loaded ``meta.json``.

    Raises:
        DatasetError: the index belongs to a set without an official split and was written
            before ``INDEX_VERSION`` (it holds normal images back from the test set); the one
            line names the command that rebuilds it.
    """
    name = meta.get("dataset") if meta.get("dataset") in SETS else dataset
    if name not in SETS:
        return IndexInfo()
    version = meta.get("index_version", 1)
    if not isinstance(version, int) or version < INDEX_VERSION:
        if not SETS[name].official_split:
            raise DatasetError(
                f"{root / 'meta.json'} was written by an older version (index version "
                f"{version}, this one reads {INDEX_VERSION}) that held normal images of {name} "
                f"back from the test set; now zero-shot tests every image: "
                f"{rebuild_hint(meta, root, name)}")
        return IndexInfo(True, TEST_SPLIT)
    return IndexInfo(bool(meta.get("official_split", True)), meta.get("test_images"))


def rebuild_hint(meta: dict, root: Path, name: str) -> str:
    """How to rebuild the index at ``root``: ``rebuild_advice`` (the ``--out`` form for an
    index written apart from its data: its image paths are absolute)."""
    first = next((r.get("img_path", "") for rows in meta.get("test", {}).values()
                  for r in rows if isinstance(r, dict)), "")
    return rebuild_advice(root, name, first)


PREPARE_HINT = "python -m datasets.prepare {kind} {root}"


def rebuild_advice(root: str | Path, kind: str = "mvtec", listed: str = "") -> str:
    """How to index ``root`` again after a file it lists was removed: the prepare command
    (VisA first needs the file's row out of ``split_csv/1cls.csv``, which the index is made
    from). ``listed``: the removed file as the index names it; an absolute path means the
    index lies apart from the data (``--out``), which the command then names."""
    root, data = Path(root), Path(root)
    command = PREPARE_HINT.format(kind=kind or "folder", root=root)
    where = ""
    if Path(listed).is_absolute():
        data = Path("DATASET_ROOT")
        command = f"{PREPARE_HINT.format(kind=kind or 'folder', root=data)} --out {root}"
        where = " (DATASET_ROOT: the folder the index was made from)"
    hint = f"rebuild the index with `{command}`{where}"
    if kind == "visa":
        return f"delete its row in {data / 'split_csv' / '1cls.csv'}, then {hint}"
    return hint
