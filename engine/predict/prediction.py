"""predict.py's loop: score a folder of images of one object (no labels needed), streaming.

Zero-shot by default (METHOD §4): image score = the text score, anomaly map = the stage maps.
With ``--reference_dir`` it is few-shot (METHOD §5): the memory-bank term is added to the map and
the image score is, by default, the per-image score ``0.5 * (text + clip((max map - mu) / mu,
0, 1))`` (``models.anomaly_maps.per_image_scores``: mu from the references alone, so a score
never depends on the other images); ``--image_score released`` gives the released score, with
the map maximum min-max normalised over the scored folder.

Streaming and resumable: results go to disk batch by batch (heatmaps, masks, report
thumbnails, and one line per image in ``records-r<rank>.jsonl`` of the run's staging folder),
so memory does not grow with the folder; ``--resume`` continues a killed run, skipping the
images already recorded (a kill loses at most the batches in flight). Under torchrun the files
are sharded by image across ranks; rank 0 writes scores.csv, scores.json, maps.npz and
report.html at the end, rows in the folder's sorted order whatever the number of processes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datasets.folder import heatmap_names, list_files
from datasets.transforms import open_image
from errors import DatasetError, Interrupted
from models.anomaly_maps import combined_image_scores, per_image_scores
from models.formulas import SCORE_FORMULAS
from utils.io import atomic_write_json, atomic_write_text, csv_text
from utils.npz_stream import NpzStreamWriter
from utils.visualize import ColorScale, fixed_scale, heatmap_overlay, overlay_panels, render_overlay, save_mask

from engine.config import PredictConfig
from engine.core.thresholds import check_precision, resolve_thresholds
from engine.plumbing.distributed import Dist
from engine.plumbing.result_set import check_free_space, open_records, recorded
from engine.predict.calibration import calibrate_job, run_definition, write_calibrated_thresholds
from engine.predict.predict_report import write_report
from engine.predict.regions import REGION_COLUMNS, draw_boxes, find_regions
from engine.predict.scorers import OnnxScorer, TorchScorer, reference_list
from engine.report.images import source_side


@dataclass
class PredictJob:
    cfg: PredictConfig
    out: Path  # the staging folder of the result set
    dist: Dist
    log: logging.Logger
    image_dir: Path = None
    paths: list = field(default_factory=list)
    refs: list = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    definition: dict = field(default_factory=dict)
    scorer: object = None
    scale: ColorScale | None = None
    names: dict = field(default_factory=dict)
    thumbs: object = None  # the report's thumbnail writer
    seconds: float = 0.0

    @property
    def mode(self) -> str:
        return "few_shot" if self.scorer.n_memory_stages else "zero_shot"

    @property
    def score_name(self) -> str:
        return "zero_shot" if self.mode == "zero_shot" else self.cfg.image_score

    def warn(self, path: str, why: str) -> None:
        """A warning line on stderr (also under the progress bar) and in log.txt."""
        self.log.warning(f"warning: {path}: {why}")


def settle_object_name(cfg: PredictConfig) -> None:
    """With ``--onnx`` and no ``--object_name``, the object the graph was exported for (its
    sidecar), so the log, scores.json, config.json and the report all name it."""
    if cfg.onnx and not cfg.object_name:
        from engine.deploy.onnx_sidecar import read_sidecar

        cfg.object_name = read_sidecar(cfg.onnx)["object_name"]


def fingerprint(config: dict) -> dict:
    """The settings a resumed run must share with the killed one."""
    drop = {"resume", "restart", "debug", "num_workers", "batch_size", "save_path", "no_report"}
    return {k: v for k, v in config.items() if k not in drop}


def interrupted(out: Path, cfg: PredictConfig) -> Interrupted:
    """The one line of a Ctrl-C: how many images are kept in the staging folder ``out`` and
    how to continue (``--resume``) or start over (``--restart``); images counted as
    ``recorded`` counts them."""
    n = recorded(out)
    if not n:
        return Interrupted("no image was scored yet; run the command again to start")
    return Interrupted(f"{n} scored image(s) are kept in {cfg.save_path}: rerun the same "
                       "command with --resume to continue (or with --restart to start over)")


def prepare(cfg: PredictConfig, log: logging.Logger, out: Path, dist: Dist) -> PredictJob:
    """List the files and references, read thresholds, build the scorer and the colour scale."""
    job = PredictJob(cfg, out, dist, log, Path(cfg.image_dir))
    save = Path(cfg.save_path)
    job.paths = list_files(job.image_dir, cfg.recursive, exclude=[save],
                           warn=job.warn if dist.main else None)
    if cfg.onnx:
        job.scorer = OnnxScorer(cfg, dist.device(cfg.device), log)
    else:
        job.refs = reference_list(cfg, job.warn)
        both = {(Path(cfg.reference_dir) / r).resolve() for r in job.refs} & {
            (job.image_dir / p).resolve() for p in job.paths}
        if both and dist.main:
            job.warn(str(cfg.reference_dir), f"{len(both)} reference image(s) are also scored: "
                                             "their few-shot maps are near zero")
        job.scorer = TorchScorer(cfg, dist.device(cfg.device), job.refs, log)
    settle_thresholds(job)
    job.names = heatmap_names(job.paths)
    per_image = (0 if cfg.no_heatmaps else 200_000) + (0 if cfg.no_report else 8_000) + (
        4 * job.scorer.size ** 2 if cfg.save_maps else 0)
    check_free_space(out, len(job.paths) * per_image, "the heatmaps, report and maps")
    if dist.main:
        log.info(f"{job.mode} on {len(job.paths)} files of {cfg.object_name!r} in "
                 f"{job.image_dir}" + (f", memory bank of {len(job.refs)} reference images"
                                       if job.refs else "")
                 + (f", {dist.world} processes" if dist.enabled else "")
                 + (f"; heatmaps on one scale: {job.scale.source}" if job.scale else ""))
    return job


def settle_thresholds(job: PredictJob) -> None:
    """The score definition, thresholds and colour scale of a job whose scorer is built
    (predict.py, and serve.py per object): calibrated (``--calibration_dir``), else from
    ``--thresholds`` and the flags, then an export's sidecar for what neither set."""
    cfg = job.cfg
    job.definition = run_definition(job)
    if cfg.calibration_dir:
        job.thresholds = calibrate_job(job, final_scores)
    else:
        job.thresholds = resolve_thresholds(cfg, job.definition, job.warn)
    if cfg.onnx and job.scorer.onnx.thresholds:  # the sidecar's fill what no flag or file set
        t, filled = job.scorer.onnx.thresholds, []
        for key in ("image", "pixel"):
            if job.thresholds[key] is None and t.get(key) is not None:
                job.thresholds[key] = t[key]
                filled.append(key)
        if filled:
            check_precision(t.get("precision"), job.definition["precision"],
                            f"{cfg.onnx} (sidecar thresholds)", job.warn)
            own = job.thresholds["source"]
            job.thresholds["source"] = f"{cfg.onnx} (sidecar)" if own is None else \
                f"{own}; {' and '.join(filled)} from {cfg.onnx} (sidecar)"
    if cfg.heatmap_scale == "auto":
        job.scale = fixed_scale(job.scorer.n_stages, job.scorer.n_memory_stages,
                                job.thresholds["pixel"], job.scorer.normal_level)


