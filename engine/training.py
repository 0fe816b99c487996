"""train.py's loop: focal + Dice training of the per-stage projections (METHOD §6).

As released: the *test* split of every category is the training set, only the projections are
trained (Adam, lr 1e-3, betas (0.5, 0.999), no schedule, seed 111), the loss is the sum over
stages of focal + Dice on the upsampled probability maps, and MVTec-layout data gets the 2x2
mosaic with probability ``--aug_rate``. Shuffling and mosaics come from generators seeded by
(seed, epoch), so ``--resume`` ends with the weights of an uninterrupted run. The head (the
projections and the loss) always runs in float32, as evaluation does: it is a few linear layers,
so fp16 would save nothing and would need a GradScaler; the frozen backbone uses fp16 autocast
on CUDA. Training stops at the first non-finite loss or gradient, before that step's update.

Normal images only (issue 16): ``--train_split train`` or ``--train_image_dir`` with
``--synthesize_anomalies P`` gives each sample, per epoch, a synthesized defect and its exact mask
with probability P (``datasets.normal_only``; seeded by (seed, epoch, index), so resuming stays
exact); everything else is as above. Synthesized samples, like mosaics, are never cached.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import Sample, load_meta, make_samples
from datasets.feature_cache import FeatureCache, TrainItems, collate_train
from datasets.normal_only import folder_samples, training_dataset
from datasets.validate import check_split
from errors import CheckpointError, ConfigError, NonFiniteError
from losses import segmentation_loss
from models.anomaly_maps import stage_probabilities
from models.april_gan import AprilGAN
from models.projection import CHECKPOINT_KEY
from prompts import TextFeatureBank, load_prompts
from utils.cli import resolved
from utils.io import atomic_torch_save, atomic_write_text
from utils.log import plural
from utils.rng import rng_state, set_rng_state, setup_seed

from engine.config import MOSAIC_DATASETS, TrainConfig
from engine.core.features import encode_batch, open_store
from engine.core.loading import (
    build_model,
    checkpoint_weights,
    read_checkpoint,
    resolve_device,
    trained_with,
    warn_settings_differ,
)
from engine.plumbing import distributed

RESUME_KEYS = ("dataset", "train_data_path", "model", "pretrained", "image_size", "features_list",
               "batch_size", "aug_rate", "learning_rate", "seed", "categories",
               "synthesize_anomalies", "train_split", "train_image_dir", "object_name",
               "recursive", "texture_dir")


def batch_loss(model: AprilGAN, patch_tokens: dict[int, torch.Tensor], image_embed: torch.Tensor,
               text: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Training loss of one batch (differentiable w.r.t. the projections only), in float32.

    Args:
        patch_tokens: {stage: [B, L, C]} frozen backbone tokens (no class token).
        image_embed: [B, D] normalised image embeddings.
        text: [B, D, 2] text features of each image's category.
        gt: [B, S, S] 0/1 masks.

    Returns:
        Scalar sum over stages of focal(P_n, gt) + dice(P_n[:, 1], gt), P_n at S x S.
    """
    head = model.head(patch_tokens, image_embed, text)
    probs = stage_probabilities(head["stage_logits"], gt.shape[-1])  # [B, 2, S, S] each
    return segmentation_loss(probs, gt.float())


def make_cache(cfg: TrainConfig, model: AprilGAN, device: torch.device) -> FeatureCache:
    """Open (or create) the feature store of this run's backbone weights, size and data
    (``engine.core.features``: the folder ``test.py --feature_store`` shares on the same data)."""
    if cfg.train_image_dir:
        return open_store(cfg.cache_features, cfg, model, device, "image_dir", cfg.train_image_dir,
                          "--cache_features")
    return open_store(cfg.cache_features, cfg, model, device, cfg.dataset, cfg.train_data_path,
                      "--cache_features")


def restore(cfg: TrainConfig, ckpt: dict | None, model: AprilGAN, optimizer,
            log: logging.Logger) -> int:
    """Load ``--init_checkpoint`` weights, or the ``--resume`` state; returns the epochs done."""
    settings = trained_with(cfg)
    if cfg.init_checkpoint:
        init = read_checkpoint(cfg.init_checkpoint)
        model.projections.load_state_dict(checkpoint_weights(init, cfg.init_checkpoint,
                                                             model.projections))
        warn_settings_differ(init, cfg.init_checkpoint, settings)
    if ckpt is None:
        return 0
    if not all(k in ckpt for k in ("optimizer", "epoch")):
        raise CheckpointError(f"{cfg.resume} has no optimizer/epoch state (not written by this "
                              "train.py); use --init_checkpoint to start from its weights")
    done = int(ckpt["epoch"])
    if done >= cfg.epoch:
        raise CheckpointError(f"{cfg.resume} has already trained {plural(done, 'epoch')}; pass "
                              f"--epoch larger than {done} to continue")
    now = resolved(cfg)
    for k in RESUME_KEYS:
        old = ckpt.get("config", {}).get(k, now[k])
        if old != now[k]:
            log.warning(f"warning: --{k} {now[k]!r} differs from the resumed run's {old!r}; the "
                        "result will not equal an uninterrupted run")
    model.projections.load_state_dict(checkpoint_weights(ckpt, cfg.resume, model.projections))
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state in {cfg.resume} does not fit: {e}") from e
    for g in optimizer.param_groups:
        g["lr"] = cfg.learning_rate
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    log.info(f"resumed {cfg.resume} after {plural(done, 'epoch')}; training to epoch {cfg.epoch}")
    return done


