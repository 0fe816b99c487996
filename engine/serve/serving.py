"""serve.py's service: the served models (one per object), the decoding of an upload, one
image's score, verdict, regions and heatmap, and the folder of heatmaps it serves.

Each object's model is built as predict.py builds it (``engine.predict.prediction``: the scorer, the
score definition, the thresholds from ``--thresholds``/the flags/the export's sidecar, the
colour scale), and runs behind its own ``MicroBatcher``. An upload is decoded as
``datasets.transforms.open_image`` decodes a file (PIL, fully loaded, 16-bit gray scaled to 8
bits; refused above ``pixel_limit()`` pixels before any decoding), transformed by
``image_transform`` and scored by the scorer's ``score_batches`` with predict.py's score formula
(``final_scores``: zero-shot the text score, few-shot ``per_image``).

Exactness. With ``--max_batch 1`` every image goes through the model alone, so its score is
predict.py ``--batch_size 1``'s for the same image and model bit for bit, at the same torch
thread count (``OMP_NUM_THREADS``) and device, and so is the verdict. With a larger
``--max_batch`` an image may share a forward pass with others; a matrix multiply over another
batch size or position can differ in the last bits on some CPUs (AVX-512, AMX, ARM), so the
score equals predict.py's within ``SCORE_TOLERANCE`` (1e-5, float32 rounding of the maps and
the text score), and the verdict is predict.py's except for a score within that tolerance of
the image threshold.
"""
from __future__ import annotations

import base64
import io
import logging
import re
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from datasets.transforms import NOT_AN_IMAGE, image_transform, pixel_limit, to_8bit
from utils.io import atomic_write
from utils.visualize import MIN_SIDE, heatmap_overlay, render_overlay

from engine.config import ServeConfig
from engine.plumbing.distributed import Dist
from engine.predict.prediction import PredictJob, final_scores, settle_object_name, settle_thresholds
from engine.predict.regions import draw_boxes, find_regions
from engine.serve.serve_batch import MicroBatcher

SCORE_TOLERANCE = 1e-5
HEATMAP_ID = re.compile(r"[0-9a-f]{32}")


class UploadError(Exception):
    """A request the service refuses: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Served:
    """One object's model: predict.py's job (scorer, thresholds, scale) and its batcher."""

    name: str
    job: PredictJob
    runtime: str
    source: str
    transform: Callable
    batcher: MicroBatcher | None = None

    def describe(self) -> dict:
        """The object's entry of ``/health``."""
        job, thr = self.job, self.job.thresholds
        return {"object_name": self.name, "mode": job.mode, "image_score": job.score_name,
                "model": job.definition.get("model"), "image_size": job.scorer.size,
                "runtime": self.runtime, "source": self.source,
                "normal_level": job.scorer.normal_level,
                "thresholds": {"image": thr["image"], "pixel": thr["pixel"],
                               "source": thr["source"]},
                "heatmap_scale": job.scale.__dict__ if job.scale else "per image",
                "queue": self.batcher.stats() if self.batcher else None}


