"""engine.evaluate.metric_pool, unit by unit: a category's metrics for every run of an evaluation
equal ``metrics.category_metrics`` of the same maps and image scores made here independently
(METHOD §4/§5 written out with torch.nn.functional), with each image score the run uses; what
cannot be defined is named; ``MetricPool`` gives the same results inline and through its worker
processes (a task and its result cross a pickle, the worker runs one torch thread) and runs the
metrics of a GPU in one thread."""
from __future__ import annotations

import pickle
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from tolerances import assert_metrics_close

from metrics import category_metrics

from engine.evaluate.metric_pool import CategoryTask, MetricPool, score_category

N, H, S = 6, 4, 16  # images, patch grid, map size
# Same float32 operations on the same inputs, in another order of summation at most: the maps
# agree to a few ulps of values below 6, the metrics (ranks of well-separated random values, a
# threshold that is a map value) to far less than TOL.
TOL = 1e-6


def _task(image_score: str = "released", anomalous: bool = True) -> CategoryTask:
    g = torch.Generator().manual_seed(11)
    logits = [torch.randn(N, 2, H, H, generator=g) * 3 for _ in range(2)]
    dist = [torch.rand(N, 1, H, H, generator=g) for _ in range(2)]
    rng = np.random.default_rng(11)
    gt = np.zeros((N, S, S), np.uint8)
    if anomalous:
        gt[3:, 4:9, 5:11] = 1  # images 3, 4, 5 anomalous
    sp = (gt.reshape(N, -1).max(axis=1) > 0).astype(np.int64)
    return CategoryTask(logits, [None, dist], [None, 1.5], rng.random(N), gt, sp, S,
                        image_score=image_score)


def _maps(task: CategoryTask, run: int) -> np.ndarray:
    """METHOD §4/§5: sum over stages of softmax(bilinear upsample, align_corners)[:, 1], plus
    (few-shot) the upsampled memory distances."""
    up = lambda x: F.interpolate(x.float(), size=(S, S), mode="bilinear", align_corners=True)  # noqa: E731
    maps = sum(torch.softmax(up(l), dim=1)[:, 1] for l in task.logits)
    if task.distances[run] is not None:
        maps = maps + sum(up(d)[:, 0] for d in task.distances[run])
    return maps.numpy()


def _released(text, mmax):
    return 0.5 * (text + (mmax - mmax.min()) / (mmax.max() - mmax.min()))


def _per_image(text, mmax, mu):
    return 0.5 * (text + np.clip((mmax - mu) / mu, 0, 1))


def test_each_run_scores_its_own_maps_with_the_released_image_score():
    task = _task()
    zero, few = score_category(task)
    for run, res in ((0, zero), (1, few)):
        maps = _maps(task, run)
        mmax = maps.max(axis=(1, 2)).astype(np.float64)
        np.testing.assert_allclose(res["maps_max"], mmax, rtol=0, atol=TOL)
        want = task.text_score if run == 0 else _released(task.text_score, mmax)
        np.testing.assert_allclose(res["score"], want, rtol=0, atol=TOL)
        assert_metrics_close(res["metrics"], category_metrics(task.gt_px, maps, task.gt_sp, want),
                             tol=TOL, pro_tol=TOL)
        assert res["undefined"] == {} and res["warnings"] == [] and res["seconds"] >= 0
        assert res["image_metrics_per_image"] is None
    np.testing.assert_allclose(few["scores"]["per_image"],
                               _per_image(task.text_score, few["maps_max"], 1.5), rtol=0, atol=1e-12)
    assert zero["scores"]["per_image"] is task.text_score  # zero-shot: the text score only
    assert not np.allclose(zero["metrics"]["auroc_px"], few["metrics"]["auroc_px"])


