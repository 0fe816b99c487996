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
from torch.utils.data import DataLoader

from datasets import load_meta, make_samples
from datasets.anomaly_dataset import AnomalyDataset, Sample
from datasets.feature_cache import FeatureCache, TrainItems, collate_train
from datasets.loaders import loader
from datasets.validate import check_samples, check_split
from metrics import METRIC_KEYS
from models.april_gan import AprilGAN
from prompts import TextFeatureBank, load_prompts
from utils.io import atomic_write_json, atomic_write_text
from utils.npz_stream import NpzStreamWriter

from engine.config import EvalConfig
from engine.core.features import encode_batch, open_store
from engine.core.inference import build_bank, normal_level, progress, reference_tokens, run_category
from engine.core.loading import resolve_device, scoring_model
from engine.core.thresholds import definition, effective_precision, model_name
from engine.evaluate.eval_outputs import draw_category, finish_reports, run_maps
from engine.evaluate.metric_pool import CategoryTask, MetricPool
from engine.evaluate.results import pct, write_metrics, write_summary
from engine.evaluate.runs import FewShotRun, Run, plan_runs
from engine.plumbing.distributed import Dist, gather_category
from engine.plumbing.result_set import check_free_space

PIXEL_KEYS = ("auroc_px", "f1_px", "ap_px", "pro", "mvtec_aupro")
IMAGE_LEVEL_REASON = "image-level labels only: the dataset has no masks"


@dataclass
class EvalJob:
    """Everything an evaluation needs, checked and built."""

    cfg: EvalConfig
    out: Path  # where the result files go (the staging folder of the result set)
    root: Path
    test: dict[str, list[Sample]]
    runs: list[Run]
    model: AprilGAN
    text: TextFeatureBank
    device: torch.device
    workers: int
    log: logging.Logger
    store: FeatureCache | None = None
    dist: Dist = field(default_factory=Dist)
    reports: dict = field(default_factory=dict)  # run -> EvalReport
    kept: dict = field(default_factory=dict)  # category -> (results, levels) until collected
    backbone_images: int = 0
    seconds: float = 0.0
    image_level: bool = False  # meta.json "labels": "image": no masks, no pixel metrics
    columns: dict = field(default_factory=dict)
    timings: dict = field(default_factory=lambda: {"backbone_s": 0.0, "metrics_s": 0.0})

    def run_dir(self, run: Run) -> Path:
        return self.out if len(self.runs) == 1 else self.out / run.folder()


def prepare(cfg: EvalConfig, log: logging.Logger, out: Path, dist: Dist | None = None) -> EvalJob:
    """Index the data, plan the runs (references drawn or read), check prompts, build the model."""
    root = Path(cfg.data_path)
    meta = load_meta(root, cfg.dataset)
    test = make_samples(root, "test", cfg.categories, cfg.dataset, meta)
    runs = plan_runs(cfg.mode, cfg.k_shot, cfg.seed, cfg.reference_list, meta, root, test,
                     cfg.dataset)
    if len(runs) == 1 and getattr(runs[0], "left_out", None) is not None:
        test = {c: [s for s in v if runs[0].tests(c, s.img_path)] for c, v in test.items()}
    prompts = load_prompts(cfg.prompt_dir, list(test))
    # every image, mask and reference readable and the right size before the long work
    n = check_split(root, test)
    refs = {p for r in runs if isinstance(r, FewShotRun) for v in r.references.values() for p in v}
    check_samples(root, [Sample(p, "", "", "good", 0) for p in sorted(refs)])
    check_free_space(out, _output_bytes(cfg, n, len(runs)), "the result files")
    dist = dist or Dist()
    device = resolve_device(dist.device(cfg.device))
    model, tokenizer = scoring_model(cfg, device, cfg.mode == "few_shot")
    text = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)
    workers = cfg.loader_workers(device)
    store = None
    for turn in (0, 1) if cfg.feature_store else ():  # rank 0 makes the folder first
        if dist.main == (turn == 0):
            store = open_store(cfg.feature_store, cfg, model, device, cfg.dataset, root,
                               "--feature_store")
        dist.barrier()
    few = [r for r in runs if isinstance(r, FewShotRun)]
    log.info(f"{cfg.mode} on {cfg.dataset} ({len(test)} categories, "
             f"{sum(map(len, test.values()))} test images"
             + (", each run leaving its references out" if len(few) > 1 and few[0].left_out
                is not None else "") + f"), stages {model.features_list}"
             + (f", memory stages {model.few_shot_features}, runs "
                f"{', '.join(r.label for r in few)}" if few else ""))
    job = EvalJob(cfg, out, root, test, runs, model, text, device, workers, log, store, dist)
    job.image_level = meta.get("labels") == "image"
    return job


