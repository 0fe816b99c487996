"""serve.py's micro-batching: concurrent requests for one model share a forward pass.

A ``MicroBatcher`` owns one model through one worker thread. A caller first ``reserve``s a
place (refused when ``capacity`` images are already waiting or running: the service answers
503), then ``submit``s its item and waits on the returned future. The worker takes the first
waiting item, then keeps collecting until it holds ``max_batch`` items or ``max_wait`` seconds
have passed since it took the first, and runs them as one batch; every item's future gets its
own result (or the batch's exception). With ``max_batch`` 1 each item runs alone, so its result
is the one a one-image batch gives (serve.py's bit-exact mode).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Sequence


class QueueFull(Exception):
    """No place left: ``retry_after`` is the seconds a client should wait before trying again."""

    def __init__(self, retry_after: int, pending: int, capacity: int):
        super().__init__(f"{pending} images are waiting or being scored (the queue holds "
                         f"{capacity}); try again in {retry_after} s")
        self.retry_after = retry_after


class MicroBatcher:
    """One worker thread running ``run_batch(items) -> results`` (one result per item, in order).

    Args:
        run_batch: scores a list of items; called only from the worker thread.
        max_batch: the most items per call.
        max_wait: seconds the worker waits for more items after taking the first.
        capacity: the most items reserved, queued or running at once.
        name: the worker thread's name.
    """

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int,
                 max_wait: float, capacity: int, name: str = "batcher"):
        if max_batch < 1 or capacity < 1 or max_wait < 0:
            raise ValueError("max_batch and capacity must be >= 1 and max_wait >= 0")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait
        self.capacity = capacity
        self._queue: deque[tuple[Any, Future]] = deque()
        self._cv = threading.Condition()
        self.pending = 0  # reserved + queued + in the batch being collected or run
        self.batches = 0
        self.images = 0
        self.seconds = 0.0  # in run_batch, all batches together
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers
    def reserve(self, block: bool = False, timeout: float | None = None) -> None:
        """Take a place for one item; QueueFull when none is free (``block``: wait for one,
        up to ``timeout`` seconds)."""
        with self._cv:
            if block:
                self._cv.wait_for(lambda: self.pending < self.capacity or self._stop, timeout)
            if self._stop:
                raise RuntimeError("the service is stopping")
            if self.pending >= self.capacity:
                raise QueueFull(self.retry_after(), self.pending, self.capacity)
            self.pending += 1

    def release(self) -> None:
        """Give back a reserved place that will not be submitted (the upload was refused)."""
        with self._cv:
            self.pending -= 1
            self._cv.notify_all()

    def submit(self, item: Any) -> Future:
        """Queue ``item`` (its place reserved); the future holds its result."""
        fut: Future = Future()
        with self._cv:
            if self._stop:
                self.pending -= 1
                fut.set_exception(RuntimeError("the service is stopping"))
                return fut
            self._queue.append((item, fut))
            self._cv.notify_all()
        return fut

    def retry_after(self) -> int:
        """Whole seconds until the waiting items are likely through (at least 1)."""
        per_batch = self.seconds / self.batches if self.batches else 1.0
        return max(1, math.ceil(per_batch * math.ceil(self.pending / self.max_batch)))

    def stats(self) -> dict:
        """Queue depth and throughput so far (``/health``)."""
        with self._cv:
            return {"pending": self.pending, "capacity": self.capacity,
                    "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000,
                    "batches": self.batches, "images": self.images,
                    "mean_batch": self.images / self.batches if self.batches else None}

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking items, fail the ones still queued, end the worker."""
        with self._cv:
            self._stop = True
            left, self._queue = list(self._queue), deque()
            self.pending -= len(left)
            self._cv.notify_all()
        for _, fut in left:
            fut.set_exception(RuntimeError("the service is stopping"))
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker
    def _collect(self) -> list[tuple[Any, Future]]:
        """The next batch (empty when stopping): the first item, then more until full or
        ``max_wait`` after the first."""
        with self._cv:
            self._cv.wait_for(lambda: self._queue or self._stop)
            if self._stop:
                return []
            batch = [self._queue.popleft()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    break
                self._cv.wait(left)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if not batch:
                return
            t0 = time.perf_counter()
            try:
                results = list(self.run_batch([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            except BaseException as e:  # noqa: BLE001 - every waiting caller gets the fault
                for _, fut in batch:
                    fut.set_exception(e)
            else:
                for (_, fut), r in zip(batch, results):
                    fut.set_result(r)
            with self._cv:
                self.seconds += time.perf_counter() - t0
                self.batches += 1
                self.images += len(batch)
                self.pending -= len(batch)
                self._cv.notify_all()
