"""test.py's evaluation: index, plan the runs, build the model, one pass, metrics, result files.

Every test image goes through the backbone once, whatever the number of (k, seed) runs, and
every distinct reference image once. ``prepare`` does all the checks that can fail before the
long work starts; ``run`` is the pass over the categories; ``write`` writes each run's files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datasets import load_meta, make_samples
from datasets.anomaly_dataset import Sample
from datasets.loaders import loader
from datasets.transforms import open_image
from metrics import METRIC_KEYS
from models.april_gan import AprilGAN
from prompts import TextFeatureBank, load_prompts
from utils.io import atomic_write_json, atomic_write_text
from utils.npz_stream import NpzStreamWriter
from utils.visualize import save_overlay

from .config import EvalConfig
from .inference import build_bank, full_maps, progress, reference_tokens, run_category
from .loading import build_model, load_projections, resolve_device, trained_with
from .metric_pool import MetricPool
from .results import pct, write_metrics, write_summary
from .runs import FewShotRun, Run, plan_runs


@dataclass
class EvalJob:
    """Everything an evaluation needs, checked and built."""

    cfg: EvalConfig
    root: Path
    test: dict[str, list[Sample]]
    runs: list[Run]
    model: AprilGAN
    text: TextFeatureBank
    device: torch.device
    workers: int
    log: logging.Logger
    backbone_images: int = 0
    seconds: float = 0.0
    columns: dict = field(default_factory=dict)

    def run_dir(self, run: Run) -> Path:
        base = Path(self.cfg.save_path)
        return base if len(self.runs) == 1 else base / run.folder()


def prepare(cfg: EvalConfig, log: logging.Logger) -> EvalJob:
    """Index the data, plan the runs (references drawn or read), check prompts, build the model."""
    root = Path(cfg.data_path)
    meta = load_meta(root, cfg.dataset)
    test = make_samples(root, "test", cfg.categories, cfg.dataset, meta)
    runs = plan_runs(cfg.mode, cfg.k_shot, cfg.seed, cfg.reference_list, meta, root, test,
                     cfg.dataset)
    prompts = load_prompts(cfg.prompt_dir, list(test))
    device = resolve_device(cfg.device)
    model, tokenizer = build_model(
        cfg.model, cfg.pretrained, cfg.image_size, cfg.features_list,
        cfg.few_shot_features if cfg.mode == "few_shot" else (), cfg.config_path, device)
    load_projections(model.projections, cfg.checkpoint_path, trained_with(cfg))
    model.eval()
    text = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    few = [r for r in runs if isinstance(r, FewShotRun)]
    log.info(f"{cfg.mode} on {cfg.dataset} ({len(test)} categories, "
             f"{sum(map(len, test.values()))} test images), stages {model.features_list}"
             + (f", memory stages {model.few_shot_features}, runs "
                f"{', '.join(r.label for r in few)}" if few else ""))
    return EvalJob(cfg, root, test, runs, model, text, device, workers, log)


def run(job: EvalJob) -> dict[Run, dict[str, dict]]:
    """The pass over the categories; returns {run: {category: metrics}} (files streamed)."""
    cfg, size, runs = job.cfg, job.cfg.image_size, job.runs
    writers: dict[Run, NpzStreamWriter] = {}
    if cfg.save_predictions:
        n = sum(map(len, job.test.values()))
        for r in runs:
            w = writers[r] = NpzStreamWriter(job.run_dir(r) / "predictions.npz")
            w.begin("anomaly_maps", (n, size, size), np.float32)
    per_cat: dict[Run, dict] = {r: {} for r in runs}
    job.columns = {r: {"img_paths": [], "cls_names": [], "gt_sp": [], "pr_sp": []} for r in runs}
    pool, pending = MetricPool(cfg.metric_workers), {}
    t0 = time.time()
    try:
        for cls in job.test:
            res, banks = _infer_category(job, cls)
            for i, r in enumerate(runs):
                dist = res["distances"][i] if banks else None
                maps = None  # made here only when written; a worker process makes its own
                if r in writers or cfg.visualize:
                    maps = np.concatenate(list(full_maps(res["logits"], dist, size)))
                pending[r, cls] = pool.submit(res["logits"], dist, res["text_score"], res["gt_px"],
                                              res["gt_sp"], size, not cfg.no_mvtec_aupro,
                                              maps if pool.inline else None)
                c = job.columns[r]
                c["img_paths"] += res["paths"]
                c["cls_names"] += [cls] * len(res["paths"])
                c["gt_sp"].append(res["gt_sp"])
                if maps is not None:
                    _write_maps(job, r, cls, res, maps, writers.get(r))
            if pool.inline:
                log_category(job.log, cls, pending[runs[0], cls].result()[0])
        for (r, cls), fut in pending.items():
            per_cat[r][cls], score = fut.result()
            job.columns[r]["pr_sp"].append(score)
            if not pool.inline and r is runs[0]:
                log_category(job.log, cls, per_cat[r][cls])
        for r, w in writers.items():
            c = job.columns[r]
            w.add("img_paths", np.array(c["img_paths"]))
            w.add("cls_names", np.array(c["cls_names"]))
            w.add("gt_sp", np.concatenate(c["gt_sp"]))
            w.add("pr_sp", np.concatenate(c["pr_sp"]).astype(np.float64))
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        pool.close()
    job.seconds = time.time() - t0
    return per_cat


def _infer_category(job: EvalJob, cls: str):
    """One backbone pass over a category (and its distinct reference images)."""
    banks = []
    few = [r for r in job.runs if isinstance(r, FewShotRun)]
    if few:
        wanted = [p for r in few for p in r.references[cls]]
        tokens = reference_tokens(job.model, job.root, wanted, job.cfg.batch_size, job.workers,
                                  job.device)
        job.backbone_images += len(tokens)
        banks = [build_bank(job.model, cls, r.references[cls], tokens) for r in few]
    bar = progress(len(job.test[cls]), cls)
    try:
        res = run_category(job.model, loader(job.root, job.test[cls], job.cfg.image_size,
                                             job.cfg.batch_size, job.workers),
                           job.text(cls), banks, job.device, bar.update)
    finally:  # also on error: clear the bar so an error message starts its own line
        bar.close()
    job.backbone_images += len(res["paths"])
    return res, banks


def _write_maps(job: EvalJob, r: Run, cls: str, res: dict, maps: np.ndarray,
                writer: NpzStreamWriter | None) -> None:
    if writer is not None:
        writer.write(maps)
    if job.cfg.visualize:
        vis = job.run_dir(r) / "overlays" / cls
        for p, m, g in zip(res["paths"], maps, res["gt_px"]):
            save_overlay(vis / (p.replace("/", "_").rsplit(".", 1)[0] + ".png"),
                         open_image(job.root / p), m, g, vmax=None)


def write(job: EvalJob, per_cat: dict[Run, dict], config_text: str) -> dict[Run, dict]:
    """Each run's metrics.json, tables, thresholds (and references); config; the summary."""
    cfg, save, n_runs = job.cfg, Path(job.cfg.save_path), len(job.runs)
    results = {}
    for r in job.runs:
        out = job.run_dir(r)
        extra = {"mode": cfg.mode, "dataset": cfg.dataset, **r.info()}
        if isinstance(r, FewShotRun):
            atomic_write_json(out / "references.json", r.references)
        title = f"{cfg.dataset} {cfg.mode}" + (f" {r.label}" if n_runs > 1 else "")
        results[r] = write_metrics(out, per_cat[r], extra, title=title, echo=n_runs == 1,
                                   log=job.log)
    atomic_write_text(save / "config.json", config_text)
    if n_runs > 1:
        write_summary(save, {(r.k, r.seed): results[r] for r in job.runs}, log=job.log)
    job.log.info(f"{job.backbone_images} images through the backbone in {job.seconds:.1f} s; "
                 f"results in {save}")
    return results


def log_category(log: logging.Logger, cls: str, m: dict) -> None:
    log.info(f"{cls}: " + ", ".join(f"{k} {pct(m[k])}" for k in METRIC_KEYS))
