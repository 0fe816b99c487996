"""``report.html`` of one evaluation run (issue 17): the metric table, per-category curves,
score histograms, galleries of the interesting images and, in few-shot, the references.

The engine calls, per run::

    rep = EvalReport(run_dir, "mvtec zero_shot", {"mode": ..., "dataset": ..., "model": ...})
    for each category:
        values, curves = metrics.category_metrics_and_curves(gt_px, maps, labels, scores)
        picks = select_gallery(scores, labels, values["threshold_sp"])   # which images to draw
        gallery = {kind: [GalleryItem(paths[i], scores[i], image_i, overlay_i, gt_i) for i in idx]
                   for kind, idx in picks.items()}
        rep.add_category(cat, curves, scores, labels, paths, values["threshold_sp"],
                         values["threshold_px"], gallery)
    rep.finish(metrics_json_dict)

``add_category`` writes its plots and thumbnails at once (into ``run_dir/report_files/``) and
keeps only numbers and file names, so no image stays in memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metrics import METRIC_KEYS
from utils.io import atomic_write_text, csv_text

from .common import FILES_DIR, REPORT_NAME, fresh_files_dir, info_rows, is_number, num, pct, render_page, slug, sortkey
from .images import JPEG_QUALITY, as_rgb, fit, mask_panel, save_jpeg, save_row
from .plots import f1_of, plot_category

__all__ = ["EvalReport", "GALLERY_KINDS", "GalleryItem", "select_gallery"]

# gallery key -> (heading, what it shows); the keys select_gallery returns, in page order
GALLERY_KINDS: dict[str, tuple[str, str]] = {
    "false_positives": ("Worst false positives",
                        "normal images with the highest scores (above the threshold or not)"),
    "false_negatives": ("Worst false negatives",
                        "anomalous images below the image threshold, lowest score first"),
    "best_detections": ("Best detections",
                        "anomalous images at or above the image threshold, highest score first"),
}
# what an empty gallery says, with and without an image threshold
EMPTY = {"false_negatives": ("none: every anomalous image scores at or above the image threshold",
                             "none: the image threshold is undefined, so no false negatives"),
         "best_detections": ("none: no anomalous image reaches the image threshold",
                             "none: no anomalous image")}


@dataclass(frozen=True)
class GalleryItem:
    """One image of a gallery, as the engine drew it.

    Attributes:
        path: the image's path relative to the data root (shown as the caption).
        score: its image score.
        image: ``[H, W, 3]`` uint8 RGB, as the model saw it (or the original).
        overlay: ``[H, W, 3]`` uint8 RGB heatmap overlay on the run's fixed colour scale.
        gt: ``[H, W]`` bool/uint8 ground-truth mask, or ``None`` (shown as a grey panel).
    """

    path: str
    score: float
    image: np.ndarray
    overlay: np.ndarray
    gt: np.ndarray | None = None


def _order(scores: np.ndarray, candidates: np.ndarray, descending: bool) -> np.ndarray:
    """``candidates`` (indices) sorted by score, ties by ascending index."""
    s = scores[candidates]
    return candidates[np.lexsort((candidates, -s if descending else s))]


def select_gallery(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                   n: int = 6) -> dict[str, list[int]]:
    """The indices of the images worth drawing, by image score.

    Args:
        scores: ``[N]`` image scores.
        labels: ``[N]`` 0 (normal) / 1 (anomalous).
        threshold: the image threshold (an image is flagged at ``score >= threshold``); ``None``
            or NaN where it is undefined (one class).
        n: at most this many per gallery.

    Returns:
        ``{"false_positives": the n highest-scored normal images (descending, above the
        threshold or not), "false_negatives": the n lowest-scored anomalous images below the
        threshold (ascending; none without a threshold), "best_detections": the n
        highest-scored anomalous images at or above it (descending; without a threshold, the
        highest-scored anomalous images)}``; ties go to the lower index. The last two never
        share an image.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must have the same length")
    normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
    if is_number(threshold):
        flagged = s[anomalous] >= float(threshold)
        missed, hit = anomalous[~flagged], anomalous[flagged]
    else:
        missed, hit = anomalous[:0], anomalous
    return {
        "false_positives": _order(s, normal, True)[:n].tolist(),
        "false_negatives": _order(s, missed, False)[:n].tolist(),
        "best_detections": _order(s, hit, True)[:n].tolist(),
    }


ANOMALOUS_KIND = {"false_positives": False, "false_negatives": True, "best_detections": True}


