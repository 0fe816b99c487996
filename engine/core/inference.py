"""Batched inference: one backbone pass per image, patch-resolution results kept until needed.

For a category of N test images, ``run_category`` keeps per stage the [N, 2, h, h] logits and,
for every few-shot run, the [N, 1, h, h] memory distances -- a few MB even at 518 px -- and
``models.anomaly_maps.zero_shot_maps`` and ``final_maps`` turn them into [N, S, S] float32 maps a
chunk at a time (what test.py, predict.py and the export all compute).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from datasets.anomaly_dataset import Sample
from datasets.loaders import loader, stop_workers
from errors import NonFiniteError
from models.anomaly_maps import few_shot_map, zero_shot_map
from models.april_gan import AprilGAN
from models.memory_bank import MemoryBank


@torch.no_grad()
def reference_tokens(model: AprilGAN, root: Path, paths: Sequence[str], batch_size: int,
                     workers: int, device: torch.device) -> dict[str, dict[int, torch.Tensor]]:
    """Raw patch tokens of each distinct reference image, one pass each.

    Returns ``{path: {stage: [L, C]}}`` for every backbone stage (the memory-bank stages and the
    projected ones, which ``normal_level`` needs), float32, on ``device``.
    """
    distinct = list(dict.fromkeys(paths))
    samples = [Sample(p, "", "", "good", 0) for p in distinct]
    out: dict[str, dict[int, torch.Tensor]] = {}
    it = iter(loader(root, samples, model.image_size, batch_size, workers))
    try:
        for batch in it:
            enc = model.encode(batch["image"].to(device))
            for i, p in enumerate(batch["path"]):
                out[p] = {s: enc["patch_tokens"][s][i].float() for s in model.backbone.stages}
    finally:
        stop_workers(it)
    return out


def build_bank(model: AprilGAN, cls_name: str, refs: Sequence[str],
               tokens: dict[str, dict[int, torch.Tensor]]) -> MemoryBank:
    """A category's memory bank from cached reference tokens (duplicates kept, as released)."""
    stacked = {s: torch.stack([tokens[p][s] for p in refs]) for s in model.few_shot_features}
    return MemoryBank(model.few_shot_features).setup(cls_name, stacked, refs)


@torch.no_grad()
def normal_level(model: AprilGAN, refs: Sequence[str], tokens: dict[str, dict[int, torch.Tensor]],
                 text: torch.Tensor, size: int) -> float:
    """mu of ``per_image_scores``: the mean leave-one-out map maximum of the references.

    Each distinct reference's final map is computed against a bank of the other references
    (all copies of it left out); with one distinct reference, its zero-shot map maximum.
    """
    maxima = []
    for p in dict.fromkeys(refs):
        own = {s: t[None] for s, t in tokens[p].items()}  # {stage: [1, L, C]}
        embed = torch.zeros(1, model.backbone.embed_dim, device=text.device)
        m = zero_shot_map(model.head(own, embed, text)["stage_logits"], size)  # [1, S, S]
        others = [q for q in refs if q != p]
        if others:
            m = m + few_shot_map(build_bank(model, "", others, tokens).distances(own), size)
        maxima.append(float(m.max()))
    return float(np.mean(maxima))


def check_finite(paths: Sequence[str], per_image: Sequence[torch.Tensor],
                 scores: torch.Tensor) -> None:
    """NonFiniteError naming the first image whose map terms or score are NaN or infinite."""
    bad = ~torch.isfinite(scores)
    for t in per_image:
        bad |= ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise NonFiniteError(
            f"the anomaly map or score of {paths[i]} is not finite (NaN or infinite): the "
            "backbone or projection weights, or the image, hold values that overflow; check "
            "--pretrained and --checkpoint_path (run on the CPU to rule out fp16 overflow)")


@torch.no_grad()
def infer_batches(model: AprilGAN, batches, text: torch.Tensor, banks: Sequence[MemoryBank],
                  device: torch.device, encode: Callable[[dict], tuple] | None = None
                  ) -> Iterator[dict]:
    """Yield each batch's results as soon as it is through (streaming; see ``run_category``).

    Each item: ``logits`` list over stages of [b, 2, h, h]; ``distances`` per bank, list over
    stages of [b, 1, h, h]; ``text_score`` [b] float64; ``mask`` [b, S, S] uint8; ``label``
    [b]; ``path`` list; ``backbone_images``; ``backbone_seconds``. All on the CPU.
    """
    many = infer_batches_many(model, batches, [text], banks, device, encode)
    try:
        for r in many:
            yield {**r, "logits": r["logits"][0], "text_score": r["text_score"][0]}
    finally:
        many.close()