# --------------------------------------------------------------------------- streaming
def _records(out: Path) -> dict[str, dict]:
    """Every image already recorded in ``out`` (any rank, any earlier attempt), by path."""
    done: dict[str, dict] = {}
    for f in sorted(out.glob("records-r*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            done[rec["path"]] = rec
    return done


def _todo(paths: list[str], dist, batch_size: int, done: dict) -> list[str]:
    """This rank's files still to score, as whole batches of a one-process run.

    The rank's batches are ``dist.batch_shard``'s; a batch with any file not yet recorded is
    scored again in full (its recorded files are written again, the same values), so every
    image goes through the model in the batch that one uninterrupted process gives it.
    """
    mine = dist.batch_shard(len(paths), batch_size)
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    return [paths[i] for b in batches if any(paths[i] not in done for i in b) for i in b]


def run(job: PredictJob) -> None:
    """Score this rank's shard of the not yet recorded files, writing as it goes."""
    cfg, t0 = job.cfg, time.time()
    done = _records(job.out) if cfg.resume else {}
    todo = _todo(job.paths, job.dist, cfg.batch_size, done)
    if done and job.dist.main:
        job.log.info(f"resuming: {len(done)} files already scored, {len(todo)} left on this rank")
    from engine.core.inference import progress
    bar = progress(len(todo), cfg.object_name)
    sink = open_records(job.out / f"records-r{job.dist.rank}.jsonl")
    part = [0]
    pending: list[dict] = []

    def skip(path: str, why: str) -> None:
        bar.update(1)
        job.warn(path, f"skipped: {why}")
        pending.append({"path": path, "error": why})

    try:
        for batch in job.scorer.batches(job.image_dir, todo, cfg.batch_size, skip):
            maps = batch["maps"]
            if cfg.save_maps:
                name = f"r{job.dist.rank}-{time.time_ns()}-{part[0]:06d}.npy"
                (job.out / "maps_parts").mkdir(exist_ok=True)
                np.save(job.out / "maps_parts" / name, maps.astype(cfg.maps_dtype))
                part[0] += 1
            for j, (rel, text, m) in enumerate(zip(batch["path"], batch["text_score"], maps)):
                rec = {"path": rel, "text_score": float(text), "map_max": float(m.max())}
                rec.update(image_files(job, rel, m))
                if cfg.save_maps:
                    rec["maps"] = [name, j]
                pending.append(rec)
            _flush(sink, pending)
            bar.update(len(batch["path"]))
        _flush(sink, pending)
    finally:
        sink.close()
        bar.close()
    job.seconds = time.time() - t0


def _flush(sink, pending: list[dict]) -> None:
    """Append the records of the files just finished, durably (a kill keeps them)."""
    if pending:
        sink.write("".join(json.dumps(r) + "\n" for r in pending))
        sink.flush()
        os.fsync(sink.fileno())
        pending.clear()


def image_files(job: PredictJob, rel: str, m: np.ndarray) -> dict:
    """Heatmap, mask (with a pixel threshold) and report thumbnail of one image."""
    cfg, thr, out, name = job.cfg, job.thresholds, {}, job.names[rel]
    if cfg.no_heatmaps and thr["pixel"] is None and cfg.no_report:
        return out
    img = open_image(job.image_dir / rel)
    pred, regions = None, None
    if thr["pixel"] is not None:
        full = cv2.resize(m, img.size, interpolation=cv2.INTER_LINEAR)  # [H, W]
        mask, regions = find_regions(full, thr["pixel"], cfg.min_region_area)
        pred = mask if job.scale is not None else m >= thr["pixel"]
        save_mask(job.out / "masks" / name, mask)
        out["mask"], out["regions"] = f"masks/{name}", regions
    if not cfg.no_heatmaps:
        target = job.out / "heatmaps" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay_panels(img, m, pred, job.scale, cfg.heatmap_max_side,
                                       "predicted mask")).save(target)
        out["heatmap"] = f"heatmaps/{name}"
    if not cfg.no_report:
        if job.scale is None:
            s = m.shape[0]
            rgb, over = np.asarray(img.convert("RGB").resize((s, s))), heatmap_overlay(img, m)
        else:
            # drawn large enough that the report's panel never enlarges it (a 4000x100
            # strip keeps its short side legible)
            side = max(256, source_side(img.size, _report(job).panel_px))
            rgb, over = render_overlay(img, m, job.scale, max_side=side)
        if regions:
            over = draw_boxes(over, regions, img.size)
        out["thumb"] = _thumb(job, rel, rgb, over)
    return out


def _report(job: PredictJob):
    """The report's thumbnail writer (made at the first image)."""
    if job.thumbs is None:
        from engine.report import PredictReport
        job.thumbs = PredictReport(job.out, "", {}, fresh=False)
    return job.thumbs


def _thumb(job: PredictJob, rel: str, rgb: np.ndarray, over: np.ndarray) -> dict:
    """The report row of one image (its thumbnail written now; its score set at the end)."""
    _report(job)
    key = hashlib.sha1(rel.encode()).hexdigest()[:16]
    return job.thumbs.add(rel, 0.0, rgb, over, None, name=key)


# --------------------------------------------------------------------------- the result files
def finish(job: PredictJob, config_text: str) -> dict:
    """Rank 0: scores.csv, scores.json, maps.npz, report.html and config.json from the records."""
    cfg, thr = job.cfg, job.thresholds
    recs = _records(job.out)
    order = [p for p in job.paths if p in recs]
    scored = [recs[p] for p in order if "error" not in recs[p]]
    skipped = [{"path": recs[p]["path"], "error": recs[p]["error"]} for p in order
               if "error" in recs[p]]
    if not scored:
        raise DatasetError(f"none of the {len(job.paths)} files in {job.image_dir} could be read "
                           "as an image")
    text = np.array([r["text_score"] for r in scored], dtype=np.float64)
    mmax = np.array([r["map_max"] for r in scored], dtype=np.float64)
    score = final_scores(job, text, mmax)
    rows = [["path", "score"] + (["anomalous"] if thr["image"] is not None else [])]
    region_rows = [["path", *REGION_COLUMNS]]
    images = []
    for r, s in zip(scored, score):
        rec = {"path": r["path"], "score": float(s), "text_score": r["text_score"],
               "map_max": r["map_max"]}
        row = [r["path"], f"{s:.6f}"]
        if thr["image"] is not None:
            rec["anomalous"] = bool(s >= thr["image"])
            row.append(int(rec["anomalous"]))
        rec.update({k: r[k] for k in ("heatmap", "mask", "regions") if k in r})
        images.append(rec)
        rows.append(row)
        region_rows += [[r["path"], *(_cell(g[c]) for c in REGION_COLUMNS)]
                        for g in r.get("regions", [])]
    result = {
        "object_name": cfg.object_name, "mode": job.mode, "image_dir": str(job.image_dir.resolve()),
        "score": SCORE_FORMULAS[job.score_name], "image_score": job.score_name,
        "normal_level": job.scorer.normal_level, "references": job.refs,
        "reference_dir": str(Path(cfg.reference_dir).resolve()) if cfg.reference_dir else None,
        "thresholds": thr, "heatmap_scale": job.scale.__dict__ if job.scale else "per image",
        "n_files": len(job.paths), "n_scored": len(scored), "skipped": skipped, "images": images,
    }
    if cfg.calibration_dir:
        write_calibrated_thresholds(job)  # thresholds.json, reusable with --thresholds
    atomic_write_text(job.out / "scores.csv", csv_text(rows))
    if thr["pixel"] is not None:
        atomic_write_text(job.out / "regions.csv", csv_text(region_rows))
    atomic_write_json(job.out / "scores.json", result)
    if cfg.save_maps:
        _write_maps(job, scored)
    if not cfg.no_report:
        write_report(job, scored, score, skipped)
    atomic_write_text(job.out / "config.json", config_text)
    for f in job.out.glob("records-r*.jsonl"):
        f.unlink()
    n_bad = sum(r.get("anomalous", False) for r in images)
    job.log.info(
        f"scored {len(scored)} of {len(job.paths)} files in {job.seconds:.1f} s"
        + (f", {n_bad} above the image threshold {thr['image']:.4g}"
           if thr["image"] is not None else " (no image threshold: no labels)")
        + (f"; skipped {len(skipped)} that are not readable images" if skipped else "")
        + f". Results in {cfg.save_path}")
    return result


def _cell(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def final_scores(job: PredictJob, text: np.ndarray, mmax: np.ndarray) -> np.ndarray:
    if job.score_name == "zero_shot":
        return text
    if job.score_name == "per_image":
        return per_image_scores(text, mmax, job.scorer.normal_level)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = combined_image_scores(text, mmax)
    for w in caught:
        job.warn(str(job.image_dir), f"{w.message} (released few-shot scores are min-max "
                                     "normalised over the scored folder; score more images at "
                                     "once, or use --image_score per_image)")
    return score


def _write_maps(job: PredictJob, scored: list[dict]) -> None:
    """maps.npz [N, S, S] in the folder's order, from the per-batch parts (then removed)."""
    parts = job.out / "maps_parts"
    s = job.scorer.size
    w = NpzStreamWriter(job.out / "maps.npz")
    try:
        w.begin("anomaly_maps", (len(scored), s, s), np.dtype(job.cfg.maps_dtype))
        cache: dict[str, np.ndarray] = {}
        for r in scored:
            name, j = r["maps"]
            if name not in cache:
                cache.clear()
                cache[name] = np.load(parts / name, mmap_mode="r")
            w.write(np.asarray(cache[name][j:j + 1]))
        cache.clear()
        w.add("paths", np.array([r["path"] for r in scored]))
        w.close()
    except BaseException:
        w.abort()
        raise
    for f in parts.glob("*.npy"):
        f.unlink()
    parts.rmdir()
