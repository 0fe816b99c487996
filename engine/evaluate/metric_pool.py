"""A category's metrics for every run, computed inline, in a thread (GPU) or in processes (CPU).

``score_category`` turns one category's patch-resolution results into, for each run, the final
maps, the image scores (METHOD §5, and the per-image score) and the metrics of METHOD §7. All the
runs of a category share its masks, their connected components and the zero-shot part of the
maps, so those are made once. ``MetricPool`` runs it inline, in one background thread when the
metrics run on a GPU (the backbone goes on meanwhile), or in spawned worker processes with one
torch thread each (CPU-only machines; ``--metric_workers``).
"""
from __future__ import annotations

import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from models.anomaly_maps import combined_image_scores, final_maps, per_image_scores, zero_shot_maps


@dataclass
class CategoryTask:
    """What the metrics of one category need (small: patch-resolution results and masks)."""

    logits: list[torch.Tensor]  # per stage [N, 2, h, h]
    distances: list[list[torch.Tensor] | None]  # per run: per stage [N, 1, h, h], None zero-shot
    normal_levels: list[float | None]  # per run: mu of the per-image score (few-shot)
    text_score: np.ndarray  # [N]
    gt_px: np.ndarray  # [N, S, S] uint8
    gt_sp: np.ndarray  # [N]
    size: int
    with_mvtec_aupro: bool = True
    image_score: str = "released"


def image_scores_of(task: CategoryTask, run: int, maps_max: np.ndarray) -> dict[str, np.ndarray]:
    """The image scores of one run: ``released`` (METHOD §5) and, in few-shot, ``per_image``."""
    if task.distances[run] is None:
        return {"released": task.text_score, "per_image": task.text_score}
    released = combined_image_scores(task.text_score, maps_max)
    return {"released": released,
            "per_image": per_image_scores(task.text_score, maps_max, task.normal_levels[run])}


def score_category(task: CategoryTask, device: str | torch.device | None = None,
                   regions=None) -> list[dict]:
    """Metrics of every run of one category.

    Returns, per run: ``metrics`` (``category_metrics`` of the score in use: the released one,
    or the per-image one with ``image_score="per_image"``), ``curves`` (for the report),
    ``scores`` {"released", "per_image"} [N], ``score`` (the one in use), ``maps_max`` [N],
    ``image_metrics_per_image`` (with ``image_score="both"``: image-level metrics of the
    per-image score), ``warnings`` (messages for the log), ``undefined`` ({metric: why} for
    the NaN values), ``seconds``.
    """
    from metrics import category_metrics_and_curves, mask_regions  # heavy: only where used
    from metrics.classification import classification_metrics

    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if regions is None:  # once per category: the runs (and prompt variants) share the masks
        regions = mask_regions(task.gt_px)
    gt = torch.from_numpy(task.gt_px).to(dev) if dev.type == "cuda" else task.gt_px
    zs = zero_shot_maps(task.logits, task.size, dev)
    out = []
    for r, dist in enumerate(task.distances):
        t1 = time.perf_counter()
        maps = final_maps(zs, dist, task.size)
        maps_max = maps.amax(dim=(1, 2)).double().cpu().numpy()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = image_scores_of(task, r, maps_max)
        use = "per_image" if task.image_score == "per_image" else "released"
        pixels = maps if dev.type == "cuda" else maps.numpy()
        with warnings.catch_warnings(record=True) as why:
            warnings.simplefilter("always")
            metrics, curves = category_metrics_and_curves(
                gt, pixels, task.gt_sp, scores[use], with_mvtec_aupro=task.with_mvtec_aupro,
                device=dev if dev.type == "cuda" else None, regions=regions)
        reason = "; ".join(dict.fromkeys(str(w.message) for w in why)) or "undefined"
        undefined = {k: reason for k, v in metrics.items()
                     if isinstance(v, float) and not np.isfinite(v)}
        res = {"metrics": metrics, "curves": curves, "scores": scores, "score": scores[use],
               "maps_max": maps_max, "image_metrics_per_image": None,
               "warnings": [str(w.message) for w in caught], "undefined": undefined}
        if task.image_score == "both":
            res["image_metrics_per_image"] = classification_metrics(task.gt_sp, scores["per_image"])
        res["seconds"] = time.perf_counter() - (t0 if r == 0 else t1)
        out.append(res)
        del maps
    return out


def _run_on_cpu(task: CategoryTask) -> list[dict]:
    return score_category(task, None)


class MetricPool:
    """Runs ``score_category`` inline, in a thread (metrics on a GPU) or in worker processes."""

    def __init__(self, workers: int = 0, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else None
        self.executor = None
        on_gpu = self.device is not None and self.device.type == "cuda"
        if workers > 0 and not on_gpu:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            self.executor = ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=torch.set_num_threads,
                initargs=(1,))
        elif on_gpu:
            from concurrent.futures import ThreadPoolExecutor
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="metrics")
        self.processes = workers > 0 and not on_gpu

    @property
    def inline(self) -> bool:
        return self.executor is None

    def submit(self, task: CategoryTask) -> Future:
        if self.processes:
            return self.executor.submit(_run_on_cpu, task)
        if self.executor is not None:
            return self.executor.submit(score_category, task, self.device)
        f: Future = Future()
        f.set_result(score_category(task, self.device))
        return f

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
