"""Dynamic batching for ``finerank serve``: concurrent requests share the cross-encoder's forward passes.

A :class:`Batcher` stands in for a Reranker's backend (:mod:`finerank.scorers.backends`). Request threads hand it
their model inputs and wait; one worker thread takes what is queued (whole requests, up to ``max_batch_pairs``
inputs, waiting at most ``wait_ms`` for more after the first), sorts the inputs by length, runs the model in
batches of ``batch_size`` and hands each request its scores back. This is what text-embeddings-inference and
Infinity do. The queue is bounded: past ``max_queue`` waiting inputs a request is refused at once with
:class:`QueueFull` (the server answers 429 with Retry-After), never queued without end.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque

import numpy as np

from ..core.errors import FinerankError
from ..scorers.cross_encoder import Reranker

__all__ = ["Batcher", "QueueFull", "install"]


class QueueFull(Exception):
    """More model inputs are waiting than the queue holds: try again shortly."""


class _Job:
    __slots__ = ("pairs", "done", "scores", "error")

    def __init__(self, pairs):
        self.pairs, self.done, self.scores, self.error = pairs, threading.Event(), None, None


class Batcher:
    """A backend whose calls, from any number of threads, are gathered into shared forward passes."""

    concurrent = True  # Reranker.score calls it outside its own lock

    def __init__(self, backend, *, batch_size: int = 32, max_batch_pairs: int = 256, wait_ms: float = 2.0,
                 max_queue: int = 16000):
        if batch_size < 1 or max_batch_pairs < 1 or max_queue < 1 or wait_ms < 0:
            raise FinerankError(f"batching: batch_size {batch_size}, max_batch_pairs {max_batch_pairs} and max_queue "
                                f"{max_queue} must be at least 1, wait_ms {wait_ms:g} at least 0")
        self.inner = backend
        for attr in ("kind", "tokenizer", "model_max_length", "source", "activation"):
            setattr(self, attr, getattr(backend, attr))
        self.batch_size, self.max_batch_pairs, self.wait = batch_size, max_batch_pairs, wait_ms / 1000.0
        self.max_queue = max_queue
        self._jobs: deque[_Job] = deque()
        self._cv = threading.Condition()
        self.queued = 0                     # inputs waiting (the queue depth)
        self.stats = {"passes": 0, "requests": 0, "pairs": 0, "max_requests": 0, "max_pairs": 0, "refused": 0}
        self._worker = threading.Thread(target=self._run, name="finerank-batcher", daemon=True)
        self._worker.start()

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        job = _Job(list(pairs))
        with self._cv:
            if self.queued + len(job.pairs) > self.max_queue and self.queued:
                self.stats["refused"] += 1
                raise QueueFull(f"{self.queued} model inputs are waiting (limit {self.max_queue})")
            self._jobs.append(job)
            self.queued += len(job.pairs)
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.scores

    def _take(self) -> list[_Job]:
        """Whole jobs up to the pair budget (always at least one), waiting up to ``wait`` for more to arrive."""
        with self._cv:
            while not self._jobs:
                self._cv.wait()
            deadline = time.monotonic() + self.wait
            while self.queued < self.max_batch_pairs and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            taken, pairs = [], 0
            while self._jobs and (not taken or pairs + len(self._jobs[0].pairs) <= self.max_batch_pairs):
                job = self._jobs.popleft()
                taken.append(job)
                pairs += len(job.pairs)
            self.queued -= pairs
        return taken

    def _run(self) -> None:
        while True:
            jobs = self._take()
            try:
                flat = [p for job in jobs for p in job.pairs]
                order = sorted(range(len(flat)), key=lambda k: -(len(flat[k][0]) + len(flat[k][1])))
                scores = np.empty(len(flat), dtype=np.float32)
                for b in range(0, len(order), self.batch_size):  # similar lengths share a batch: less padding
                    batch = order[b: b + self.batch_size]
                    scores[batch] = self.inner([flat[k] for k in batch])
                start = 0
                for job in jobs:
                    job.scores = scores[start: start + len(job.pairs)]
                    start += len(job.pairs)
                self.stats["passes"] += 1
                self.stats["requests"] += len(jobs)
                self.stats["pairs"] += len(flat)
                self.stats["max_requests"] = max(self.stats["max_requests"], len(jobs))
                self.stats["max_pairs"] = max(self.stats["max_pairs"], len(flat))
            except BaseException as e:  # noqa: BLE001 - the request threads re-raise it; the worker goes on
                for job in jobs:
                    job.error = e
            for job in jobs:
                job.done.set()


def install(scorer, **options) -> list[Batcher]:
    """Put a :class:`Batcher` in front of every cross-encoder inside ``scorer`` (alone, fused, or a cascade's
    expensive stage); returns them (none: nothing to batch, e.g. BM25 or a bi-encoder)."""
    seen, out, todo = set(), [], [scorer]
    while todo:
        s = todo.pop()
        if s is None or id(s) in seen:
            continue
        seen.add(id(s))
        if isinstance(s, Reranker):
            if not isinstance(s.backend, Batcher):
                s.backend = Batcher(s.backend, batch_size=s.batch_size, **options)
                # request threads cut windows with the Reranker's tokenizer while the worker thread's model call
                # tokenizes with the backend's: one fast tokenizer shared by two threads garbles a call (padding
                # and truncation are its state), so the Reranker gets a copy of its own
                s.tokenizer = copy.deepcopy(s.tokenizer)
            out.append(s.backend)
            continue
        todo += [getattr(s, a, None) for a in ("ce", "expensive", "cheap")]
    return out
