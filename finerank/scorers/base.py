"""The Scorer protocol: anything that scores candidate lists.

BM25, a bi-encoder (dense), the hybrid, a cross-encoder (torch or ONNX), a fused model and a cascade are all Scorers,
and they compose: a fused model holds a cross-encoder and the first-stage signals, a cascade holds a cheap Scorer and
an expensive one, a distillation teacher is any Scorer. ``evaluate``, ``serve``, ``rerank``, ``cascade tune``, the
card and the benchmark take Scorers (:func:`finerank.scorers.load.load_scorer` builds one from a spec string or a
model folder).

Every Scorer states the scale of what it returns (:data:`SCALES`), so that a table, a fusion or an API client knows
what a number means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..core.errors import FinerankError
from ..core.records import Run
from ..data.candidates import Candidates

# what a Scorer's scores are; each Scorer names one as its ``scale``
SCALES = {
    "bm25": "BM25 score of the first stage (unbounded, >= 0), or the list's rank order where scores are unknown",
    "cosine": "cosine of normalized embeddings, in [-1, 1]",
    "sigmoid": "the cross-encoder's logit through a sigmoid, in [0, 1] (binary cross-entropy, a fresh head)",
    "logit": "the cross-encoder's raw logit, unbounded (LambdaLoss, or a model saved without an activation)",
    "zsum": "a weighted sum of per-list z-scores, unbounded, about [-3, 3]; comparable only within one list",
    "cascade": "the expensive stage's score on the head of each list; cut documents get values below it, in order",
}
REQUEST = "request"  # the query id (and source) of the one list a request or a rerank() call makes


@runtime_checkable
class Scorer(Protocol):
    """What every scorer offers."""

    name: str      # a short label for tables and logs
    scale: str     # a key of SCALES: what score_candidates returns

    def describe(self) -> dict:
        """Its parts (models, weights, nested scorers), JSON-serialisable: what a card or a record names. Always
        ``kind`` (bm25, bi-encoder, hybrid, cross-encoder, fused or cascade) and ``scale``; ``model`` where one
        model is the scorer's (a cross-encoder's path, a bi-encoder's name)."""
        ...

    def cost(self, cands) -> int:
        """The model inputs (query-document pairs, or windows of long documents) scoring ``cands`` would run (a
        cascade: at most). Optional extras where a scorer can tell: ``costs(cands)`` and ``min_costs(cands)``, one
        count a candidate (exact, and a cheap lower bound without a tokenizer), and ``min_cost(cands)``, their
        total bound: what ``serve`` refuses a huge request by before counting exactly."""
        ...

    def score_candidates(self, cands, *, progress: bool = False) -> Run:
        """Every candidate list scored: query id -> doc id -> score (higher is better), on ``scale``."""
        ...


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise FinerankError(f"unknown score scale {scale!r}", hint=f"one of: {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class Ranked:
    """One reranked document: its position in the input list and its score (higher is better)."""

    index: int
    score: float


def check_top_k(top_k, name: str = "top_k") -> None:
    """``top_k`` is None (keep every candidate) or a whole number >= 1 (``name``: what the caller calls it)."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise FinerankError(f"{name} must be a whole number of at least 1, got {top_k!r}",
                            hint="--top-k K keeps the best K of each list; leave it out to keep them all")


def ranked(scores: Sequence[float], top_k: int | None = None) -> list[Ranked]:
    """Positions and scores, best first (ties: input order), the first ``top_k`` when given."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    if top_k is not None:
        order = order[: max(0, top_k)]
    return [Ranked(i, float(scores[i])) for i in order]


def one_list(query: str, documents: Sequence[str], first_stage: Sequence[float | None] | None = None) -> Candidates:
    """A request's documents as one candidate list (doc ids "0", "1", ... in the given, first-stage order), with
    the first-stage scores that are given."""
    if not isinstance(query, str):
        raise FinerankError(f"query must be a string, got {type(query).__name__}")
    if first_stage is not None and len(first_stage) != len(documents):
        raise FinerankError(f"first_stage has {len(first_stage)} scores for {len(documents)} documents")
    ids = [str(i) for i in range(len(documents))]
    first = {} if first_stage is None else {
        REQUEST: {i: float(s) for i, s in zip(ids, first_stage) if s is not None}}
    return Candidates({REQUEST: query}, {REQUEST: list(zip(ids, documents))}, first, {}, REQUEST)


def rank(scorer: Scorer, query: str, documents: Sequence[str], top_k: int | None = None,
         first_stage: Sequence[float | None] | None = None) -> list[Ranked]:
    """One list scored by any Scorer (:meth:`Scorer.score_candidates` on :func:`one_list`): the documents'
    positions and scores, best first, the top ``top_k`` when given. What ``serve`` answers a request with."""
    check_top_k(top_k)
    cands = one_list(query, documents, first_stage)
    if not documents:
        return []
    run = scorer.score_candidates(cands)[REQUEST]
    return ranked(np.array([run[str(i)] for i in range(len(documents))], dtype=np.float64), top_k)