def _output_bytes(cfg: EvalConfig, n_images: int, n_runs: int) -> int:
    """Rough size of the result files: predictions.npz maps (float32) and overlays (PNG)."""
    per_image = (4 if cfg.save_predictions else 0) + (3 if cfg.visualize else 0)
    return n_runs * n_images * per_image * cfg.image_size ** 2 + (1 << 20)


def metrics_device(cfg: EvalConfig, model_device: torch.device) -> torch.device:
    """``--metrics_device``: auto is the model's device."""
    return model_device if cfg.metrics_device == "auto" else resolve_device(cfg.metrics_device)


def run(job: EvalJob) -> dict[Run, dict[str, dict]]:
    """The pass over the categories; returns {run: {category: result}} (files streamed).

    A result is what ``metric_pool.score_category`` returns for that run and category. Under
    torchrun every rank infers its share of each category's images and rank 0, which gathers
    them back into order, computes the metrics and writes every file (other ranks return {}).
    """
    cfg, size, runs, main = job.cfg, job.cfg.image_size, job.runs, job.dist.main
    writers: dict[Run, NpzStreamWriter] = {}
    if cfg.save_predictions and main:
        for r in runs:
            n = sum(_tests(r, c, s.img_path) for c, v in job.test.items() for s in v)
            w = writers[r] = NpzStreamWriter(job.run_dir(r) / "predictions.npz")
            w.begin("anomaly_maps", (n, size, size), np.float32)
    per_cat: dict[Run, dict] = {r: {} for r in runs}
    job.columns = {r: {"img_paths": [], "cls_names": [], "gt_sp": [], "pr_sp": []} for r in runs}
    pool = MetricPool(cfg.metric_workers if main else 0, metrics_device(cfg, job.device))
    pending, few, t0 = {}, any(isinstance(r, FewShotRun) for r in runs), time.time()
    try:
        for cls in job.test:
            res, levels = _infer_category(job, cls)
            res = gather_category(job.dist, res, len(runs) if few else 0)
            if not main:
                continue
            job.backbone_images += res["backbone_images"]
            job.timings["backbone_s"] += res["backbone_seconds"]
            for g, (group, gres, glevels) in enumerate(_run_groups(job, cls, res, levels)):
                task = CategoryTask(gres["logits"], gres["distances"] if few else [None],
                                    glevels, gres["text_score"], gres["gt_px"], gres["gt_sp"],
                                    size, not cfg.no_mvtec_aupro, cfg.image_score)
                pending[cls, g] = pool.submit(task)
                job.kept[cls, g] = (group, gres, glevels)
                for i, r in enumerate(group):
                    c = job.columns[r]
                    c["img_paths"] += gres["paths"]
                    c["cls_names"] += [cls] * len(gres["paths"])
                    c["gt_sp"].append(gres["gt_sp"])
                    if r in writers:
                        writers[r].write(run_maps(gres, i, few, size))
                if pool.inline:
                    _collect(job, (cls, g), pending[cls, g].result(), per_cat)
        if not pool.inline:
            for key, fut in pending.items():
                _collect(job, key, fut.result(), per_cat)
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


def _collect(job: EvalJob, key: tuple[str, int], results: list[dict], per_cat: dict) -> None:
    """File one category's results under each run of a group (``_run_groups``), draw its
    overlays and report section, log (the first group's first run)."""
    cls = key[0]
    group, res, levels = job.kept.pop(key)
    for r, out in zip(group, results):
        per_cat[r][cls] = out
        job.columns[r]["pr_sp"].append(out["score"])
        job.timings["metrics_s"] += out["seconds"]
        for w in out["warnings"]:
            job.log.warning(f"warning: {cls} ({r.label}): {w}")
    draw_category(job, cls, res, results, levels, group)
    if key[1] == 0:
        log_category(job.log, cls, results[0]["metrics"])


def _tests(run: Run, cls: str, path: str) -> bool:
    return not isinstance(run, FewShotRun) or run.tests(cls, path)


def _run_groups(job: EvalJob, cls: str, res: dict, levels: list) -> list[tuple[list, dict, list]]:
    """(runs, their results, their normal levels) that share one set of test images.

    Every run tests every image of ``job.test`` (one group: ``res`` as it is), except few-shot
    runs on a set without an official split, each of which leaves its own references out: then
    one group per run, ``res`` restricted to the images it tests and to its own distances.
    """
    if all(_tests(r, cls, p) for r in job.runs for p in res["paths"]):
        return [(job.runs, res, levels)]
    groups = []
    for i, r in enumerate(job.runs):
        idx = [j for j, p in enumerate(res["paths"]) if _tests(r, cls, p)]
        pick = torch.as_tensor(idx, dtype=torch.long)
        groups.append(([r], {"logits": [t[pick] for t in res["logits"]],
                             "distances": [[t[pick] for t in res["distances"][i]]],
                             "text_score": res["text_score"][idx], "gt_px": res["gt_px"][idx],
                             "gt_sp": res["gt_sp"][idx],
                             "paths": [res["paths"][j] for j in idx]}, [levels[i]]))
    return groups


