"""Train APRIL-GAN's per-stage linear projections on a labelled anomaly dataset (SPEC §6).

    python train.py --dataset mvtec --train_data_path data/mvtec --save_path exps/mvtec \
        --features_list 6 12 18 24 --image_size 518 --batch_size 8 --aug_rate 0.2 --epoch 3
    python train.py ... --resume exps/mvtec/epoch_2.pth --epoch 3       # continue to 3 epochs
    python train.py ... --cache_features /scratch/feats                 # reuse backbone outputs

As released: the *test* split of every category is the training set, only the projections are
trained (Adam, lr 1e-3, betas (0.5, 0.999), no schedule, seed 111), the loss is the sum over
stages of focal + Dice on the upsampled probability maps (``losses``), and MVTec-layout data gets
the 2x2 mosaic augmentation with probability ``--aug_rate``. Shuffling and mosaics are drawn from
generators seeded by (seed, epoch), so ``--resume`` ends with the weights of an uninterrupted
run. ``--cache_features DIR`` keeps the frozen backbone's outputs for samples that are not
mosaic-augmented on disk (under a manifest that refuses other models, sizes, stages or data) and
reuses them in later epochs and runs, with the same weights. Outputs in ``--save_path``:
``epoch_N.pth`` (released format plus config, optimizer, epoch and RNG state; loadable with
``weights_only=True``), ``config.json`` and ``log.txt``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DATASETS, AnomalyDataset, load_meta, make_samples
from datasets.feature_cache import FeatureCache, TrainItems, collate_train
from losses import segmentation_loss
from models.anomaly_maps import stage_probabilities
from models.april_gan import AprilGAN, build_model
from models.projection import CHECKPOINT_KEY, CheckpointError, projection_state, read_checkpoint
from prompts import PromptSet, TextFeatureBank
from utils.cli import (ModelConfig, add_model_args, config_from_namespace, config_json,
                       default_workers, flag, resolve_device, run_main, setup_logging, setup_seed)
from utils.io import atomic_torch_save, atomic_write_text
from utils.rng import rng_state, set_rng_state

MOSAIC_DATASETS = ("mvtec", "folder")  # the released mosaic exists only for the MVTec layout
DEFAULT_EPOCHS = {"mvtec": 3, "folder": 3, "visa": 15}  # the paper's settings
RESUME_KEYS = ("dataset", "train_data_path", "model", "pretrained", "image_size", "features_list",
               "batch_size", "aug_rate", "learning_rate", "seed", "categories")


@dataclass
class TrainConfig(ModelConfig):
    """Resolved settings of one train.py run (saved as config.json and in every checkpoint)."""

    dataset: str = "mvtec"
    train_data_path: str = "data/mvtec"
    save_path: str = "exps/train"
    aug_rate: float = 0.2
    epoch: int | None = None
    learning_rate: float = 1e-3
    print_freq: int = 1
    save_freq: int = 1
    seed: int = 111
    init_checkpoint: str | None = None
    resume: str | None = None
    cache_features: str | None = None
    categories: list | None = None
    prompt_dir: str | None = None


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(
        description="Train the APRIL-GAN linear projections (the CLIP backbone stays frozen).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flag(p, "dataset", default="mvtec", help=f"dataset layout: {', '.join(DATASETS)}")
    flag(p, "train_data_path", default="data/mvtec",
         help="dataset root holding meta.json; its test split (all categories) is trained on")
    flag(p, "save_path", default="exps/train", help="output folder (checkpoints, log, config)")
    add_model_args(p)
    flag(p, "aug_rate", type=float, default=0.2,
         help="probability of the 2x2 mosaic per sample (mvtec/folder only; ignored for visa)")
    flag(p, "epoch", type=int, default=None,
         help="total epochs (default: 3 for mvtec/folder, 15 for visa, as in the paper)")
    flag(p, "learning_rate", type=float, default=1e-3, help="Adam learning rate")
    flag(p, "print_freq", type=int, default=1, help="log the mean loss every N epochs")
    flag(p, "save_freq", type=int, default=1, help="write epoch_N.pth every N epochs (and the last)")
    flag(p, "seed", type=int, default=111, help="seed of the model init, shuffling and mosaics")
    flag(p, "init_checkpoint", default=None,
         help="start from these projection weights (released format) with a fresh optimizer")
    flag(p, "resume", default=None,
         help="continue a run from its epoch_N.pth (weights, optimizer, epoch) to --epoch in total")
    flag(p, "cache_features", default=None,
         help="folder caching frozen-backbone outputs of non-augmented samples across epochs")
    flag(p, "categories", nargs="+", default=None, help="train on these categories only")
    flag(p, "prompt_dir", default=None, help="folder with edited prompt files (default: prompts/)")
    cfg = config_from_namespace(TrainConfig, p.parse_args(argv))
    if cfg.dataset not in DATASETS:
        p.error(f"unknown --dataset {cfg.dataset!r}: choose one of {', '.join(DATASETS)}")
    if cfg.init_checkpoint and cfg.resume:
        p.error("--init_checkpoint and --resume exclude each other (--resume restores the weights)")
    cfg.epoch = DEFAULT_EPOCHS[cfg.dataset] if cfg.epoch is None else cfg.epoch
    for name in ("epoch", "batch_size", "print_freq", "save_freq"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not 0.0 <= cfg.aug_rate <= 1.0:
        p.error("--aug_rate must be in [0, 1]")
    return cfg


def batch_loss(model: AprilGAN, patch_tokens: dict[int, torch.Tensor], image_embed: torch.Tensor,
               text: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Training loss of one batch (differentiable w.r.t. the projections only).

    Args:
        patch_tokens: {stage: [B, L, C]} frozen backbone tokens (no class token).
        image_embed: [B, D] normalised image embeddings.
        text: [B, D, 2] text features of each image's category.
        gt: [B, S, S] 0/1 masks.

    Returns:
        Scalar sum over stages of focal(P_n, gt) + dice(P_n[:, 1], gt), P_n at S x S.
    """
    with torch.autocast("cuda", dtype=torch.float16, enabled=gt.is_cuda):
        head = model.head(patch_tokens, image_embed, text)
        probs = stage_probabilities(head["stage_logits"], gt.shape[-1])  # [B, 2, S, S] each
    return segmentation_loss([p.float() for p in probs], gt.float())


