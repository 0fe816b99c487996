"""Thresholds from normal images alone: ``predict.py --calibration_dir DIR --target_fpr F``.

The calibration images are scored with the run's own model, mode, prompts and references. With
n values (n image scores, or the N = n * S * S pixels of their anomaly maps) and a target
false-alarm rate F, at most m = floor(F * n) of them may lie at or above the threshold (F taken
as the decimal written: 0.57 of 100 values is 57, not the 56 of float rounding). The threshold
is the (m + 1)-th largest value plus a margin of 1e-6 * max(1, |value|):

    t = v_(m+1) + 1e-6 * max(1, |v_(m+1)|),  v_(1) >= v_(2) >= ... >= v_(n)

so every value up to v_(m+1) is below t and only the at most m values strictly above v_(m+1)
can reach it: scoring the calibration images again flags at most F of them, even when another
batch size or device moves the scores by float rounding. When F < 1/n, m = 0 and t sits just
above the highest normal value: n images cannot show a false-alarm rate below 1/n.

The false-alarm rates reached on the calibration set (``image_fpr``, ``pixel_fpr``) are the
fractions of values >= t. Calibration images must not be references: a reference's own patches
are in the memory bank, so its few-shot map is near zero and it would pull the thresholds down.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from errors import ConfigError, DatasetError
from utils.io import atomic_write_json

from engine.core.thresholds import definition, effective_precision, model_name

MARGIN = 1e-6


def margin_above(v: float) -> float:
    """``v`` plus the calibration margin (1e-6, relative above 1)."""
    return float(v) + MARGIN * max(1.0, abs(float(v)))


class TopValues:
    """The ``k`` largest of a stream of arrays (memory O(k), not O(all values))."""

    def __init__(self, k: int):
        self.k, self.top, self.seen = int(k), np.empty(0, np.float64), 0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64).ravel()
        self.seen += v.size
        merged = np.concatenate([self.top, v])
        if merged.size > self.k:
            merged = np.partition(merged, merged.size - self.k)[-self.k:]
        self.top = merged


def allowed(target_fpr: float, n: int) -> int:
    """m = floor(F * n), with F the decimal it was written as: in floats 0.57 * 100 is
    56.99999999999999, which would allow 56 of 100 values where the rule allows 57."""
    return math.floor(Fraction(repr(float(target_fpr))) * int(n))


def fpr_threshold(top: TopValues, n: int, target_fpr: float) -> tuple[float, float, int]:
    """(t, reached false-alarm rate, m) for ``n`` values whose largest ``m + 1`` are in ``top``
    (``top.k`` must be at least ``allowed(F, n) + 1``)."""
    m = allowed(target_fpr, n)
    if m + 1 > top.top.size:
        raise ValueError(f"need the {m + 1} largest values, have {top.top.size}")
    v = np.sort(top.top)[::-1][m]
    t = margin_above(v)
    return t, float((top.top >= t).sum()) / n, m


def calibrate(job, files: list[str], root: Path, refs_dir: str | None, refs: list[str],
              scores_of, on_skip) -> dict:
    """Score ``files`` of ``root`` and return the thresholds dict predict.py applies.

    ``scores_of(text, map_max) -> image scores`` is the run's score definition; ``refs`` (in
    ``refs_dir``) may not appear among the calibration files.
    """
    cfg = job.cfg
    if refs_dir:
        refs_resolved = {(Path(refs_dir) / r).resolve() for r in refs}
        both = sorted(f for f in files if (root / f).resolve() in refs_resolved)
        if both:
            raise DatasetError(
                f"{len(both)} calibration image(s) in {root} are also reference images (e.g. "
                f"{both[0]}): a reference scores near zero against its own memory bank; "
                "calibrate on other normal images")
    size = job.scorer.size
    n_listed = len(files)
    pixels = TopValues(allowed(cfg.target_fpr, n_listed * size * size) + 1)
    text, mmax = [], []
    for batch in job.scorer.batches(root, files, cfg.batch_size, on_skip):
        text.extend(float(t) for t in batch["text_score"])
        mmax.extend(float(m.max()) for m in batch["maps"])
        pixels.add(batch["maps"])
    n = len(text)
    if n == 0:
        raise DatasetError(f"none of the {n_listed} files in {root} could be read as an image; "
                           "--calibration_dir needs normal images of the object")
    scores = np.asarray(scores_of(np.asarray(text), np.asarray(mmax)), np.float64)
    images = TopValues(n)
    images.add(scores)
    t_img, fpr_img, m_img = fpr_threshold(images, n, cfg.target_fpr)
    t_px, fpr_px, _ = fpr_threshold(pixels, n * size * size, cfg.target_fpr)
    note = None
    if m_img == 0:
        note = (f"{n} calibration images cannot show a false-alarm rate as low as "
                f"{cfg.target_fpr:g} (one image is 1/{n} = {1 / n:.3g}): the image threshold "
                "sits just above the highest normal score")
    block = {"dir": str(root.resolve()), "n_images": n, "target_fpr": cfg.target_fpr,
             "image_fpr": fpr_img, "pixel_fpr": fpr_px, "n_pixels": n * size * size,
             "resolution": 1.0 / n, "rule": "t = (floor(F n) + 1)-th largest value + 1e-6 "
             "max(1, |value|): at most a fraction F of the calibration values is >= t",
             "highest_normal_score": float(scores.max()), "note": note}
    return {"image": t_img, "pixel": t_px, "calibration": block,
            "source": f"calibration on {n} normal images of {root} (target false-alarm rate "
                      f"{cfg.target_fpr:g})"}


def run_definition(job) -> dict:
    """What this run's scores are (``engine.core.thresholds.definition``): the torch flags, or the
    ONNX file's sidecar."""
    cfg = job.cfg
    if cfg.onnx:
        meta = job.scorer.onnx.meta
        refs = meta.get("references") or {}
        return definition(job.mode, cfg.image_score, meta["model"]["name"], meta["image_size"],
                          meta["features_list"], meta.get("few_shot_features") or [],
                          refs.get("count"), effective_precision(cfg.precision, "cpu", onnx=True))
    return definition(job.mode, cfg.image_score, model_name(cfg.model, cfg.config_path),
                      cfg.image_size, cfg.features_list, cfg.few_shot_features, len(job.refs),
                      effective_precision(cfg.precision, job.scorer.device.type))