def decode_image(data: bytes, name: str = "the upload") -> Image.Image:
    """An upload's bytes as ``open_image`` reads a file: UploadError 415 (not an image), 422
    (empty, damaged, or more pixels than ``pixel_limit()``: refused from its header, as PIL
    refuses a file of predict.py's)."""
    if not data:
        raise UploadError(422, f"{name} is empty: send the image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:  # refuses a bomb from its header
            im.load()
            img = im.copy()
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise UploadError(422, f"{name} has {size}, above the limit of {pixel_limit():,} "
                               "(PIL's decompression-bomb limit; the service's operator sets it "
                               "with APRILGAN_MAX_IMAGE_PIXELS): refused before decoding") \
            from None
    except UnidentifiedImageError:
        raise UploadError(415, f"{name} is {NOT_AN_IMAGE}") from None
    except Exception as e:  # noqa: BLE001 - PIL's decoders raise many types on damaged files
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UploadError(422, f"{name} cannot be decoded as an image: {text}") from None
    return to_8bit(img)


def run_batch(job: PredictJob, tensors: Sequence[torch.Tensor]) -> list[dict]:
    """Score preprocessed images [3, S, S] as one batch through the job's scorer; per image:
    ``score`` (predict.py's final score), ``text_score``, ``map_max``, ``map`` [S, S], ``batch``."""
    b, s = len(tensors), job.scorer.size
    batch = {"image": torch.stack(list(tensors)), "mask": torch.zeros(b, s, s),
             "label": torch.zeros(b, dtype=torch.long), "path": [f"image-{i}" for i in range(b)]}
    out = list(job.scorer.score_batches([batch]))[0]
    text = np.array([float(t) for t in out["text_score"]], dtype=np.float64)
    mmax = np.array([float(m.max()) for m in out["maps"]], dtype=np.float64)
    score = final_scores(job, text, mmax)
    return [{"score": float(score[i]), "text_score": float(text[i]), "map_max": float(mmax[i]),
             "map": out["maps"][i], "batch": b} for i in range(b)]


def load_models(cfg: ServeConfig, log: logging.Logger, work: Path) -> dict[str, Served]:
    """Every object's model, built as predict.py builds it; ConfigError for two exports of one
    object."""
    from errors import ConfigError

    from engine.predict.scorers import OnnxScorer, TorchScorer, reference_list

    served: dict[str, Served] = {}
    for onnx in (cfg.onnx or [None]):
        pcfg = cfg.predict_config(onnx=onnx) if onnx else cfg.predict_config()
        settle_object_name(pcfg)  # an export's own object (several: --object_name is refused)
        job = PredictJob(pcfg, work, Dist(), log)
        if onnx:
            job.scorer = OnnxScorer(pcfg, pcfg.device, log)
            runtime, source = pcfg.runtime, str(Path(onnx).resolve())
        else:
            job.refs = reference_list(pcfg, job.warn)
            job.scorer = TorchScorer(pcfg, pcfg.device, job.refs, log)
            runtime, source = "torch", str(Path(pcfg.checkpoint_path).resolve())
        settle_thresholds(job)
        name = pcfg.object_name
        if name in served:
            raise ConfigError(f"two --onnx files are exported for {name!r} ({served[name].source}"
                              f" and {source}): serve one model per object")
        served[name] = Served(name, job, runtime, source, image_transform(job.scorer.size))
        thr = job.thresholds
        log.info(f"{name!r}: {job.mode} ({job.score_name} score), {runtime}, {source}; "
                 f"thresholds image {_num(thr['image'])}, pixel {_num(thr['pixel'])}"
                 + (f" from {thr['source']}" if thr["source"] else " (none: no verdicts)")
                 + (f"; heatmaps on one scale: {job.scale.source}" if job.scale else ""))
    for s in served.values():
        s.batcher = MicroBatcher(lambda items, job=s.job: run_batch(job, items), cfg.max_batch,
                                 cfg.max_wait_ms / 1000.0, cfg.queue_size, f"model-{s.name}")
    return served


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:.6g}"


def regions_of(job: PredictJob, img: Image.Image, amap: np.ndarray) -> list[dict]:
    """predict.py's regions of one image (its regions.csv rows), [] without a pixel threshold."""
    thr = job.thresholds["pixel"]
    if thr is None:
        return []
    full = cv2.resize(amap, img.size, interpolation=cv2.INTER_LINEAR)
    return find_regions(full, thr, job.cfg.min_region_area)[1]


def heatmap_png(job: PredictJob, img: Image.Image, amap: np.ndarray, regions: list[dict]) -> bytes:
    """The overlay on the job's colour scale, region boxes drawn, as PNG bytes."""
    if job.scale is None:
        over = heatmap_overlay(img, amap)
    else:
        side = job.cfg.heatmap_max_side  # as predict.py's heatmaps: small images enlarged
        over = render_overlay(img, amap, job.scale, max_side=side, min_side=min(MIN_SIDE, side))[1]
    if regions:
        over = draw_boxes(over, regions, img.size)
    buf = io.BytesIO()
    Image.fromarray(over).save(buf, format="PNG")
    return buf.getvalue()


