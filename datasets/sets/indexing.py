"""Writing a dataset's index, ``meta.json``, in the released format (METHOD §8): one builder
per dataset name (``BUILDERS``), the folder the index goes to, and its paths.

``meta.json`` = ``{"train"|"test": {cat: [{"img_path", "mask_path", "cls_name", "specie_name",
"anomaly"}]}}``; a benchmark set's index also records its name, ``index_version``,
``official_split`` and ``test_images`` (``index_format``). The index goes beside the data
(``ROOT/meta.json``) when the user may write there, or into the folder ``out`` names; it is
never written into an installed package (``site-packages``) or a folder that is not writable.
Paths in an index are relative to its folder for files under it (masks a builder made) and
absolute for data outside it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from errors import DatasetError
from utils.io import atomic_write_text

from .index_format import stamp
from .registry import SETS
from .released import check_all_sizes, mvtec_layout_meta, visa_meta


def _set_builder(name: str):
    def build(root: Path, out: Path) -> dict:
        info = SETS[name].build(root, out)
        check_all_sizes(root, info)
        return stamp(info, name, SETS[name].official_split)
    return build


BUILDERS = {
    "mvtec": lambda root, out: mvtec_layout_meta(root),
    "folder": lambda root, out: mvtec_layout_meta(root, standard=()),
    "visa": lambda root, out: visa_meta(root),
    **{name: _set_builder(name) for name in SETS},
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