def calibrate_job(job, final_scores) -> dict:
    """predict.py's thresholds from the normal images of ``--calibration_dir``; logs what it
    found. ``final_scores(job, text, map_max)`` is the run's image score."""
    from datasets.folder import list_files

    cfg = job.cfg
    check_not_distributed(job.dist)
    if job.score_name == "released":
        raise ConfigError("--calibration_dir needs an image score of the image alone: the "
                          "released few-shot score is min-max normalised over each scored "
                          "folder; use --image_score per_image")
    root = Path(cfg.calibration_dir)
    files = list_files(root, False, warn=job.warn, what="calibration folder")
    if cfg.onnx:
        refs = job.scorer.onnx.meta.get("references") or {}
        ref_dir, ref_files = refs.get("dir"), list(refs.get("files") or [])
    else:
        ref_dir, ref_files = cfg.reference_dir, job.refs
    job.log.info(f"calibrating on {len(files)} normal images in {root} (target false-alarm rate "
                 f"{cfg.target_fpr:g})")
    out = calibrate(job, files, root, ref_dir, ref_files,
                    lambda text, mmax: final_scores(job, text, mmax),
                    lambda path, why: job.warn(path, f"calibration image skipped: {why}"))
    c = out["calibration"]
    if c["note"]:
        job.warn(str(root), c["note"])
    job.log.info(f"calibrated thresholds: image {out['image']:.6g} (false-alarm rate "
                 f"{c['image_fpr']:.3g} on the {c['n_images']} images), pixel {out['pixel']:.6g} "
                 f"({c['pixel_fpr']:.3g} of their pixels)")
    return out


def write_calibrated_thresholds(job) -> None:
    """thresholds.json of a calibrated run, in test.py's format plus ``source`` and
    ``calibration``; reusable with ``--thresholds`` (predict.py, export.py)."""
    thr = job.thresholds
    atomic_write_json(job.out / "thresholds.json", {
        "note": "thresholds from normal images alone: at most target_fpr of the calibration "
                "images (of their pixels) score at or above them",
        "source": "calibration", **job.definition,
        "calibration": {**thr["calibration"], **job.definition},
        "per_category": {job.cfg.object_name: {"image": thr["image"], "pixel": thr["pixel"]}}})


def check_not_distributed(dist) -> None:
    if dist.enabled:
        raise ConfigError("--calibration_dir runs in one process: calibrate once without "
                          "torchrun (it writes thresholds.json), then pass --thresholds FILE")