class HeatmapStore:
    """The last ``keep`` heatmaps as ``<random id>.png`` in ``folder`` (the only names served)."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):  # a previous run's: their ids are gone
            if HEATMAP_ID.fullmatch(old.stem):
                old.unlink()
        self._ids: deque[str] = deque()
        self._lock = threading.Lock()

    def add(self, png: bytes) -> str:
        import uuid

        hid = uuid.uuid4().hex
        atomic_write(self.folder / f"{hid}.png", lambda f: f.write(png))
        with self._lock:
            self._ids.append(hid)
            old = [self._ids.popleft() for _ in range(max(0, len(self._ids) - self.keep))]
        for o in old:
            (self.folder / f"{o}.png").unlink(missing_ok=True)
        return hid

    def path(self, hid: str) -> Path | None:
        """The file of a heatmap id this store made and still keeps, else None."""
        if not HEATMAP_ID.fullmatch(hid):
            return None
        with self._lock:
            known = hid in self._ids
        return self.folder / f"{hid}.png" if known else None


class Service:
    """The models, the work folder and the heatmap store of one serve.py process."""

    def __init__(self, cfg: ServeConfig, log: logging.Logger):
        self.cfg, self.log = cfg, log
        self._temp = cfg.work_dir is None
        self.work = Path(tempfile.mkdtemp(prefix="aprilgan-serve-") if self._temp
                         else cfg.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            self.models = load_models(cfg, log, self.work)
            self.heatmaps = HeatmapStore(self.work / "heatmaps", cfg.keep_heatmaps)
        except BaseException:
            self.close()
            raise

    def model(self, name: str | None) -> Served:
        """The model of ``name`` (None: the only one); UploadError 422 naming the objects."""
        if not name:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise UploadError(422, "several objects are served: send object_name, one of "
                                   f"{', '.join(sorted(self.models))}")
        if name not in self.models:
            raise UploadError(422, f"object_name {name!r} is not served (served: "
                                   f"{', '.join(sorted(self.models))})")
        return self.models[name]

    def health(self) -> dict:
        """``/health``: status, runtime, objects, and per object its model and thresholds."""
        runtimes = sorted({m.runtime for m in self.models.values()})
        return {"status": "ok", "runtime": ", ".join(runtimes), "objects": sorted(self.models),
                "models": {n: m.describe() for n, m in self.models.items()},
                "auth": bool(self.cfg.api_key), "max_upload_mb": self.cfg.max_upload_mb,
                "threads": torch.get_num_threads(), "score_tolerance": SCORE_TOLERANCE
                if self.cfg.max_batch > 1 else 0.0}

    def result(self, served: Served, img: Image.Image, r: dict, heatmap: str) -> dict:
        """The JSON answer for one scored image (``heatmap``: url, inline or none)."""
        job, thr = served.job, served.job.thresholds
        regions = regions_of(job, img, r["map"])
        out: dict[str, Any] = {
            "object_name": served.name, "mode": job.mode, "image_score": job.score_name,
            "score": r["score"], "anomalous": None if thr["image"] is None else
            bool(r["score"] >= thr["image"]), "image_threshold": thr["image"],
            "pixel_threshold": thr["pixel"], "thresholds_source": thr["source"],
            "text_score": r["text_score"], "map_max": r["map_max"],
            "normal_level": job.scorer.normal_level, "width": img.size[0],
            "height": img.size[1], "regions": regions, "batch": r["batch"]}
        if heatmap != "none":
            png = heatmap_png(job, img, r["map"], regions)
            if heatmap == "inline":
                out["heatmap_png_base64"] = base64.b64encode(png).decode("ascii")
            else:
                out["heatmap_url"] = f"/heatmaps/{self.heatmaps.add(png)}.png"
        return out

    def score_blocking(self, served: Served, img: Image.Image) -> dict:
        """Score one decoded image through the object's batcher, waiting for a place in its
        queue (the watch folder never gets 503)."""
        tensor = served.transform(img)
        served.batcher.reserve(block=True)
        return served.batcher.submit(tensor).result()

    def close(self) -> None:
        """Stop the batchers; remove the work folder when it is a temporary one."""
        for m in getattr(self, "models", {}).values():
            if m.batcher:
                m.batcher.close()
        if self._temp:
            shutil.rmtree(self.work, ignore_errors=True)
