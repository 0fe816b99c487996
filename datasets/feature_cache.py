"""On-disk cache of frozen-backbone outputs for training (``train.py --cache_features``).

The backbone is frozen, so a training sample that is not mosaic-augmented in an epoch gives the
same stage tokens every epoch: they are computed once, stored as one ``.npy`` per sample, and
read back in later epochs and runs (at ViT-L/14-336, 518 px, about 11 MB per image in fp16).
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
    """Frozen-backbone outputs of training samples on disk, one ``.npy`` per sample.

    Each file is a flat array in the dtype the backbone produced: the stage tokens [L, C] of
    every ``features_list`` stage, the image embedding [D] and the 0/1 mask [S, S], laid out as
    ``manifest.json`` records. The manifest also holds a key (model, weights checksum, image
    size, stages, dataset root, precision); a folder made under another key is refused. File
    names hash the image/mask paths, sizes and mtimes, so edited images are never served stale.
    """

    def __init__(self, root: str | Path, key: dict, layout: list[tuple[str, tuple[int, ...]]]):
        self.root, self.key, self.layout = Path(root), key, [(n, tuple(s)) for n, s in layout]
        self.size = sum(int(np.prod(s)) for _, s in self.layout)  # values per entry
        self.dtype: str | None = None  # fixed by the first write
        self.checked, self.missing = False, 0
        self.root.mkdir(parents=True, exist_ok=True)
        man = self.root / "manifest.json"
        if man.is_file():
            old = read_json(man, "feature cache manifest", error=FeatureCacheError,
                            hint="pass another --cache_features folder or delete it")
            diff = [k for k in sorted(set(key) | set(old.get("key", {})))
                    if old.get("key", {}).get(k) != key.get(k)]
            if diff or [(n, tuple(s)) for n, s in old.get("layout", [])] != self.layout:
                raise FeatureCacheError(
                    f"feature cache {self.root} was made with other settings (differs in: "
                    f"{', '.join(diff) or 'layout'}); pass another --cache_features folder or delete it")
            self.dtype = old.get("dtype")
        elif any(self.root.iterdir()):
            raise FeatureCacheError(f"--cache_features {self.root} is not empty and has no "
                                    "manifest.json; pass an empty or new folder")
        else:
            self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_text(self.root / "manifest.json", json.dumps(
            {"version": 1, "key": self.key, "layout": self.layout, "dtype": self.dtype}, indent=1))

    def snapshot(self) -> set[str]:
        return {f[:-4] for f in os.listdir(self.root) if f.endswith(".npy")}

    def reserve(self, dtype: torch.dtype) -> None:
        """Before the first write of a run: fix the dtype (that of the backbone's tokens) and
        check the free space for the ``missing`` entries of this epoch."""
        self.checked = True
        name = str(dtype).replace("torch.", "")
        if self.dtype is None:
            self.dtype = name if name in ("float16", "float32", "float64") else "float32"
            self._write_manifest()
        per, missing = self.size * np.dtype(self.dtype).itemsize, self.missing
        need, free = per * missing, shutil.disk_usage(self.root).free
        logging.getLogger("aprilgan").info(
            f"feature cache {self.root}: {missing} new entries x {per / 2**20:.2f} MiB "
            f"({self.dtype}) = {need / 2**30:.2f} GiB, {free / 2**30:.1f} GiB free")
        if need > 0.98 * free:
            raise FeatureCacheError(
                f"--cache_features {self.root} needs about {need / 2**30:.2f} GiB for {missing} "
                f"images but only {free / 2**30:.2f} GiB is free; free space, pick another "
                "folder, or train without --cache_features")

    def put(self, name: str, parts: dict[str, torch.Tensor]) -> None:
        flat = np.concatenate([parts[n].detach().reshape(-1).to("cpu", getattr(torch, self.dtype))
                               .numpy() for n, _ in self.layout])
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, flat)
        os.replace(tmp, self.root / f"{name}.npy")

    def get(self, name: str) -> dict[str, torch.Tensor] | None:
        """The entry's parts as tensors, or None if the file is unreadable (then recomputed)."""
        try:
            flat = torch.from_numpy(np.load(self.root / f"{name}.npy"))
        except (OSError, ValueError):
            return None
        if flat.numel() != self.size:
            return None
        out, at = {}, 0
        for n, shape in self.layout:
            k = int(np.prod(shape))
            out[n], at = flat[at:at + k].reshape(shape), at + k
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
                        "mask": parts.pop("mask").float(), "features": parts}
        return {**self.ds[i], "features": None}


def collate_train(batch: list[dict]) -> dict:
    """Masks [B, S, S]; images [n, 3, S, S] of the n uncached items (or None); cached parts."""
    images = [b["image"] for b in batch if b["features"] is None]
    return {"image": torch.stack(images) if images else None,
            "mask": torch.stack([b["mask"] for b in batch]),
            "cls_name": [b["cls_name"] for b in batch], "index": [b["index"] for b in batch],
            "augmented": [bool(b["augmented"]) for b in batch],
            "features": [b["features"] for b in batch]}
