"""Micro-batching: queries that arrive while a batch is being embedded go through together in the next one.

A single query costs a retriever forward pass that is mostly fixed overhead on a CPU: on 2 cores, 8
text queries in one forward take about twice the time of one. One worker thread per model runs its
batches, so a model never runs two forwards at once, and two served models run theirs side by side.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``submit(item)`` queues ``item``; its future gets ``fn``'s result for it once a batch holding it has run."""

    def __init__(self, fn: Callable[[list[T]], list[R]], max_batch: int = 32):
        self.fn, self.max_batch = fn, max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="rare-serve-batcher", daemon=True).start()

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.fn([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)
