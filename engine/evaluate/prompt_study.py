"""prompt_study.py's work: many prompt sets on one dataset, each test image through the
backbone once for the whole study.

Per category, every batch of test images is encoded once (by the backbone, or read from
``--feature_store``), its memory-bank distances are computed once (few-shot), and then the
head runs once per variant with that variant's text features. Each variant's maps and scores
are then exactly those of ``test.py --prompt_dir <its folder>`` with the same flags, and its
metrics are computed by the same code (``metric_pool.score_category``, ``mean_metrics``).

The rank score of a variant (``--rank_by``, default ``auroc_px+auroc_sp``) is the mean of the
named metrics of its mean row; the change against the baseline is ours minus the baseline's,
in percentage points. With ``--image_score both`` each variant also has ``per_image_score``:
the per-image score's image metrics beside the released ones, as test.py's metrics.json has.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metrics import METRIC_KEYS
from metrics.report import THRESHOLD_KEYS, mean_metrics
from utils.io import atomic_write_json, atomic_write_text, csv_text

from engine.config import StudyConfig
from engine.evaluate.prompt_variants import Variant, build_variants, write_prompt_dir


@dataclass
class Study:
    cfg: StudyConfig
    job: object  # evaluation.EvalJob (model, data, runs, store)
    variants: list[Variant]
    banks: list  # a TextFeatureBank per variant
    log: logging.Logger
    per_category: list[dict] = field(default_factory=list)  # per variant {cat: metrics}
    # per variant {cat: image metrics of the per-image score} (--image_score both)
    per_image: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def prepare(cfg: StudyConfig, log: logging.Logger, out: Path) -> Study:
    """The data, model and runs (test.py's checks), and every variant checked."""
    from prompts import TextFeatureBank

    from engine.evaluate import evaluation

    job = evaluation.prepare(cfg, log, out)
    variants = build_variants(cfg.prompt_dir, cfg.variants, cfg.ablate, list(job.test))
    shared: dict = {}  # each distinct sentence encoded once for the whole study
    banks = [TextFeatureBank(job.text.encode_text, job.text.tokenizer, v.prompts, job.device,
                             shared) for v in variants]
    log.info(f"{len(variants)} prompt variants: " + ", ".join(v.name for v in variants))
    return Study(cfg, job, variants, banks, log, [{} for _ in variants],
                 [{} for _ in variants])


def run(study: Study) -> None:
    """One pass over the categories; every variant's metrics per category."""
    from engine.core.inference import (
        build_bank,
        concat_results,
        infer_batches_many,
        normal_level,
        progress,
        reference_tokens,
    )
    from engine.evaluate.evaluation import _batches, metrics_device
    from engine.evaluate.metric_pool import CategoryTask, score_category
    from engine.evaluate.runs import FewShotRun

    job, cfg, t0 = study.job, study.cfg, time.time()
    size, dev = cfg.image_size, metrics_device(cfg, job.device)
    for cls in job.test:
        texts = [bank(cls) for bank in study.banks]
        banks, levels = [], [[None] for _ in texts]
        few = [r for r in job.runs if isinstance(r, FewShotRun)]
        if few:
            refs = few[0].references[cls]
            tokens = reference_tokens(job.model, job.root, refs, cfg.batch_size, job.workers,
                                      job.device)
            job.backbone_images += len(tokens)
            banks = [build_bank(job.model, cls, refs, tokens)]
            levels = [[normal_level(job.model, refs, tokens, t, size)] for t in texts]
        bar = progress(len(job.test[cls]), cls)
        parts = []
        try:
            batches, encode = _batches(job, job.test[cls])
            for r in infer_batches_many(job.model, batches, texts, banks, job.device, encode):
                parts.append(r)
                job.backbone_images += r["backbone_images"]
                bar.update(len(r["path"]))
        finally:
            bar.close()
        regions = None
        for v in range(len(texts)):
            res = concat_results([{**p, "logits": p["logits"][v],
                                   "text_score": p["text_score"][v]} for p in parts], len(banks))
            task = CategoryTask(res["logits"], res["distances"] if few else [None], levels[v],
                                res["text_score"], res["gt_px"], res["gt_sp"], size,
                                not cfg.no_mvtec_aupro, cfg.image_score)
            if regions is None:
                from metrics import mask_regions
                regions = mask_regions(res["gt_px"])  # the variants share the masks
            scored = score_category(task, dev, regions)[0]
            study.per_category[v][cls] = {k: x for k, x in scored["metrics"].items()
                                          if k not in THRESHOLD_KEYS}
            if scored["image_metrics_per_image"] is not None:  # --image_score both
                m = scored["image_metrics_per_image"]
                study.per_image[v][cls] = {"auroc_sp": m["auroc"], "f1_sp": m["f1"],
                                           "ap_sp": m["ap"]}
        base = study.per_category[0][cls]
        study.log.info(f"{cls}: baseline auroc_px {100 * base['auroc_px']:.1f}, auroc_sp "
                       f"{100 * base['auroc_sp']:.1f}; {len(texts)} variants scored")
    study.seconds = time.time() - t0


def rank_value(mean: dict, rank_by: str) -> float:
    """The mean of the ``rank_by`` metrics ('+'-joined) of a mean row (NaN if any is)."""
    vals = [mean.get(k) for k in rank_by.split("+")]
    return float(np.mean(vals)) if all(v is not None and math.isfinite(v) for v in vals) \
        else float("nan")


def results(study: Study) -> list[dict]:
    """Per variant: name, prompt_dir, change, mean, per_category, rank value, delta (points);
    with --image_score both, ``per_image_score`` as test.py writes it (the per-image score's
    image metrics, per category and their mean)."""
    import warnings

    out = []
    for i, (v, cats) in enumerate(zip(study.variants, study.per_category)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undefined category is reported per category
            mean = mean_metrics(cats)
            sp = study.per_image[i] if study.per_image else {}
            extra = {"per_image_score": {"per_category": sp, "mean": mean_metrics(sp)}} \
                if sp else {}
        out.append({"name": v.name, "prompt_dir": str(Path(v.prompt_dir).resolve())
                    if v.prompt_dir else None, "change": v.change, "mean": mean,
                    "per_category": cats, "rank": rank_value(mean, study.cfg.rank_by), **extra})
    base = out[0]
    for r in out:
        r["delta"] = {k: 100 * (r["mean"][k] - base["mean"][k]) for k in r["mean"]}
        r["rank_delta"] = 100 * (r["rank"] - base["rank"])
    return out


def ranked(rows: list[dict]) -> list[dict]:
    """Best first by rank value (NaN last; ties keep the study's order)."""
    return sorted(rows, key=lambda r: (-r["rank"] if math.isfinite(r["rank"]) else math.inf))


def write(study: Study, config_text: str) -> list[dict]:
    """study.json, study.csv, study.md, report.html, config.json (and --write_best)."""
    from engine.report.study import write_study_report

    cfg, out = study.cfg, study.job.out
    rows = results(study)
    order = ranked(rows)
    settings = {"mode": cfg.mode, "dataset": cfg.dataset, "data_path": str(
        Path(cfg.data_path).resolve()), "rank_by": cfg.rank_by, "image_score": cfg.image_score,
        "categories": list(study.job.test), "k_shot": cfg.k_shot[0] if cfg.mode == "few_shot"
        else None, "seed": cfg.seed[0] if cfg.mode == "few_shot" else None,
        "backbone_images": study.job.backbone_images, "seconds": round(study.seconds, 3)}
    atomic_write_json(out / "study.json", {"variants": [
        {k: r[k] for k in ("name", "prompt_dir", "change", "mean", "per_category",
                           "per_image_score") if k in r} for r in rows],
        "ranking": [r["name"] for r in order], "settings": settings})
    head = ["rank", "name", "change", f"{cfg.rank_by} (mean)", "vs baseline (points)",
            *METRIC_KEYS]
    table = [[i, r["name"], r["change"], _pct(r["rank"]), f"{r['rank_delta']:+.1f}",
              *(_pct(r["mean"].get(k)) for k in METRIC_KEYS)] for i, r in enumerate(order, 1)]
    atomic_write_text(out / "study.csv", csv_text([head] + table))
    md = [f"# Prompt study: {cfg.dataset} {cfg.mode}, ranked by {cfg.rank_by}", "",
          "Values in percent (mean over categories); 'vs baseline' is the rank value's change "
          "in percentage points. Chosen on this test set, a variant is tuned on it: confirm "
          "the winner once on another dataset.", "",
          "| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(map(str, row)) + " |" for row in table]
    atomic_write_text(out / "study.md", "\n".join(md) + "\n")
    if not cfg.no_report:
        write_study_report(out, f"prompt study: {cfg.dataset} {cfg.mode}", rows, order,
                           cfg.rank_by, report_info(study))
    atomic_write_text(out / "config.json", config_text)
    best = study.variants[[r["name"] for r in rows].index(order[0]["name"])]
    if cfg.write_best:
        write_prompt_dir(best, Path(cfg.write_best))
        study.log.info(f"wrote the best variant {best.name!r} to {cfg.write_best}")
    study.log.info("\n" + "\n".join(md[4:]))
    study.log.info(f"{len(rows)} variants, {study.job.backbone_images} images through the "
                   f"backbone, {study.seconds:.1f} s; best: {order[0]['name']}. Results in "
                   f"{cfg.save_path}")
    return rows


def report_info(study: Study) -> dict:
    """The report's header: test.py's (the random-model warning, mode, dataset, model, weights,
    checkpoint, ...) and the baseline's prompts; the study draws no heatmaps."""
    from engine.evaluate.eval_outputs import report_info as eval_info

    info = eval_info(study.job, study.job.runs[0])
    info.pop("heatmaps", None)
    return {**info, "baseline prompts": study.cfg.prompt_dir or "the shipped prompts"}


def _pct(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"