def _verdict(score: float, thr: float, anomalous: bool | None) -> dict[str, Any]:
    """The badge of a gallery image: flagged or passed at the threshold, coloured right/wrong
    when the gallery's label is known (``verdict`` ``None`` without a threshold)."""
    if math.isnan(thr):
        return {"verdict": None, "cls": "same"}
    flagged = score >= thr
    cls = "same" if anomalous is None else ("better" if flagged == anomalous else "worse")
    return {"verdict": "flagged, ≥ threshold" if flagged else "passed, < threshold", "cls": cls}


LEVEL_KEYS = {"image": ("auroc_sp", "f1_sp", "ap_sp"), "pixel": ("auroc_px", "f1_px", "ap_px", "pro")}
ONE_CLASS = "only one class is present"  # why, where metrics.json gives no reason


def _why(reasons: list[str]) -> str:
    """The distinct ``reasons`` (metrics.json's ``undefined`` values) joined, in order;
    :data:`ONE_CLASS` when there are none."""
    return "; ".join(dict.fromkeys(str(r) for r in reasons)) or ONE_CLASS


def _level(c: dict | None) -> dict[str, Any]:
    """The F1-max point of one level's curves for the page (``defined`` False for one class)."""
    if c is None:
        return {"defined": False}
    r, p, t = c["f1_point"]
    return {"defined": True, "recall": r, "precision": p, "threshold": t, "f1": f1_of(c)}


