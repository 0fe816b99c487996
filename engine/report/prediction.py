"""``report.html`` of a ``predict.py`` run: every scored image by score (highest first) with its
heatmap, a divider at the image threshold when one is known, and the files that could not be read.

Streaming: :meth:`PredictReport.add` writes the image's thumbnail row at once and keeps only
``(path, score, file, anomalous)``, so a run over thousands of images holds no pictures::

    rep = PredictReport(save_path, "predict: my_images", {"model": ..., "checkpoint": ...})
    for path, score, image, overlay in results:
        rep.add(path, score, image, overlay, anomalous=None if thr is None else score >= thr)
    rep.finish(thr, skipped=[{"path": p, "error": e}, ...])
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .common import FILES_DIR, REPORT_NAME, fresh_files_dir, info_rows, is_number, num, render_page
from .images import JPEG_QUALITY, as_rgb, fit, save_row

__all__ = ["PredictReport"]


class PredictReport:
    """Builds ``out_dir/report.html`` for one prediction run, one image at a time.

    Args:
        out_dir: the run's folder; thumbnails go to ``out_dir/report_files/`` (emptied first).
        title: the page title.
        info: run facts for the header (model, checkpoint, image size, mode, ...).
        panel_px: the long side of each panel (image, overlay); a row is 2 x 126 + 2 = 254 px wide.
        quality: JPEG quality.
    """

    def __init__(self, out_dir: Path, title: str, info: dict[str, Any], *, panel_px: int = 126,
                 quality: int = JPEG_QUALITY, fresh: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.title = title
        self.info = dict(info)
        self.panel_px = panel_px
        self.quality = quality
        # fresh=False keeps the thumbnails already there (a resumed, streaming run)
        self.files = fresh_files_dir(self.out_dir) if fresh else self.out_dir / FILES_DIR
        self.files.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        """Where :meth:`finish` writes the page."""
        return self.out_dir / REPORT_NAME

    def add(self, path: str, score: float, image_thumb: np.ndarray, overlay_thumb: np.ndarray,
            anomalous: bool | None = None, name: str | None = None) -> dict[str, Any]:
        """Write ``report_files/<NNNNN>.jpg`` (image | overlay, JPEG) and keep a small record.

        Args:
            path: the image's path as the run names it (shown as the caption).
            score: its image score.
            image_thumb, overlay_thumb: ``[H, W, 3]`` uint8 RGB (any size; shrunk here).
            anomalous: the verdict at the image threshold, ``None`` without one.
            name: the thumbnail's file stem (default: the running number).

        Returns:
            The record kept (JSON-able; ``add_record`` takes it back, e.g. after a resume).
        """
        i = len(self.records)
        file = self.files / f"{name or f'{i:05d}'}.jpg"
        w, h = save_row(file, [as_rgb(image_thumb, "image_thumb"),
                               as_rgb(overlay_thumb, "overlay_thumb")], self.panel_px, self.quality)
        self.records.append({"path": str(path), "score": float(score),
                             "src": f"{FILES_DIR}/{file.name}", "w": w, "h": h,
                             "anomalous": None if anomalous is None else bool(anomalous)})
        return self.records[-1]

    def add_record(self, record: dict[str, Any]) -> None:
        """Keep a record that ``add`` returned earlier (its thumbnail is already on disk)."""
        self.records.append(dict(record))

    def _rank_key(self, i: int) -> tuple[float, int]:
        """Sort key of record ``i``: score descending, NaN last, ties in the order added."""
        score = self.records[i]["score"]
        return (math.inf if math.isnan(score) else -score, i)

    def add_references(self, root: Path, names: list[str], limit: int = 32) -> None:
        """Thumbnails of the few-shot reference images (the first ``limit``) for the page."""
        from PIL import Image

        self.references, self.n_references = [], len(names)
        for i, name in enumerate(names[:limit]):
            try:
                with Image.open(Path(root) / name) as im:
                    img = im.convert("RGB")
            except OSError:
                continue
            img = fit(np.asarray(img), 96)
            file = self.files / f"ref_{i:03d}.jpg"
            img.save(file, format="JPEG", quality=self.quality)
            self.references.append({"src": f"{FILES_DIR}/{file.name}", "name": name,
                                    "w": img.width, "h": img.height})

    def finish(self, threshold: float | None, skipped: list[dict[str, Any]],
               pixel_threshold: float | None = None) -> Path:
        """Write ``report.html`` atomically and return its path.

        Images are listed by score, highest first (ties by the order added); with a finite
        ``threshold`` a divider row separates the images at or above it from those below (it is
        drawn also when all fall on one side). A record may carry ``heatmap`` and ``mask``
        (linked from its thumbnail) and ``n_regions``; a verdict the mask does not show (an
        anomalous image with no region, a normal one with regions) says why.

        Args:
            threshold: the image threshold, or ``None`` when none is known.
            skipped: the files that could not be read, ``{"path", "error"}`` each.
            pixel_threshold: the pixel threshold of the masks, when one is known.
        """
        thr = float(threshold) if is_number(threshold) else None
        order = sorted(range(len(self.records)), key=self._rank_key)
        rows: list[dict[str, Any]] = []
        divider_at = None
        for rank, i in enumerate(order, 1):
            r = self.records[i]
            if thr is not None and divider_at is None and not r["score"] >= thr:
                divider_at = rank - 1
            rows.append({"heatmap": None, "mask": None, "n_regions": None, **r, "rank": rank,
                         "score_text": num(r["score"], 5),
                         "why": _why(r, thr, pixel_threshold)})
        if thr is not None and divider_at is None:
            divider_at = len(rows)
        n_above = sum(1 for r in self.records if thr is not None and r["score"] >= thr)
        skipped_rows = [{"path": str(s.get("path", "")), "error": str(s.get("error", ""))}
                        for s in skipped]
        return render_page(
            "predict.html", self.path, title=self.title, info=info_rows(self.info), rows=rows,
            threshold=None if thr is None else num(thr, 5), divider_at=divider_at,
            n_above=n_above, skipped=skipped_rows, references=getattr(self, "references", []),
            n_references=getattr(self, "n_references", 0))


def _why(r: dict[str, Any], thr: float | None, pixel_thr: float | None) -> str | None:
    """Why a verdict and its mask disagree, in words (None when they agree)."""
    n = r.get("n_regions")
    if thr is None or pixel_thr is None or n is None:
        return None
    if r.get("anomalous") and n == 0:
        return (f"the image score is at or above its threshold {num(thr, 5)}, but no pixel of "
                f"the map reaches the pixel threshold {num(pixel_thr, 5)}: the mask is empty")
    if r.get("anomalous") is False and n > 0:
        return (f"{n} region(s) reach the pixel threshold {num(pixel_thr, 5)}, but the image "
                f"score is below its threshold {num(thr, 5)}")
    return None
