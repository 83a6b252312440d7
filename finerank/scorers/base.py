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

from typing import Protocol, runtime_checkable

from ..core.errors import FinerankError
from ..core.records import Run

# what a Scorer's scores are; each Scorer names one as its ``scale``
SCALES = {
    "bm25": "BM25 score of the first stage (unbounded, >= 0), or the list's rank order where scores are unknown",
    "cosine": "cosine of normalized embeddings, in [-1, 1]",
    "sigmoid": "the cross-encoder's logit through a sigmoid, in [0, 1] (binary cross-entropy, a fresh head)",
    "logit": "the cross-encoder's raw logit, unbounded (LambdaLoss, or a model saved without an activation)",
    "zsum": "a weighted sum of per-list z-scores, unbounded, about [-3, 3]; comparable only within one list",
    "cascade": "the expensive stage's score on the head of each list; cut documents get values below it, in order",
}


@runtime_checkable
class Scorer(Protocol):
    """What every scorer offers."""

    name: str      # a short label for tables and logs
    scale: str     # a key of SCALES: what score_candidates returns

    def describe(self) -> dict:
        """Its kind and parts (models, weights, nested scorers), JSON-serialisable: what a card or a record names."""
        ...

    def cost(self, cands) -> int:
        """The model inputs (query-document pairs, or windows of long documents) scoring ``cands`` would run."""
        ...

    def score_candidates(self, cands, *, progress: bool = False) -> Run:
        """Every candidate list scored: query id -> doc id -> score (higher is better), on ``scale``."""
        ...


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise FinerankError(f"unknown score scale {scale!r}", hint=f"one of: {', '.join(SCALES)}")
    return scale