class EvalReport:
    """Builds ``out_dir/report.html`` for one evaluation run, one category at a time.

    Args:
        out_dir: the run's folder; the page goes to ``out_dir/report.html``, its pictures to
            ``out_dir/report_files/`` (emptied first).
        title: the page title.
        info: run facts shown in the header (mode, dataset, k_shot, seed, model, image size,
            checkpoint, ...); ``None`` values are left out.
        panel_px: the long side of each gallery panel (image, overlay, ground truth).
        quality: JPEG quality of the thumbnails.
    """

    def __init__(self, out_dir: Path, title: str, info: dict[str, Any], *, panel_px: int = 192,
                 quality: int = JPEG_QUALITY) -> None:
        self.out_dir = Path(out_dir)
        self.title = title
        self.info = dict(info)
        self.panel_px = panel_px
        self.quality = quality
        self.files = fresh_files_dir(self.out_dir)
        self.categories: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        """Where :meth:`finish` writes the page."""
        return self.out_dir / REPORT_NAME

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def add_category(self, name: str, curves: dict[str, dict | None] | None, scores: np.ndarray,
                     labels: np.ndarray, paths: list[str], image_threshold: float | None,
                     pixel_threshold: float | None, gallery: dict[str, list[GalleryItem]],
                     references: list[str] | None = None,
                     reference_thumbs: list[np.ndarray] | None = None) -> None:
        """Write one category's plots, thumbnails and score list; keep only small records.

        Writes under ``report_files/<NN_name>/``: ``plots.png`` (image/pixel ROC and PR with the
        F1-max points; the image-score histogram, normal vs anomalous, with the threshold),
        ``scores.csv`` (path, label, score of every image), one JPEG row per gallery item
        (``<kind>_<i>.jpg``: image | overlay | ground truth) and per reference (``ref_<i>.jpg``).

        Args:
            name: the category.
            curves: ``category_metrics_and_curves(...)[1]``: ``{"pixel": c, "image": c}``,
                ``c`` ``None`` for a one-class level (the page says "undefined").
            scores, labels: ``[N]`` image scores and 0/1 labels of the category's test images.
            paths: ``N`` image paths (relative to the data root), in the same order.
            image_threshold, pixel_threshold: the F1-max thresholds (NaN/None: undefined).
            gallery: ``{kind: [GalleryItem, ...]}``, kinds as :func:`select_gallery` returns.
            references: few-shot reference image paths.
            reference_thumbs: their pictures, ``[H, W, 3]`` uint8 each (same order).
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        y = (np.asarray(labels).reshape(-1) != 0)
        if not s.shape == y.shape == (len(paths),):
            raise ValueError(f"{name}: {s.size} scores, {y.size} labels and {len(paths)} paths "
                             "must have the same length")
        key = slug(name, len(self.categories))
        folder = self.files / key
        folder.mkdir(parents=True, exist_ok=True)
        plot_w, plot_h = plot_category(curves, s, y, image_threshold, folder / "plots.png")
        atomic_write_text(folder / "scores.csv", csv_text(
            [["path", "label", "score"]] + [[p, int(a), repr(float(v))]
                                            for p, a, v in zip(paths, y, s, strict=True)]))
        thr = float(image_threshold) if is_number(image_threshold) else math.nan
        kinds = list(GALLERY_KINDS) + [k for k in gallery if k not in GALLERY_KINDS]
        galleries = []
        for kind in kinds:
            items = gallery.get(kind)
            if items is None:
                continue
            heading, what = GALLERY_KINDS.get(kind, (kind.replace("_", " ").capitalize(), ""))
            rows = []
            for j, it in enumerate(items):
                image = as_rgb(it.image, "GalleryItem.image")
                overlay = as_rgb(it.overlay, "GalleryItem.overlay")
                file = folder / f"{kind}_{j}.jpg"
                w, h = save_row(file, [image, overlay, mask_panel(it.gt, image)], self.panel_px,
                                self.quality)
                rows.append({"src": self._rel(file), "w": w, "h": h, "path": it.path,
                             "score": num(float(it.score), 4), "has_gt": it.gt is not None,
                             **_verdict(float(it.score), thr, ANOMALOUS_KIND.get(kind))})
            empty = EMPTY.get(kind, ("none", "none"))[math.isnan(thr)]
            galleries.append({"kind": kind, "heading": heading, "what": what, "items": rows,
                              "empty": empty})
        refs = []
        for j, ref in enumerate(references or []):
            entry: dict[str, Any] = {"path": ref, "src": None}
            if reference_thumbs is not None and j < len(reference_thumbs):
                file = folder / f"ref_{j}.jpg"
                w, h = save_jpeg(fit(as_rgb(reference_thumbs[j], "reference"), self.panel_px),
                                 file, self.quality)
                entry.update(src=self._rel(file), w=w, h=h)
            refs.append(entry)
        n_anom = int(y.sum())
        self.categories.append({
            "name": name, "key": key, "n": int(s.size), "n_anomalous": n_anom,
            "n_normal": int(s.size) - n_anom,
            "image_threshold": num(image_threshold, 4), "pixel_threshold": num(pixel_threshold, 4),
            "fp_at_thr": None if math.isnan(thr) else int(((s >= thr) & ~y).sum()),
            "fn_at_thr": None if math.isnan(thr) else int(((s < thr) & y).sum()),
            "image": _level((curves or {}).get("image")), "pixel": _level((curves or {}).get("pixel")),
            "plots": {"src": self._rel(folder / "plots.png"), "w": plot_w, "h": plot_h},
            "scores_csv": self._rel(folder / "scores.csv"),
            "galleries": galleries, "references": refs,
        })

    def finish(self, metrics: dict[str, Any]) -> Path:
        """Write ``report.html`` atomically and return its path.

        Args:
            metrics: the metrics.json dict: ``per_category`` ``{cat: {metric: fraction}}`` and
                ``mean`` ``{metric: fraction}``; the table shows ``metrics.METRIC_KEYS`` in
                percent with one decimal, sortable, with the mean row pinned last.
        """
        if "per_category" not in metrics:
            raise ValueError("metrics must be the metrics.json dict (with 'per_category')")
        undefined = metrics.get("undefined") or {}
        for c in self.categories:  # why a level is undefined: metrics.json's reason
            u = undefined.get(c["name"], {})
            for level, keys in LEVEL_KEYS.items():
                if not c[level]["defined"]:
                    c[level]["why"] = _why([r for k, r in u.items() if k in keys])
        why_blank = _why([r for cat, u in undefined.items() if cat in metrics["per_category"]
                          for r in u.values()])
        anchors = {c["name"]: c["key"] for c in self.categories}
        rows = [{"name": cat, "anchor": anchors.get(cat),
                 "cells": [(pct(m.get(k)), sortkey(m.get(k))) for k in METRIC_KEYS]}
                for cat, m in metrics["per_category"].items()]
        mean = metrics.get("mean")
        mean_row = None if mean is None else {
            "name": "mean", "anchor": None,
            "cells": [(pct(mean.get(k)), sortkey(mean.get(k))) for k in METRIC_KEYS]}
        return render_page(
            "eval.html", self.path, title=self.title, info=info_rows(self.info),
            columns=list(METRIC_KEYS), rows=rows, mean_row=mean_row, why_blank=why_blank,
            categories=self.categories, files_dir=FILES_DIR)
