"""predict.py's report.html: the glue between a finished run and ``report.PredictReport``
(which images are shown, the header, the reference images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models.formulas import SCORE_FORMULAS


def write_report(job, scored: list[dict], score: np.ndarray, skipped: list[dict]) -> None:
    """report.html: the ``--report_max_images`` highest-scored images (all in scores.csv)."""
    from engine.report import PredictReport

    cfg, thr = job.cfg, job.thresholds
    top = np.argsort(-score, kind="stable")[:cfg.report_max_images]
    keep = {int(i) for i in top}
    info = report_info(job, scored, len(keep))
    report = PredictReport(job.out, f"predict.py: {cfg.object_name}", info, fresh=False)
    for i, r in enumerate(scored):
        t = r.get("thumb")
        if t is None:
            continue
        if i in keep:
            report.add_record({**t, "score": float(score[i]), "anomalous": None
                               if thr["image"] is None else bool(score[i] >= thr["image"]),
                               "heatmap": r.get("heatmap"), "mask": r.get("mask"),
                               "n_regions": len(r["regions"]) if "regions" in r else None})
        else:
            (job.out / t["src"]).unlink(missing_ok=True)
    ref_dir, refs = _references(job)
    if refs:
        report.add_references(ref_dir, refs)
    report.finish(thr["image"], skipped, thr["pixel"])


def report_info(job, scored: list[dict], shown: int) -> dict:
    """The report's header: what was scored, with what, and where the thresholds came from."""
    from engine.report.common import random_model_note

    cfg, thr, formula = job.cfg, job.thresholds, SCORE_FORMULAS[job.score_name]
    if cfg.onnx:
        model = job.scorer.onnx.meta["model"]
        note = random_model_note(model.get("pretrained"), model.get("config_path"))
    else:
        note = random_model_note(cfg.pretrained, cfg.config_path)
    cal = thr.get("calibration")
    info = {"warning": note, "object": cfg.object_name, "mode": job.mode,
            "score": formula, "images": len(scored),
            "model": cfg.onnx or cfg.model, "checkpoint": cfg.checkpoint_path,
            "thresholds from": thr["source"] or "none given (no verdicts, no masks)",
            "calibration": None if not cal else (
                f"{cal['n_images']} normal images of {cal['dir']}, target false-alarm rate "
                f"{cal['target_fpr']:g}; reached on them: images {cal['image_fpr']:.3g}, "
                f"pixels {cal['pixel_fpr']:.3g}"),
            "image threshold": thr["image"], "pixel threshold": thr["pixel"],
            "normal level μ": job.scorer.normal_level,
            "heatmap scale": job.scale.source if job.scale else
            "per image (--heatmap_scale image)"}
    if len(scored) > shown:
        info["shown"] = f"the {shown} highest-scored of {len(scored)} (all in scores.csv)"
    return info


def _references(job) -> tuple[Path | None, list[str]]:
    """The few-shot reference folder and files (torch: the flags; ONNX: the sidecar's)."""
    if job.cfg.onnx:
        refs = job.scorer.onnx.meta.get("references") or {}
        root = Path(refs["dir"]) if refs.get("dir") else None
        return root, list(refs.get("files") or []) if root and root.is_dir() else []
    return (Path(job.cfg.reference_dir) if job.cfg.reference_dir else None), list(job.refs)