def empty_loss(model: AprilGAN, device: torch.device) -> torch.Tensor:
    """0 through the projections (an empty share of a batch, so the rank joins DDP's step)."""
    dims = [fc.in_features for fc in model.projections.module.fc]
    outs = model.projections([torch.zeros(0, 1, c, device=device) for c in dims])
    return sum(o.sum() for o in outs) * 0.0


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation of ``range(n)`` drawn from its own generator
    seeded by (seed, epoch), so every epoch is shuffled anew, a resumed run (or every torchrun
    rank) draws the same order, and nothing else that uses random numbers can shift it."""
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(state)).tolist()


def check_finite(loss: torch.Tensor, model: AprilGAN, epoch: int, step: int, last: str) -> None:
    """NonFiniteError naming epoch and step when the loss or a gradient is NaN/inf."""
    where = f"epoch {epoch + 1}, step {step + 1}"
    resume = f"; resume from {last}" if last else ""
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the training loss became {loss.item()} at {where}; nothing was "
                             f"saved from this state (check the data, --learning_rate and "
                             f"--init_checkpoint){resume}")
    for name, p in model.projections.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            raise NonFiniteError(f"the gradient of {name} became non-finite at {where}; nothing "
                                 f"was saved from this state{resume}")


def training_set(cfg: TrainConfig, log: logging.Logger) -> tuple[Path, dict[str, list[Sample]], str]:
    """(root, {category: samples}, what for the log) of the images trained on: the
    ``--train_split`` of ``--train_data_path`` (test as released), or ``--train_image_dir``."""
    if cfg.train_image_dir:
        root = Path(cfg.train_image_dir)
        samples = folder_samples(root, cfg.object_name, cfg.recursive,
                                 lambda path, why: log.warning(f"warning: {path}: {why}"))
        return root, {cfg.object_name: samples}, f"the images of {root} ({cfg.object_name}, "
    root = Path(cfg.train_data_path)
    meta = load_meta(root, cfg.dataset)
    if meta.get("labels") == "image" and cfg.synthesize_anomalies <= 0:
        raise ConfigError(f"{root / 'meta.json'} is labelled per image only (no masks): the "
                          "projections learn from masks; train on a set with masks, or on its "
                          "normal images with --synthesize_anomalies P")
    per_cat = make_samples(root, cfg.train_split, cfg.categories, cfg.dataset, meta)
    check_split(root, per_cat)  # every image and mask readable and fitting, before training
    return root, per_cat, f"{cfg.dataset} {root} ({cfg.train_split} split, "


def check_labels(cfg: TrainConfig, samples: list[Sample], root: Path, log: logging.Logger) -> None:
    """A training set without any defect (mask) and no synthesis: ConfigError for a normal-only
    split, the released warning for the test split."""
    if cfg.synthesize_anomalies > 0 or any(s.anomaly for s in samples):
        return
    if cfg.train_split != "test":
        raise ConfigError(f"--train_split {cfg.train_split} of {root} holds normal images only, so "
                          "with --synthesize_anomalies 0 every mask is empty and the projections "
                          "only learn to predict 'normal'; pass --synthesize_anomalies P (e.g. "
                          "0.5) or train on --train_split test")
    msg = (f"the training set ({root}, test split) has no anomalous image: every mask is "
           "empty, so the projections only learn to predict 'normal'")
    warnings.warn(msg)
    log.warning(f"warning: {msg}")


def train(cfg: TrainConfig, log: logging.Logger) -> dict:
    """Run the training; returns ``epoch_losses``, ``backbone_images``, ``seconds``, ``checkpoints``."""
    root, per_cat, what = training_set(cfg, log)
    save = Path(cfg.save_path)
    samples = [s for c in per_cat.values() for s in c]
    ckpt = read_checkpoint(cfg.resume) if cfg.resume else None
    prompts = load_prompts(cfg.prompt_dir, list(per_cat))
    check_labels(cfg, samples, root, log)
    aug = cfg.aug_rate if cfg.dataset in MOSAIC_DATASETS and not cfg.train_image_dir else 0.0
    if cfg.aug_rate > 0 and not aug:
        log.info(f"--aug_rate {cfg.aug_rate} ignored: the mosaic augmentation is for MVTec-layout "
                 "datasets only (as released)")
    dataset = training_dataset(root, samples, cfg.image_size, aug, cfg.seed,
                               cfg.synthesize_anomalies, cfg.texture_dir)
    dist = distributed.current()
    if dist.enabled and cfg.batch_size % dist.world:
        raise ConfigError(f"--batch_size {cfg.batch_size} is the global batch and must divide by "
                          f"the {dist.world} processes (each takes batch_size / processes)")
    device = resolve_device(dist.device(cfg.device))
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
    text_bank = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)
    texts = {c: text_bank(c) for c in dict.fromkeys(s.cls_name for s in samples)}  # [D, 2] each
    config = resolved(cfg, device=str(device))
    if dist.main:
        atomic_write_text(save / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    projections = model.projections  # what the checkpoints hold
    if dist.enabled:  # gradients all-reduced over the ranks; the frozen backbone is not wrapped
        from torch.nn.parallel import DistributedDataParallel
        model.projections = DistributedDataParallel(projections)

    cache = None
    for turn in (0, 1) if cfg.cache_features else ():  # rank 0 makes the folder first
        if dist.main == (turn == 0):
            cache = make_cache(cfg, model, device)
        dist.barrier()
    items = TrainItems(dataset, cache)
    workers = cfg.loader_workers(device)
    synth = f", synthesize_anomalies {cfg.synthesize_anomalies}" if cfg.synthesize_anomalies else ""
    n_bad = sum(s.anomaly for s in samples)
    log.info(f"training on {what}{plural(len(per_cat), 'category', 'categories')}, "
             f"{len(samples)} images, {n_bad} anomalous), aug_rate {aug}{synth}, "
             f"{plural(cfg.epoch, 'epoch')}")
    out = {"epoch_losses": [], "backbone_images": 0, "checkpoints": [], "backbone_s": 0.0}
    last = str(save / f"epoch_{start}.pth") if start else ""
    t0 = time.time()
    for epoch in range(start, cfg.epoch):
        items.set_epoch(epoch)
        if items.cache is not None:  # entries this epoch will write, for the free-space check
            wanted = {k for i, k in enumerate(items.keys) if not items.ds.is_augmented(i)}
            items.cache.missing = len(wanted - items.cached)
        order = epoch_order(len(items), cfg.seed, epoch)
        steps = [order[a:a + cfg.batch_size] for a in range(0, len(order), cfg.batch_size)]
        mine = [dist.split(step) for step in steps]  # this rank's part of each global batch
        loader = iter(DataLoader(items, batch_sampler=[m for m in mine if m], num_workers=workers,
                                 collate_fn=collate_train))
        model.train()
        losses, n_bb = [], 0
        for step, part in enumerate(tqdm(mine, desc=f"epoch {epoch + 1}/{cfg.epoch}",
                                         leave=False, dynamic_ncols=True, disable=not dist.main)):
            optimizer.zero_grad()
            if part:
                batch = next(loader)
                t_bb = time.perf_counter()
                tokens, embed, n = encode_batch(model, batch, items, device)
                out["backbone_s"] += time.perf_counter() - t_bb
                n_bb += n
                text = torch.stack([texts[c] for c in batch["cls_name"]])  # [b, D, 2]
                loss = batch_loss(model, tokens, embed, text, batch["mask"].to(device))
            else:  # an empty share of a short last batch still joins the gradient all-reduce
                loss = empty_loss(model, device)
            # DDP averages the ranks' gradients: weight each by its share of the global batch,
            # so the update is the one-process update of the whole batch (METHOD §6 loss is a
            # mean over images)
            share = len(part) / len(steps[step])
            (loss * share * dist.world).backward()
            loss = dist.sum(loss.detach() * share)
            check_finite(loss, model, epoch, step, last)
            optimizer.step()
            losses.append(loss.item())
        out["epoch_losses"].append(float(np.mean(losses)))
        out["backbone_images"] += n_bb
        if (epoch + 1) % cfg.print_freq == 0:
            log.info(f"epoch [{epoch + 1}/{cfg.epoch}], loss:{np.mean(losses):.4f}")
        if (epoch + 1) % cfg.save_freq == 0 or epoch + 1 == cfg.epoch:
            path = save / f"epoch_{epoch + 1}.pth"
            if dist.main:  # one writer; the others know the name (for Ctrl-C and NaN messages)
                atomic_torch_save(path, {
                    CHECKPOINT_KEY: projections.state_dict(), "config": config,
                    "trained_with": trained_with(cfg), "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1, "rng": rng_state()})
            dist.barrier()
            out["checkpoints"].append(str(path))
            last = str(path)
    out["seconds"] = time.time() - t0
    model.projections = projections
    if not dist.main:
        return out
    atomic_write_text(save / "timings.json", json.dumps({
        "backbone_s": round(out["backbone_s"], 3), "metrics_s": 0.0,
        "total_s": round(out["seconds"], 3), "backbone_images": out["backbone_images"]}) + "\n")
    log.info(f"{out['backbone_images']} images through the backbone in {out['seconds']:.1f} s; "
             f"checkpoints in {save}")
    return out
