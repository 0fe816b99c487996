"""Synthetic evaluation and prediction runs for the report tests: seeded images, masks and maps
drawn with numpy, metrics and curves from :func:`metrics.category_metrics_and_curves`, and
metrics.json written by :func:`engine.evaluate.results.write_metrics` (what test.py writes)."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metrics import category_metrics_and_curves

from engine.evaluate.results import write_metrics
from engine.report import EvalReport, GalleryItem, PredictReport, select_gallery


def picture(seed: int, size: int = 96, defect: np.ndarray | None = None) -> np.ndarray:
    """A smooth seeded RGB picture (gradients and a texture), with ``defect`` [H, W] painted red."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = r.uniform(0, 6)
    img = np.stack([110 + 90 * xx, 90 + 70 * yy, 130 + 50 * np.sin(7 * xx + 4 * yy + phase)], -1)
    img = img + r.normal(0, 5, img.shape)
    if defect is not None:
        img[np.kron(defect, np.ones((size // defect.shape[0],) * 2)) > 0] = (210, 40, 40)
    return img.clip(0, 255).astype(np.uint8)


def overlay(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """A red-yellow heatmap of ``amap`` (scaled to [0, 1]) blended over ``image``."""
    a = np.kron(amap, np.ones((image.shape[0] // amap.shape[0],) * 2))
    a = (a - a.min()) / (np.ptp(a) or 1)
    heat = np.stack([255 * np.ones_like(a), 255 * a, np.zeros_like(a)], -1)
    return (0.5 * image + 0.5 * heat).astype(np.uint8)


@dataclass
class Category:
    name: str
    scores: np.ndarray
    labels: np.ndarray
    paths: list[str]
    values: dict
    curves: dict
    references: list[str] = field(default_factory=list)


@dataclass
class Run:
    out: Path
    report: Path
    metrics: dict  # metrics.json as read back
    categories: dict[str, Category]


def make_category(rng: np.random.Generator, name: str, n: int, one_class: bool,
                  size: int = 32) -> tuple[Category, np.ndarray, np.ndarray]:
    """Labels, scores (with ties among the normal images), masks and maps of one category."""
    halves = np.r_[np.zeros(n // 2), np.ones(n - n // 2)]
    labels = np.zeros(n, int) if one_class else rng.permutation(halves).astype(int)
    scores = np.round(rng.random(n) + 0.5 * labels, 2)
    normal = np.flatnonzero(labels == 0)
    scores[normal[:3]] = scores[normal[0]]  # ties: the order must fall back on the index
    masks = np.zeros((n, size, size), np.uint8)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(2, size - 12, 2)
        masks[i, y:y + rng.integers(4, 10), x:x + rng.integers(4, 10)] = 1
    maps = (0.6 * rng.random((n, size, size)) + 0.5 * masks).astype(np.float32)
    paths = [f"{name}/test/{'bad' if y else 'good'}/{i:03d}.png" for i, y in enumerate(labels)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one-class: NaN metrics, by design
        values, curves = category_metrics_and_curves(masks, maps, labels, scores)
    return Category(name, scores, labels, paths, values, curves), masks, maps


def eval_run(out: Path, categories=("bottle", "metal_nut"), n: int = 24, seed: int = 0,
             k_shot: int | None = None, one_class: tuple[str, ...] = (), gallery_n: int = 4) -> Run:
    """Build a synthetic run's report in ``out`` (metrics.json beside it); return what it used."""
    rng = np.random.default_rng(seed)
    info = {"mode": "few_shot" if k_shot else "zero_shot", "dataset": "mvtec",
            "model": "ViT-B-16 (random weights)", "image_size": 96, "k_shot": k_shot,
            "seed": seed if k_shot else None, "checkpoint": "exps/none.pth"}
    rep = EvalReport(out, f"mvtec {info['mode']} (synthetic)", info)
    cats, per_cat = {}, {}
    for ci, name in enumerate(categories):
        c, masks, maps = make_category(rng, name, n, name in one_class)
        picks = select_gallery(c.scores, c.labels, c.values["threshold_sp"], n=gallery_n)
        gallery = {kind: [GalleryItem(c.paths[i], float(c.scores[i]),
                                      picture(100 * ci + i, defect=masks[i] if c.labels[i] else None),
                                      overlay(picture(100 * ci + i), maps[i]),
                                      masks[i] if c.labels[i] else None) for i in idx]
                   for kind, idx in picks.items()}
        refs = [f"{name}/train/good/{j:03d}.png" for j in range(k_shot or 0)]
        c.references = refs
        rep.add_category(name, c.curves, c.scores, c.labels, c.paths, c.values["threshold_sp"],
                         c.values["threshold_px"], gallery, references=refs or None,
                         reference_thumbs=[picture(999 + j) for j in range(len(refs))] or None)
        cats[name], per_cat[name] = c, c.values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean over a NaN category
        write_metrics(out, per_cat, {"mode": info["mode"], "dataset": "mvtec"}, echo=False)
    metrics = json.loads((out / "metrics.json").read_text())
    return Run(out, rep.finish(metrics), metrics, cats)


def predict_run(out: Path, n: int, threshold: float | None, seed: int = 0,
                skipped: list[dict] | None = None, size: int = 96) -> tuple[Path, list[tuple[str, float]]]:
    """A synthetic predict report of ``n`` images added in random score order; returns the page
    and the ``(path, score)`` pairs."""
    rng = np.random.default_rng(seed)
    pics = [picture(seed * 1000 + j, size) for j in range(8)]
    rep = PredictReport(out, "predict (synthetic)", {"model": "ViT-B-16", "image_threshold": threshold})
    added = []
    for i in range(n):
        score = float(np.round(rng.random(), 3))
        path = f"images/img_{i:04d}.png"
        rep.add(path, score, pics[i % 8], pics[(i + 3) % 8],
                None if threshold is None else score >= threshold)
        added.append((path, score))
    return rep.finish(threshold, skipped or []), added
