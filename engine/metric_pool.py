"""A category's metrics, computed inline or in worker processes while the backbone goes on.

``score_run`` turns one category's patch-resolution results of one run into final maps, final
image scores (SPEC §5: the text score in zero-shot, the combined score in few-shot) and the
metrics of SPEC §7. ``MetricPool`` runs it inline (workers=0) or in spawned processes, each with
one torch thread, so the metrics of category c overlap the backbone pass of category c + 1.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Sequence

import numpy as np
import torch

from models.anomaly_maps import combined_image_scores

from .inference import full_maps


def score_run(logits: Sequence[torch.Tensor], distances: Sequence[torch.Tensor] | None,
              text_score: np.ndarray, gt_px: np.ndarray, gt_sp: np.ndarray, size: int,
              with_mvtec_aupro: bool = True,
              maps: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Final maps, image scores and metrics of one category in one run.

    ``maps`` [N, S, S]: the final maps when the caller already made them (else built here).

    Returns:
        (metrics dict of ``metrics.category_metrics``, [N] final image scores: the text score in
        zero-shot, 0.5 * (text + minmax(max map)) in few-shot).
    """
    from metrics import category_metrics  # imported here: this runs in metric worker processes

    if maps is None:
        maps = np.concatenate(list(full_maps(logits, distances, size)))
    score = text_score
    if distances:
        score = combined_image_scores(text_score, maps.max(axis=(1, 2)))
    return category_metrics(gt_px, maps, gt_sp, score, with_mvtec_aupro=with_mvtec_aupro), score


class MetricPool:
    """Computes ``score_run`` tasks inline (workers=0) or in worker processes."""

    def __init__(self, workers: int = 0):
        self.executor = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            self.executor = ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=torch.set_num_threads,
                initargs=(1,))

    @property
    def inline(self) -> bool:
        return self.executor is None

    def submit(self, *args, **kwargs) -> Future:
        if self.executor is not None:
            return self.executor.submit(score_run, *args, **kwargs)
        f: Future = Future()
        f.set_result(score_run(*args, **kwargs))
        return f

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