def make_cache(cfg: TrainConfig, model: AprilGAN, device: torch.device) -> FeatureCache:
    """Open (or create) the feature cache of this run's backbone, image size and stages."""
    info, s = model.backbone.info, cfg.image_size
    layout = [(f"stage{n}", (info[n].grid ** 2, info[n].dim)) for n in model.features_list]
    layout += [("image_embed", (model.backbone.embed_dim,)), ("mask", (s, s))]
    with torch.no_grad():  # a cheap fingerprint of the backbone weights
        checksum = sum(float(p.double().abs().sum()) for p in model.backbone.parameters())
    cfg_text = Path(cfg.config_path).read_text() if cfg.config_path else ""
    weights = Path(cfg.pretrained)
    key = {"model": cfg.model, "weights_checksum": f"{checksum:.9e}",
           "pretrained": str(weights.resolve()) if weights.is_file() else cfg.pretrained,
           "config_sha1": hashlib.sha1(cfg_text.encode()).hexdigest(), "image_size": s,
           "stages": list(model.features_list), "dataset": cfg.dataset,
           "data_root": str(Path(cfg.train_data_path).resolve()), "autocast": device.type == "cuda"}
    return FeatureCache(cfg.cache_features, key, layout)


def encode_batch(model: AprilGAN, batch: dict, items: TrainItems, device: torch.device):
    """Backbone outputs of a batch: uncached images go through the backbone (and, if not
    augmented, into the cache); cached ones are read. Returns (tokens, embed, n_backbone)."""
    stages, feats = model.features_list, batch["features"]
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
    # cached and fresh rows may differ in dtype (fp16 tokens on GPU); the head works in fp32
    tokens = {s: torch.stack([r.float() for r in rows[f"stage{s}"]]) for s in stages}  # [B, L, C]
    return tokens, torch.stack([r.float() for r in rows["image_embed"]]), len(todo)


def restore(cfg: TrainConfig, ckpt: dict | None, model: AprilGAN, optimizer, log) -> int:
    """Load ``--init_checkpoint`` weights, or the ``--resume`` state; returns the epochs done."""
    if cfg.init_checkpoint:
        init = read_checkpoint(cfg.init_checkpoint)
        model.projections.load_released(projection_state(init, cfg.init_checkpoint),
                                        cfg.init_checkpoint)
    if ckpt is None:
        return 0
    if not all(k in ckpt for k in ("optimizer", "epoch")):
        raise CheckpointError(f"{cfg.resume} has no optimizer/epoch state (not written by this "
                              "train.py); use --init_checkpoint to start from its weights")
    done = int(ckpt["epoch"])
    if done >= cfg.epoch:
        raise CheckpointError(f"{cfg.resume} has already trained {done} epochs; pass --epoch "
                              f"larger than {done} to continue")
    for k in RESUME_KEYS:
        old = ckpt.get("config", {}).get(k, getattr(cfg, k))
        if old != getattr(cfg, k):
            log.warning(f"warning: --{k} {getattr(cfg, k)!r} differs from the resumed run's "
                        f"{old!r}; the result will not equal an uninterrupted run")
    model.projections.load_released(projection_state(ckpt, cfg.resume), cfg.resume)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state in {cfg.resume} does not fit: {e}") from e
    for g in optimizer.param_groups:
        g["lr"] = cfg.learning_rate
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    log.info(f"resumed {cfg.resume} after epoch {done}; training to epoch {cfg.epoch}")
    return done


