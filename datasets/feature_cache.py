"""On-disk store of frozen-backbone outputs (``train.py --cache_features``, ``test.py
--feature_store``).

The backbone is frozen and the preprocessing fixed, so an image that is not mosaic-augmented
gives the same stage tokens every time: they are computed once, stored, and read back in later
epochs, in the dataset's evaluations and in later runs (at ViT-L/14-336, 518 px, about 11 MB per
image in fp16 for four stages).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from errors import DatasetError
from utils.io import atomic_write_text, read_json

from .anomaly_dataset import AnomalyDataset, Sample


class FeatureCacheError(DatasetError):
    """The feature cache folder cannot be used (other settings, no space); message says why."""


class FeatureCache:
    """Frozen-backbone outputs of one dataset's images on disk: the feature store.

    One ``.npy`` per image and part (``stage{n}`` tokens [L, C], ``image_embed`` [D], the 0/1
    ``mask`` [S, S]), in the dtype the backbone produced, so any stage list reads what it needs
    and computes the rest: training (``train.py --cache_features``), zero-shot and few-shot
    evaluation (``test.py --feature_store``) of the same dataset share one folder. The manifest
    holds a key (model, sha256 of the weights file or the hub tag, model config, image size,
    dataset root, precision) and the dtype; a folder made under another key is refused. Entry
    names hash the image/mask paths, sizes and mtimes, so edited images are never served stale.

    Args:
        root: the folder.
        key: the settings the stored values depend on.
        layout: the parts this user reads and writes: ``[(name, shape), ...]``.
        flag: the command-line flag that named the folder (for messages).
    """

    def __init__(self, root: str | Path, key: dict, layout: list[tuple[str, tuple[int, ...]]],
                 flag: str = "--cache_features"):
        self.root, self.key, self.flag = Path(root), key, flag
        self.layout = [(n, tuple(int(x) for x in s)) for n, s in layout]
        self.size = sum(int(np.prod(s)) for _, s in self.layout)  # values per entry
        self.dtype: str | None = None  # fixed by the first write
        self.checked, self.missing = False, 0
        self.root.mkdir(parents=True, exist_ok=True)
        man = self.root / "manifest.json"
        if man.is_file():
            old = read_json(man, "feature store manifest", error=FeatureCacheError,
                            hint=f"pass another {flag} folder or delete it")
            diff = [k for k in sorted(set(key) | set(old.get("key", {})))
                    if old.get("key", {}).get(k) != key.get(k)]
            if diff or old.get("version") != 2:
                raise FeatureCacheError(
                    f"feature store {self.root} was made with other settings (differs in: "
                    f"{', '.join(diff) or 'format version'}); pass another {flag} folder or "
                    "delete it")
            self.dtype = old.get("dtype")
            self._drop_stale_writes()
        elif any(self.root.iterdir()):
            raise FeatureCacheError(f"{flag} {self.root} is not empty and has no "
                                    "manifest.json; pass an empty or new folder")
        else:
            self._write_manifest()

    def _drop_stale_writes(self) -> None:
        """Remove ``.<entry>.<part>.<pid>.tmp`` files whose writing process is gone (a kill)."""
        for f in self.root.glob(".*.tmp"):
            try:
                pid = int(f.name.split(".")[-2])
                os.kill(pid, 0)
            except (ValueError, IndexError, ProcessLookupError):
                f.unlink(missing_ok=True)
            except PermissionError:
                pass

    def _write_manifest(self) -> None:
        atomic_write_text(self.root / "manifest.json", json.dumps(
            {"version": 2, "key": self.key, "dtype": self.dtype}, indent=1))

    def _file(self, name: str, part: str) -> Path:
        return self.root / f"{name}.{part}.npy"

    def snapshot(self) -> set[str]:
        """Entry names that hold every part of this layout."""
        by_name: dict[str, set[str]] = {}
        for f in os.listdir(self.root):
            if f.endswith(".npy") and f.count(".") == 2:
                name, part, _ = f.split(".")
                by_name.setdefault(name, set()).add(part)
        want = {n for n, _ in self.layout}
        return {n for n, parts in by_name.items() if want <= parts}

    def reserve(self, dtype: torch.dtype) -> None:
        """Before the first write of a run: fix the dtype (that of the backbone's tokens) and
        check the free space for the ``missing`` entries."""
        self.checked = True
        name = str(dtype).replace("torch.", "")
        if self.dtype is None:
            self.dtype = name if name in ("float16", "float32", "float64") else "float32"
            self._write_manifest()
        per, missing = self.size * np.dtype(self.dtype).itemsize, self.missing
        need, free = per * missing, shutil.disk_usage(self.root).free
        logging.getLogger("aprilgan").info(
            f"feature store {self.root}: {missing} new entries x {per / 2**20:.2f} MiB "
            f"({self.dtype}) = {need / 2**30:.2f} GiB, {free / 2**30:.1f} GiB free")
        if need > 0.98 * free:
            raise FeatureCacheError(
                f"{self.flag} {self.root} needs about {need / 2**30:.2f} GiB for {missing} "
                f"images but only {free / 2**30:.2f} GiB is free; free space, pick another "
                f"folder, or run without {self.flag}")

    def put(self, name: str, parts: dict[str, torch.Tensor]) -> None:
        """Store every part of ``parts`` that is in the layout (atomically, part by part)."""
        for n, _ in self.layout:
            flat = parts[n].detach().reshape(-1).to("cpu", getattr(torch, self.dtype)).numpy()
            tmp = self.root / f".{name}.{n}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, flat)
            os.replace(tmp, self._file(name, n))

    def get(self, name: str) -> dict[str, torch.Tensor] | None:
        """The entry's parts as tensors, or None if one is missing or unreadable (recomputed)."""
        out = {}
        for n, shape in self.layout:
            try:
                flat = torch.from_numpy(np.load(self._file(name, n)))
            except (OSError, ValueError):
                return None
            if flat.numel() != int(np.prod(shape)):
                return None
            out[n] = flat.reshape(shape)
        return out


def sample_key(root: Path, s: Sample) -> str:
    """Cache entry name of a sample: hash of its image/mask paths, sizes and mtimes."""
    h = hashlib.sha1()
    for rel in (s.img_path, s.mask_path):
        if rel:
            st = (root / rel).stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


class TrainItems(Dataset):
    """Training samples: cached backbone outputs when available, else the image.

    A sample that is mosaic-augmented in the current epoch always yields an image. A cached
    sample skips image decoding entirely (its mask is in the cache).
    """

    def __init__(self, ds: AnomalyDataset, cache: FeatureCache | None):
        self.ds, self.cache, self.cached = ds, cache, set()
        self.keys = [sample_key(ds.root, s) for s in ds.samples] if cache else []

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)
        self.cached = self.cache.snapshot() if self.cache else set()

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        if self.cache and self.keys[i] in self.cached and not self.ds.is_augmented(i):
            parts = self.cache.get(self.keys[i])
            if parts is not None:
                s = self.ds.samples[i]
                return {"index": i, "label": s.anomaly, "cls_name": s.cls_name, "augmented": False,
                        "path": s.img_path, "mask": parts.pop("mask").float(), "features": parts}
        return {**self.ds[i], "features": None}


def collate_train(batch: list[dict]) -> dict:
    """Masks [B, S, S]; images [n, 3, S, S] of the n uncached items (or None); cached parts."""
    images = [b["image"] for b in batch if b["features"] is None]
    return {"image": torch.stack(images) if images else None,
            "mask": torch.stack([b["mask"] for b in batch]),
            "cls_name": [b["cls_name"] for b in batch], "index": [b["index"] for b in batch],
            "augmented": [bool(b["augmented"]) for b in batch],
            "label": torch.tensor([int(b["label"]) for b in batch]),
            "path": [b.get("path", "") for b in batch],
            "features": [b["features"] for b in batch]}