def _infer_category(job: EvalJob, cls: str):
    """One backbone pass over a category (and its distinct reference images).

    Returns (run_category's result, per run the normal level of the per-image score).
    """
    banks, levels = [], [None]
    few = [r for r in job.runs if isinstance(r, FewShotRun)]
    text = job.text(cls)
    if few:
        t0 = time.perf_counter()
        wanted = [p for r in few for p in r.references[cls]]
        tokens = reference_tokens(job.model, job.root, wanted, job.cfg.batch_size, job.workers,
                                  job.device)  # on every rank: the banks are built identically
        if job.dist.main:
            job.timings["backbone_s"] += time.perf_counter() - t0
            job.backbone_images += len(tokens)
        banks = [build_bank(job.model, cls, r.references[cls], tokens) for r in few]
        levels = [normal_level(job.model, r.references[cls], tokens, text, job.cfg.image_size)
                  for r in few]
    samples = job.test[cls]
    cats, size = list(job.test), job.cfg.batch_size
    first = sum(-(-len(job.test[c]) // size) for c in cats[:cats.index(cls)])  # batches before
    mine = job.dist.batch_shard(len(samples), size, first)  # whole one-process batches
    bar = progress(len(mine), cls)
    try:
        batches, encode = _batches(job, [samples[i] for i in mine])
        res = run_category(job.model, batches, text, banks, job.device, bar.update, encode)
    finally:  # also on error: clear the bar so an error message starts its own line
        bar.close()
    res["positions"] = mine
    return res, levels


def _batches(job: EvalJob, samples: list[Sample]):
    """The batches of ``samples``, and how to encode them (from the feature store when there)."""
    cfg = job.cfg
    if job.store is None:
        return loader(job.root, samples, cfg.image_size, cfg.batch_size, job.workers), None
    items = TrainItems(AnomalyDataset(job.root, samples, cfg.image_size), job.store)
    items.set_epoch(0)
    job.store.missing = len(set(items.keys) - items.cached)
    batches = DataLoader(items, batch_size=cfg.batch_size, shuffle=False,
                         num_workers=job.workers, collate_fn=collate_train)
    return batches, lambda b: encode_batch(job.model, b, items, job.device)


def write(job: EvalJob, per_cat: dict[Run, dict], config_text: str) -> dict[Run, dict]:
    """Each run's metrics.json, tables, thresholds (and references); config; the summary;
    timings.json (seconds in the backbone and in the metrics)."""
    cfg, save, n_runs = job.cfg, job.out, len(job.runs)
    results = {}
    for r in job.runs:
        out = job.run_dir(r)
        used = "per_image" if cfg.image_score == "per_image" else "released"
        extra = {"mode": cfg.mode, "dataset": cfg.dataset, "image_score": used, **r.info()}
        if isinstance(r, FewShotRun):
            atomic_write_json(out / "references.json", r.references)
        title = f"{cfg.dataset} {cfg.mode}" + (f" {r.label}" if n_runs > 1 else "")
        other = None
        if cfg.image_score == "both":
            other = {c: res["image_metrics_per_image"] for c, res in per_cat[r].items()}
        fitted = definition(cfg.mode, used, model_name(cfg.model, cfg.config_path),
                            cfg.image_size, cfg.features_list, cfg.few_shot_features,
                            getattr(r, "k", None),
                            effective_precision(cfg.precision, job.device.type))
        undefined = {c: dict(res["undefined"]) for c, res in per_cat[r].items()}
        if job.image_level:  # say why, not what the empty masks make of the formulas
            for c, res in per_cat[r].items():
                for k in PIXEL_KEYS:
                    if k in res["metrics"]:
                        undefined[c][k] = IMAGE_LEVEL_REASON
        results[r] = write_metrics(out, {c: res["metrics"] for c, res in per_cat[r].items()},
                                   extra, title=title, echo=n_runs == 1, log=job.log,
                                   per_image_sp=other, definition=fitted,
                                   undefined=undefined)
    atomic_write_text(save / "config.json", config_text)
    if n_runs > 1:
        write_summary(save, {(r.k, r.seed): results[r] for r in job.runs}, log=job.log)
    finish_reports(job, results)
    t = job.timings
    atomic_write_json(save / "timings.json", {
        "backbone_s": round(t["backbone_s"], 3), "metrics_s": round(t["metrics_s"], 3),
        "total_s": round(job.seconds, 3), "backbone_images": job.backbone_images})
    job.log.info(f"{job.backbone_images} images through the backbone ({t['backbone_s']:.1f} s), "
                 f"metrics {t['metrics_s']:.1f} s, {job.seconds:.1f} s in all; results in "
                 f"{cfg.save_path}")
    return results


def log_category(log: logging.Logger, cls: str, m: dict) -> None:
    log.info(f"{cls}: " + ", ".join(f"{k} {pct(m[k])}" for k in METRIC_KEYS))