@torch.no_grad()
def infer_batches_many(model: AprilGAN, batches, texts: Sequence[torch.Tensor],
                       banks: Sequence[MemoryBank], device: torch.device,
                       encode: Callable[[dict], tuple] | None = None) -> Iterator[dict]:
    """``infer_batches`` for several text features at once (prompt_study.py): each batch goes
    through the backbone (and the memory banks) once, then through the head once per text.

    Each item as ``infer_batches``' but ``logits`` and ``text_score`` are lists, one per text.
    """
    it = iter(batches)
    try:
        for batch in it:
            t0 = time.perf_counter()
            if encode is None:
                enc = model.encode(batch["image"].to(device))
                tokens, embed, n = enc["patch_tokens"], enc["image_embed"], len(batch["path"])
            else:
                tokens, embed, n = encode(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            dist = [[x.cpu() for x in bank.distances(tokens)] for bank in banks]
            logits, scores = [], []
            for text in texts:
                head = model.head(tokens, embed, text.to(device))
                logits.append([l.float().cpu() for l in head["stage_logits"]])
                scores.append(head["image_score"].double().cpu())
                check_finite(batch["path"], logits[-1] + [d for ds in dist for d in ds],
                             scores[-1])
            yield {"logits": logits, "distances": dist,
                   "text_score": [s.numpy() for s in scores],
                   "mask": batch["mask"].to(torch.uint8), "label": batch["label"],
                   "path": list(batch["path"]), "backbone_images": n, "backbone_seconds": seconds}
    finally:
        stop_workers(it)


def run_category(model: AprilGAN, batches, text: torch.Tensor, banks: Sequence[MemoryBank],
                 device: torch.device, on_batch: Callable[[int], None] | None = None,
                 encode: Callable[[dict], tuple] | None = None) -> dict:
    """Infer one category.

    Args:
        batches: iterable of collated batches (images of one category).
        text: [D, 2] text features of the category.
        banks: memory banks, one per few-shot run (empty for zero-shot).
        encode: batch -> (patch_tokens, image_embed, n through the backbone); default: the
            backbone on ``batch["image"]`` (a feature store passes ``engine.core.features``' reader).

    Returns:
        ``logits``: list over stages of [N, 2, h, h]; ``distances``: per bank, list over stages
        of [N, 1, h, h]; ``text_score`` [N] float64; ``gt_px`` [N, S, S] uint8; ``gt_sp`` [N]
        int64; ``paths`` list[str]; ``backbone_images``; ``backbone_seconds``. On the CPU.
    """
    parts = []
    for r in infer_batches(model, batches, text, banks, device, encode):
        parts.append(r)
        if on_batch:
            on_batch(len(r["path"]))
    return concat_results(parts, len(banks))


def concat_results(parts: Sequence[dict], n_banks: int) -> dict:
    """``infer_batches`` items (in order) as one ``run_category`` result (empty arrays for no
    items: a rank whose share of a category is no batch)."""
    if not parts:
        return {"logits": [], "distances": [[] for _ in range(n_banks)],
                "text_score": np.zeros(0), "gt_px": np.zeros((0, 0, 0), np.uint8),
                "gt_sp": np.zeros(0, np.int64), "paths": [], "backbone_images": 0,
                "backbone_seconds": 0.0}
    cat = lambda per_batch: [torch.cat(x) for x in zip(*per_batch)] if per_batch else []  # noqa: E731
    return {"logits": cat([p["logits"] for p in parts]),
            "distances": [cat([p["distances"][b] for p in parts]) for b in range(n_banks)],
            "text_score": np.concatenate([p["text_score"] for p in parts]),
            "gt_px": torch.cat([p["mask"] for p in parts]).numpy(),
            "gt_sp": torch.cat([p["label"] for p in parts]).numpy().astype(np.int64),
            "paths": [q for p in parts for q in p["path"]],
            "backbone_images": sum(p["backbone_images"] for p in parts),
            "backbone_seconds": sum(p["backbone_seconds"] for p in parts)}


def progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)
