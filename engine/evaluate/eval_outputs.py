"""What test.py draws once a category's metrics are known: overlays and the report.

The colour scale of a run's heatmaps is fixed per category once its pixel threshold (F1-max)
is known (``utils.visualize.fixed_scale``), so overlays (``--visualize``) and the report's
galleries are drawn after the metrics, from the category's patch-resolution results; only the
images shown are made into full maps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets.transforms import open_image
from models.anomaly_maps import final_maps, zero_shot_maps
from utils.visualize import fixed_scale, heatmap_overlay, render_overlay, save_overlay

from engine.evaluate.runs import FewShotRun, Run

CPU = torch.device("cpu")


def run_maps(res: dict, run_index: int, few: bool, size: int, idx: list[int] | None = None
             ) -> np.ndarray:
    """[n, S, S] float32 final maps of one run for the images ``idx`` (all when None)."""
    pick = slice(None) if idx is None else torch.as_tensor(idx, dtype=torch.long)
    logits = [l[pick] for l in res["logits"]]
    dist = [d[pick] for d in res["distances"][run_index]] if few else None
    return final_maps(zero_shot_maps(logits, size, CPU), dist, size).numpy()


def _scale(job, run: Run, metrics: dict, level: float | None):
    if job.cfg.heatmap_scale == "image":
        return None
    n_mem = len(job.model.few_shot_features) if isinstance(run, FewShotRun) else 0
    return fixed_scale(len(job.model.features_list), n_mem, metrics.get("threshold_px"), level)


def _pictures(job, path: str, amap: np.ndarray, scale, side: int, panel_px: int):
    """(image, overlay) of one gallery image: at most ``side`` px long, or as long as its panel
    of ``panel_px`` needs (a 4000 x 100 strip is drawn 1200 px long, to stay legible)."""
    from engine.report.images import source_side

    img = open_image(job.root / path)
    if scale is None:
        s = amap.shape[0]
        return np.asarray(img.convert("RGB").resize((s, s), Image.BICUBIC)), heatmap_overlay(img, amap)
    return render_overlay(img, amap, scale, max_side=max(side, source_side(img.size, panel_px)))


def draw_category(job, cls: str, res: dict, results: list[dict], levels: list,
                  runs: list[Run] | None = None) -> None:
    """Overlays (``--visualize``) and the report's category section, for every run of ``runs``
    (default ``job.runs``; ``res``, ``results`` and ``levels`` are theirs, in that order)."""
    from engine.report import EvalReport, GalleryItem, select_gallery

    size, few = job.cfg.image_size, any(isinstance(r, FewShotRun) for r in job.runs)
    for i, (r, out) in enumerate(zip(runs or job.runs, results)):
        m = out["metrics"]
        level = levels[i] if few else None
        scale = _scale(job, r, m, level)
        if job.cfg.visualize:
            vis = job.run_dir(r) / "overlays" / cls
            maps = run_maps(res, i, few, size)
            for p, amap, g in zip(res["paths"], maps, res["gt_px"]):
                save_overlay(vis / (p.replace("/", "_").rsplit(".", 1)[0] + ".png"),
                             open_image(job.root / p), amap, g, scale, job.cfg.heatmap_max_side)
        if job.cfg.no_report:
            continue
        if r not in job.reports:
            job.reports[r] = EvalReport(job.run_dir(r), report_title(job, r), report_info(job, r))
        picks = select_gallery(out["score"], res["gt_sp"], m.get("threshold_sp"))
        wanted = sorted({j for v in picks.values() for j in v})
        maps = dict(zip(wanted, run_maps(res, i, few, size, wanted))) if wanted else {}
        gallery = {}
        for kind, idx in picks.items():
            items = []
            for j in idx:
                rgb, over = _pictures(job, res["paths"][j], maps[j], scale, 384,
                                      job.reports[r].panel_px)
                gt = res["gt_px"][j] if res["gt_sp"][j] else None
                items.append(GalleryItem(res["paths"][j], float(out["score"][j]), rgb, over, gt))
            gallery[kind] = items
        refs = r.references[cls] if isinstance(r, FewShotRun) else None
        thumbs = [np.asarray(open_image(job.root / p).convert("RGB")) for p in refs] if refs else None
        job.reports[r].add_category(cls, out["curves"], out["score"], res["gt_sp"], res["paths"],
                                    m.get("threshold_sp"), m.get("threshold_px"), gallery,
                                    refs, thumbs)


def report_title(job, r: Run) -> str:
    return f"{job.cfg.dataset} {job.cfg.mode}" + (f" {r.label}" if len(job.runs) > 1 else "")


def report_info(job, r: Run) -> dict:
    from engine.report.common import random_model_note

    cfg = job.cfg
    return {"warning": random_model_note(cfg.pretrained, cfg.config_path), "mode": cfg.mode,
            "dataset": cfg.dataset, **r.info(), "image score": cfg.image_score,
            "model": Path(cfg.config_path).stem if cfg.config_path else cfg.model,
            "weights": cfg.pretrained, "image size": cfg.image_size,
            "stages": " ".join(map(str, cfg.features_list)), "checkpoint": cfg.checkpoint_path,
            "heatmaps": "one scale per category (the pixel threshold at mid-scale)"
            if cfg.heatmap_scale == "auto" else "each scaled to its own min-max"}


def finish_reports(job, results: dict) -> None:
    """Each run's report.html, and the index page of several (k, seed) runs."""
    if job.cfg.no_report:
        return
    from engine.report import write_runs_index

    for r, rep in job.reports.items():
        rep.finish(results[r])
    if len(job.runs) > 1:
        from utils.io import read_json
        summary = read_json(job.out / "summary.json", "summary")
        write_runs_index(job.out, f"{job.cfg.dataset} {job.cfg.mode}",
                         [{"k": r.k, "seed": r.seed, "folder": r.folder(),
                           "mean": results[r]["mean"]} for r in job.runs], summary,
                         info=report_info(job, job.runs[0]) | {"k_shot": None, "seed": None})
