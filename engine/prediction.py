"""predict.py's loop: score a folder of images of one object (no labels needed).

Zero-shot by default (SPEC §4): image score = the text score, anomaly map = sum of the stage maps.
With a reference folder it is few-shot (SPEC §5): the memory-bank term is added to the map, and
the image score is 0.5 * (text score + s) with s = max(map) min-max normalised over the *scored
folder*, as the released code normalises over a category's test set.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from datasets.folder import heatmap_names, list_files, readable_batches, readable_images
from datasets.transforms import open_image
from errors import DatasetError
from models.anomaly_maps import combined_image_scores
from models.april_gan import AprilGAN
from prompts import TextFeatureBank, load_prompts
from utils.io import atomic_savez, atomic_write_json, atomic_write_text, csv_text, read_json
from utils.visualize import save_mask, save_overlay

from .config import PredictConfig
from .inference import build_bank, full_maps, progress, reference_tokens, run_category
from .loading import build_model, load_projections, resolve_device, trained_with

CHUNK = 256  # images per inference call: bounds host memory on large folders


@dataclass
class PredictJob:
    cfg: PredictConfig
    image_dir: Path
    save: Path
    paths: list[str]
    refs: list[str]
    thresholds: dict
    model: AprilGAN
    text: object
    banks: list
    device: object
    workers: int
    log: logging.Logger
    skipped: list

    @property
    def mode(self) -> str:
        return "few_shot" if self.refs else "zero_shot"

    def warn(self, path: str, why: str) -> None:
        """A warning line on stderr (also under the progress bar) and in log.txt."""
        self.log.warning(f"warning: {path}: {why}")

    def skip(self, path: str, why: str) -> None:
        self.skipped.append((path, why))
        self.warn(path, f"skipped: {why}")


def resolve_thresholds(cfg: PredictConfig, mode: str, warn) -> dict:
    """{"image": t | None, "pixel": t | None, "source": str} from the file and the flags."""
    out: dict = {"image": None, "pixel": None, "source": None}
    if cfg.thresholds:
        path = Path(cfg.thresholds)
        data = read_json(path, "thresholds file", hint="write it with test.py")
        table = data.get("per_category")
        if not isinstance(table, dict):
            raise DatasetError(f"{path} has no 'per_category' table (write it with test.py)")
        cat = cfg.threshold_category or cfg.object_name
        if cat not in table:
            raise DatasetError(f"{path} has no thresholds for {cat!r} (it has: "
                               f"{', '.join(table) or 'none'}); pass --threshold_category")
        for key in ("image", "pixel"):
            v = table[cat].get(key) if isinstance(table[cat], dict) else None
            try:
                ok = v is not None and math.isfinite(float(v))
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{path}: the {key} threshold of {cat!r} is not a number: "
                                   f"{v!r}") from e
            if ok:
                out[key] = float(v)
            else:
                warn(str(path), f"no finite {key} threshold for {cat!r}; not used")
        out["source"] = f"{path.resolve()} [{cat}]"
        if data.get("mode") and data["mode"] != mode:
            warn(str(path), f"thresholds come from a {data['mode']} run but this is {mode}: "
                            "scores are on a different scale, labels may be off")
    if cfg.image_threshold is not None:
        out["image"], out["source"] = cfg.image_threshold, out["source"] or "command line"
    if cfg.pixel_threshold is not None:
        out["pixel"], out["source"] = cfg.pixel_threshold, out["source"] or "command line"
    return out


def prepare(cfg: PredictConfig, log: logging.Logger) -> PredictJob:
    """List the files and references, read thresholds and prompts, build the model and banks."""
    image_dir, save = Path(cfg.image_dir), Path(cfg.save_path)
    job = PredictJob(cfg, image_dir, save, [], [], {}, None, None, [], None, 0, log, [])
    job.paths = list_files(image_dir, cfg.recursive, exclude=[save], warn=job.warn)
    if cfg.reference_dir:
        ref_dir = Path(cfg.reference_dir)
        listed = list_files(ref_dir, cfg.reference_recursive, warn=job.warn,
                            what="reference folder")
        job.refs = readable_images(ref_dir, listed, lambda p, e: job.warn(
            p, f"reference skipped: {e}"))
        both = {(ref_dir / r).resolve() for r in job.refs} & {(image_dir / p).resolve()
                                                               for p in job.paths}
        if both:
            job.warn(str(ref_dir), f"{len(both)} reference image(s) are also scored: their "
                                   "few-shot maps are near zero, which lowers the other images' "
                                   "normalisation")
    job.thresholds = resolve_thresholds(cfg, job.mode, job.warn)
    prompts = load_prompts(cfg.prompt_dir, [cfg.object_name])
    job.device = resolve_device(cfg.device)
    job.workers = cfg.num_workers if cfg.num_workers is not None else (
        4 if job.device.type == "cuda" else 0)
    job.model, tokenizer = build_model(cfg.model, cfg.pretrained, cfg.image_size,
                                       cfg.features_list, cfg.few_shot_features if job.refs else (),
                                       cfg.config_path, job.device)
    load_projections(job.model.projections, cfg.checkpoint_path, trained_with(cfg))
    job.model.eval()
    job.text = TextFeatureBank(job.model.backbone.encode_text, tokenizer, prompts,
                               job.device)(cfg.object_name)
    log.info(f"{job.mode} on {len(job.paths)} files of {cfg.object_name!r} in {image_dir}"
             + (f", memory bank of {len(job.refs)} reference images" if job.refs else ""))
    if job.refs:
        tokens = reference_tokens(job.model, Path(cfg.reference_dir), job.refs, cfg.batch_size,
                                  job.workers, job.device)
        job.banks = [build_bank(job.model, cfg.object_name, job.refs, tokens)]
    return job


def run(job: PredictJob) -> dict:
    """Score every readable file; heatmaps and masks are written as they are made."""
    cfg, size, thr = job.cfg, job.cfg.image_size, job.thresholds
    t0 = time.time()
    done, text_score, map_max, maps_out = [], [], [], []
    names = heatmap_names(job.paths)
    written: dict[str, dict] = {}
    bar = progress(len(job.paths), cfg.object_name)
    for a in range(0, len(job.paths), CHUNK):
        batches = readable_batches(job.image_dir, job.paths[a:a + CHUNK], size, cfg.batch_size,
                                   job.workers, lambda p, e: (bar.update(1), job.skip(p, e)))
        first = next(batches, None)
        if first is None:  # nothing readable in this chunk
            continue
        res = run_category(job.model, itertools.chain([first], batches), job.text, job.banks,
                           job.device, bar.update)
        done += res["paths"]
        text_score.append(res["text_score"])
        i = 0
        for maps in full_maps(res["logits"], res["distances"][0] if job.banks else None, size):
            map_max.append(maps.max(axis=(1, 2)).astype(np.float64))
            if cfg.save_maps:
                maps_out.append(maps.astype(cfg.maps_dtype))
            for m in maps:
                rel = res["paths"][i]
                i += 1
                written[rel] = _image_files(job, rel, m, names[rel])
        del res
    bar.close()
    if not done:
        raise DatasetError(f"none of the {len(job.paths)} files in {job.image_dir} could be read "
                           "as an image")
    return {"done": done, "text_score": np.concatenate(text_score),
            "map_max": np.concatenate(map_max), "written": written, "seconds": time.time() - t0,
            "maps": np.concatenate(maps_out) if maps_out else None}


def _image_files(job: PredictJob, rel: str, m: np.ndarray, name: str) -> dict:
    """Heatmap overlay and (with a pixel threshold) mask of one image; returns their paths."""
    cfg, thr, out = job.cfg, job.thresholds, {}
    if cfg.no_heatmaps and thr["pixel"] is None:
        return out
    img = open_image(job.image_dir / rel)
    pred = None
    if thr["pixel"] is not None:
        pred = m >= thr["pixel"]
        full = cv2.resize(m, img.size, interpolation=cv2.INTER_LINEAR)  # [H, W]
        save_mask(job.save / "masks" / name, full >= thr["pixel"])
        out["mask"] = f"masks/{name}"
    if not cfg.no_heatmaps:
        save_overlay(job.save / "heatmaps" / name, img, m, pred)
        out["heatmap"] = f"heatmaps/{name}"
    return out


def write(job: PredictJob, res: dict, config_text: str) -> dict:
    """scores.csv, scores.json, maps.npz (with --save_maps) and config.json."""
    cfg, thr = job.cfg, job.thresholds
    tscore, mmax = res["text_score"], res["map_max"]
    score = tscore
    if job.banks:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = combined_image_scores(tscore, mmax)
        for w in caught:
            job.warn(str(job.image_dir), f"{w.message} (few-shot scores are min-max normalised "
                                         "over the scored folder; score more images at once)")
    rows, images = [["path", "score"] + (["anomalous"] if thr["image"] is not None else [])], []
    for rel, s, t, mx in zip(res["done"], score, tscore, mmax):
        rec = {"path": rel, "score": float(s), "text_score": float(t), "map_max": float(mx)}
        row = [rel, f"{s:.6f}"]
        if thr["image"] is not None:
            rec["anomalous"] = bool(s >= thr["image"])
            row.append(int(rec["anomalous"]))
        rec.update(res["written"].get(rel, {}))
        images.append(rec)
        rows.append(row)
    result = {
        "object_name": cfg.object_name, "mode": job.mode, "image_dir": str(job.image_dir.resolve()),
        "score": ("0.5 * (text_score + min-max over this folder of map_max)" if job.banks
                  else "text_score: softmax(100 * image embedding . text features)[1]"),
        "references": job.refs,
        "reference_dir": str(Path(cfg.reference_dir).resolve()) if cfg.reference_dir else None,
        "thresholds": thr, "n_files": len(job.paths), "n_scored": len(res["done"]),
        "skipped": [{"path": p, "error": e} for p, e in job.skipped], "images": images,
    }
    atomic_write_text(job.save / "scores.csv", csv_text(rows))
    atomic_write_json(job.save / "scores.json", result)
    if res["maps"] is not None:
        atomic_savez(job.save / "maps.npz", paths=np.array(res["done"]), anomaly_maps=res["maps"])
    atomic_write_text(job.save / "config.json", config_text)
    n_bad = sum(r.get("anomalous", False) for r in images)
    job.log.info(
        f"scored {len(res['done'])} of {len(job.paths)} files in {res['seconds']:.1f} s"
        + (f", {n_bad} above the image threshold {thr['image']:.4g}"
           if thr["image"] is not None else " (no image threshold: no labels)")
        + (f"; skipped {len(job.skipped)} that are not readable images" if job.skipped else "")
        + f". Results in {job.save}")
    return result
