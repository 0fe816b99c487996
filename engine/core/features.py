"""The feature store in use: its key, its layout, and a batch's backbone outputs from it.

One store per dataset serves training (``train.py --cache_features``) and the dataset's zero-
and few-shot evaluations (``test.py --feature_store``): the backbone is frozen and the
preprocessing fixed, so a stored image gives the values a new pass would (the dtype the backbone
produced; bit for bit on the CPU). Mosaics, synthesized anomalies and reference images go
through the backbone as they must.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from datasets.feature_cache import FeatureCache, TrainItems
from models.april_gan import AprilGAN
from utils.io import file_digest


def store_key(model: str, pretrained: str, config_path: str | None, image_size: int,
              dataset: str, data_root: str | Path, autocast: bool | str) -> dict:
    """What the stored values depend on: weights (sha256 of the file, or the hub tag), model
    config, image size, the dataset root and the precision."""
    weights = Path(pretrained)
    cfg_text = Path(config_path).read_bytes() if config_path else b""
    return {"model": Path(config_path).stem if config_path else model,
            "weights": f"sha256:{file_digest(weights)}" if weights.is_file() else f"tag:{pretrained}",
            "config_sha1": hashlib.sha1(cfg_text).hexdigest(), "image_size": int(image_size),
            "dataset": dataset, "data_root": str(Path(data_root).resolve()),
            "autocast": autocast if isinstance(autocast, str) else bool(autocast)}


def store_layout(model: AprilGAN, stages: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Parts of one stored image: ``stage{n}`` [L, C] per stage, ``image_embed`` [D], ``mask``."""
    info, s = model.backbone.info, model.image_size
    layout = [(f"stage{n}", (info[n].grid ** 2, info[n].dim)) for n in stages]
    return layout + [("image_embed", (model.backbone.embed_dim,)), ("mask", (s, s))]


def open_store(folder: str | Path, cfg, model: AprilGAN, device: torch.device, dataset: str,
               data_root: str | Path, flag: str) -> FeatureCache:
    """The store of ``data_root`` under this run's model settings (all backbone stages)."""
    autocast = model.backbone.use_autocast(torch.empty(0, device=device))
    if autocast and model.backbone.autocast_dtype != torch.float16:  # bf16: another store
        autocast = str(model.backbone.autocast_dtype).replace("torch.", "")
    key = store_key(cfg.model, cfg.pretrained, cfg.config_path, cfg.image_size, dataset,
                    data_root, autocast)
    return FeatureCache(folder, key, store_layout(model, model.backbone.stages), flag)


def encode_batch(model: AprilGAN, batch: dict, items: TrainItems, device: torch.device):
    """A batch's backbone outputs: stored ones are read, the others go through the backbone (and,
    unless augmented, into the store).

    Returns:
        (patch_tokens {stage: [B, L, C]} float32, image_embed [B, D] float32, n through the
        backbone).
    """
    stages, feats = model.backbone.stages, batch["features"]
    rows = {f"stage{s}": [None] * len(feats) for s in stages}
    rows["image_embed"] = [None] * len(feats)
    todo = [j for j, f in enumerate(feats) if f is None]
    if todo:
        enc = model.encode(batch["image"].to(device))
        if items.cache and not items.cache.checked:
            items.cache.reserve(enc["patch_tokens"][stages[0]].dtype)
        for k, j in enumerate(todo):
            for s in stages:
                rows[f"stage{s}"][j] = enc["patch_tokens"][s][k]
            rows["image_embed"][j] = enc["image_embed"][k]
            if items.cache and not batch["augmented"][j]:
                items.cache.put(items.keys[batch["index"][j]],
                                {n: r[j] for n, r in rows.items()} | {"mask": batch["mask"][j]})
    for j, f in enumerate(feats):
        if f is not None:
            for n in rows:
                rows[n][j] = f[n].to(device)
    # stored and fresh rows may differ in dtype (fp16 tokens on GPU); the head works in fp32
    tokens = {s: torch.stack([r.float() for r in rows[f"stage{s}"]]) for s in stages}  # [B, L, C]
    return tokens, torch.stack([r.float() for r in rows["image_embed"]]), len(todo)
