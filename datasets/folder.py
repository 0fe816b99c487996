"""A plain folder of images (predict.py): every file is scored or named in a warning.

No extension filter: each (non-hidden) file is opened with PIL; what PIL cannot read is skipped
with a warning, listed in ``scores.json`` and in ``log.txt``. Hidden files (``.name``) are
ignored and named in one warning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from errors import DatasetError

from .anomaly_dataset import AnomalyDataset, Sample, collate
from .loaders import stop_workers
from .transforms import open_image

Warn = Callable[[str, str], None]


def list_files(folder: str | Path, recursive: bool = False, exclude: Sequence[Path] = (),
               warn: Warn | None = None, what: str = "image folder") -> list[str]:
    """Sorted paths relative to ``folder`` of every non-hidden file (``exclude`` trees skipped).

    Raises DatasetError when the folder is missing or holds no files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{what} not found: {folder}")
    excluded = [e.resolve() for e in exclude]
    out, hidden = [], []
    for f in (folder.rglob("*") if recursive else folder.iterdir()):
        rel = f.relative_to(folder)
        if not f.is_file():
            continue
        if any(r == f.resolve() or r in f.resolve().parents for r in excluded):
            continue
        if any(part.startswith(".") for part in rel.parts):
            hidden.append(rel.as_posix())
            continue
        out.append(rel.as_posix())
    if hidden and warn:
        warn(str(folder), f"ignored {len(hidden)} hidden file(s): {', '.join(sorted(hidden)[:5])}"
                          + (" ..." if len(hidden) > 5 else ""))
    if not out:
        raise DatasetError(
            f"no images found in {folder}" + ("" if recursive else " (sub-folders are skipped; "
                                              "pass --recursive to include them)"))
    return sorted(out)


def heatmap_names(paths: Sequence[str]) -> dict[str, str]:
    """Collision-free PNG names under heatmaps/ and masks/ for each relative path.

    ``a/b.jpg`` -> ``a/b.png``; a PNG keeps its name. When two files share a stem (``b.png`` and
    ``b.jpg``), the PNG keeps ``b.png`` and the other gets its extension kept: ``b.jpg.png``.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for rel in sorted(paths, key=lambda r: (not r.lower().endswith(".png"), r)):
        name = Path(rel).with_suffix(".png").as_posix()
        if name in taken:
            name = rel + ".png"
        names[rel] = name
        taken.add(name)
    return names


class _Tolerant(Dataset):
    """An AnomalyDataset whose unreadable images come back as ``{"error", "path"}``."""

    def __init__(self, base: AnomalyDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        try:
            return self.base[i]
        except (DatasetError, OSError, ValueError, Image.DecompressionBombError) as e:
            return {"error": _reason(e), "path": self.base.samples[i].img_path}


def _reason(e: Exception) -> str:
    """Why a file could not be read, without its path (the warning names it)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if text.startswith("cannot read image ") and ": " in text:
        text = text.split(": ", 1)[1].removesuffix(". Replace or remove the file")
    return text


def _collate(items: list[dict]) -> dict:
    good = [b for b in items if "error" not in b]
    out = collate(good) if good else {"path": []}
    out["errors"] = [(b["path"], b["error"]) for b in items if "error" in b]
    return out


def readable_batches(root: Path, paths: Sequence[str], size: int, batch_size: int, workers: int,
                     on_skip: Warn) -> Iterator[dict]:
    """Collated batches of the readable images; ``on_skip(path, why)`` for the others."""
    ds = _Tolerant(AnomalyDataset(root, [Sample(p, "", "", "", 0) for p in paths], size))
    it = iter(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                         collate_fn=_collate))
    try:
        for batch in it:
            for path, err in batch.pop("errors"):
                on_skip(path, err)
            if batch["path"]:
                yield batch
    finally:
        stop_workers(it)


def readable_images(folder: Path, paths: Sequence[str], warn: Warn | None,
                    empty: str | None = None) -> list[str]:
    """The files that open as images; the others are reported through ``warn`` and dropped.

    Raises:
        DatasetError: none opens (``empty``, or a message about reference images).
    """
    ok = []
    for p in paths:
        try:
            open_image(folder / p)
            ok.append(p)
        except DatasetError as e:
            if warn:
                warn(p, _reason(e))
    if not ok:
        raise DatasetError(empty or f"no readable reference images in {folder}")
    return ok