def train(cfg: TrainConfig) -> dict:
    """Run the training; returns ``epoch_losses``, ``backbone_images``, ``seconds``, ``checkpoints``."""
    root, save = Path(cfg.train_data_path), Path(cfg.save_path)
    meta = load_meta(root, cfg.dataset)
    per_cat = make_samples(root, "test", cfg.categories, cfg.dataset, meta)
    samples = [s for c in per_cat.values() for s in c]
    ckpt = read_checkpoint(cfg.resume) if cfg.resume else None
    log = setup_logging(save)
    if not any(s.anomaly for s in samples):
        msg = (f"the training set ({root}, test split) has no anomalous image: every mask is "
               "empty, so the projections only learn to predict 'normal'")
        warnings.warn(msg)
        log.warning(f"warning: {msg}")
    aug = cfg.aug_rate if cfg.dataset in MOSAIC_DATASETS else 0.0
    if cfg.aug_rate > 0 and not aug:
        log.info(f"--aug_rate {cfg.aug_rate} ignored: the mosaic augmentation is for MVTec-layout "
                 "datasets only (as released)")
    device = resolve_device(cfg.device)
    setup_seed(cfg.seed)  # released order: seed, CLIP, linear layers
    model, tokenizer = build_model(cfg.model, cfg.pretrained, cfg.image_size, cfg.features_list,
                                   (), cfg.config_path, device)
    n_train = sum(p.numel() for p in model.trainable_parameters())
    n_frozen = sum(p.numel() for p in model.backbone.parameters())
    log.info(f"trainable parameters: {n_train:,} (projections of stages {model.features_list}); "
             f"frozen backbone: {n_frozen:,}")
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.learning_rate,
                                 betas=(0.5, 0.999))
    start = restore(cfg, ckpt, model, optimizer, log)
    text_bank = TextFeatureBank(model.backbone.encode_text, tokenizer,
                                PromptSet.load(cfg.prompt_dir), device)
    texts = {c: text_bank(c) for c in dict.fromkeys(s.cls_name for s in samples)}  # [D, 2] each
    atomic_write_text(save / "config.json", config_json(cfg))
    config = json.loads(config_json(cfg))

    items = TrainItems(AnomalyDataset(root, samples, cfg.image_size, aug, cfg.seed),
                       make_cache(cfg, model, device) if cfg.cache_features else None)
    workers = default_workers(cfg.num_workers, device)
    log.info(f"training on {cfg.dataset} {root} (test split, {len(per_cat)} categories, "
             f"{len(samples)} images, {sum(s.anomaly for s in samples)} anomalous), "
             f"aug_rate {aug}, {cfg.epoch} epochs")
    out = {"epoch_losses": [], "backbone_images": 0, "checkpoints": []}
    t0 = time.time()
    for epoch in range(start, cfg.epoch):
        items.set_epoch(epoch)
        if items.cache is not None:  # entries this epoch will write, for the free-space check
            wanted = {k for i, k in enumerate(items.keys) if not items.ds.is_augmented(i)}
            items.cache.missing = len(wanted - items.cached)
        seed = int(np.random.SeedSequence([cfg.seed, epoch]).generate_state(1)[0])
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
        loader = DataLoader(items, batch_size=cfg.batch_size, sampler=order, num_workers=workers,
                            collate_fn=collate_train)
        model.train()
        losses, n_bb = [], 0
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epoch}", leave=False,
                          dynamic_ncols=True):
            tokens, embed, n = encode_batch(model, batch, items, device)
            n_bb += n
            text = torch.stack([texts[c] for c in batch["cls_name"]])  # [B, D, 2]
            loss = batch_loss(model, tokens, embed, text, batch["mask"].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        out["epoch_losses"].append(float(np.mean(losses)))
        out["backbone_images"] += n_bb
        if (epoch + 1) % cfg.print_freq == 0:
            log.info(f"epoch [{epoch + 1}/{cfg.epoch}], loss:{np.mean(losses):.4f}")
        if (epoch + 1) % cfg.save_freq == 0 or epoch + 1 == cfg.epoch:
            path = save / f"epoch_{epoch + 1}.pth"
            atomic_torch_save(path, {
                CHECKPOINT_KEY: model.projections.state_dict(), "config": config,
                "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "rng": rng_state()})
            out["checkpoints"].append(str(path))
    out["seconds"] = time.time() - t0
    log.info(f"{out['backbone_images']} images through the backbone in {out['seconds']:.1f} s; "
             f"checkpoints in {save}")
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_main(lambda: (train(cfg), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