def test_the_per_image_score_drives_the_metrics_when_asked_and_both_reports_it_apart():
    per, both = _task("per_image"), _task("both")
    few = score_category(per)[1]
    maps = _maps(per, 1)
    score = _per_image(per.text_score, maps.max(axis=(1, 2)).astype(np.float64), 1.5)
    np.testing.assert_allclose(few["score"], score, rtol=0, atol=TOL)
    assert_metrics_close(few["metrics"], category_metrics(per.gt_px, maps, per.gt_sp, score),
                         tol=TOL, pro_tol=TOL)
    zero, few = score_category(both)
    assert zero["image_metrics_per_image"]["auroc"] == pytest.approx(
        roc_auc_score(both.gt_sp, both.text_score), abs=1e-12)
    img = few["image_metrics_per_image"]  # "both": metrics of the released score, plus these
    assert img["auroc"] == pytest.approx(roc_auc_score(both.gt_sp, score), abs=TOL)
    assert img["ap"] == pytest.approx(average_precision_score(both.gt_sp, score), abs=TOL)
    released = _released(both.text_score, maps.max(axis=(1, 2)).astype(np.float64))
    assert few["metrics"]["auroc_sp"] == pytest.approx(roc_auc_score(both.gt_sp, released), abs=TOL)


def test_what_cannot_be_defined_is_named_and_equal_map_maxima_warn():
    task = _task(anomalous=False)  # no anomalous image: every metric is undefined
    for res in score_category(task):
        assert set(res["undefined"]) == set(res["metrics"])
        assert all(np.isnan(v) for v in res["metrics"].values())
        assert all("only one class" in why for why in res["undefined"].values())
    flat = _task()
    flat.logits = [torch.zeros(N, 2, H, H)] * 2  # every map is 0.5 + 0.5 = 1 everywhere
    flat.distances = [None, [torch.zeros(N, 1, H, H)]]
    zero, few = score_category(flat)
    np.testing.assert_array_equal(few["maps_max"], np.ones(N))  # exact: softmax(0, 0) = 0.5
    assert zero["warnings"] == []
    assert len(few["warnings"]) == 1 and "share one maximum" in few["warnings"][0]
    np.testing.assert_allclose(few["scores"]["released"], 0.5 * flat.text_score, rtol=0, atol=1e-15)


class _Processes:
    """Stands in for ProcessPoolExecutor: records how the pool was made, and runs each task as
    a spawned worker would (function and task pickled, the initializer first, result pickled)."""

    made: list[dict] = []

    def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
        self.init, self.args = initializer, initargs
        _Processes.made.append({"workers": workers, "start": mp_context.get_start_method()})

    def submit(self, fn, *args) -> Future:
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        threads = torch.get_num_threads()
        try:
            self.init(*self.args)
            _Processes.made[-1]["threads"] = torch.get_num_threads()
            out = pickle.loads(pickle.dumps(fn(*args)))
        finally:
            torch.set_num_threads(threads)
        f: Future = Future()
        f.set_result(out)
        return f

    def shutdown(self, wait=True, cancel_futures=False) -> None:
        _Processes.made[-1]["closed"] = True


def test_processes_give_the_inline_results_and_a_gpu_gets_one_thread(monkeypatch):
    import concurrent.futures

    task = _task("both")
    inline = MetricPool(0)
    assert inline.inline and not inline.processes
    fut = inline.submit(task)
    assert fut.done()  # inline: computed before submit returns
    want = fut.result()
    inline.close()

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _Processes)
    _Processes.made.clear()
    pool = MetricPool(2)
    assert pool.processes and not pool.inline
    got = pool.submit(task).result()
    pool.close()
    assert _Processes.made == [{"workers": 2, "start": "spawn", "threads": 1, "closed": True}]
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):  # one torch thread against several: float32 rounding at most
        assert_metrics_close(a["metrics"], b["metrics"], tol=TOL, pro_tol=TOL)
        np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=TOL)
        assert a["undefined"] == b["undefined"] == {}

    gpu = MetricPool(4, device="cuda")  # metrics on a GPU: one thread, never processes
    try:
        assert isinstance(gpu.executor, ThreadPoolExecutor) and not gpu.processes
    finally:
        gpu.close()
