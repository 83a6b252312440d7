"""The first stage as Scorers: BM25 (the order the candidates come in) and the training-free hybrid.

:class:`BM25Scorer` returns the candidates' first-stage scores (scale ``bm25``); the dense scorer is
:class:`finerank.retrieval.dense.BiEncoder` itself (scale ``cosine``); :class:`HybridScorer` is ``weight`` x
z-scored BM25 + (1 - ``weight``) x z-scored cosine, through the one :func:`finerank.retrieval.hybrid.fuse`
(scale ``zsum``). Without first-stage scores a strict scorer refuses the lists; a lenient one (a cascade's cheap
stage) uses their order in their place, and says so once.
"""

from __future__ import annotations

import logging

from ..core.errors import FinerankError
from ..core.records import Run
from ..data.candidates import Candidates
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import HYBRID_WEIGHT, fuse, hybrid_weights

log = logging.getLogger("finerank")


def first_stage_run(cands: Candidates, who: str, strict: bool, warned: list) -> Run:
    """The candidates' first-stage run; lists without scores refused (``strict``) or ranked by their order."""
    if not cands.scored and cands.docs:
        if strict:
            raise FinerankError(f"'{who}' needs first-stage (BM25) scores with the candidates",
                                hint="make the candidates with finerank data candidates (it writes BM25 scores)")
        if not warned:
            warned.append(True)
            log.warning("%s has no first-stage scores with these candidates: it uses their order (rank) in their "
                        "place", who)
    return cands.first_stage_run()


class BM25Scorer:
    """The first stage's own order: the BM25 scores the candidates carry (no model, no cost)."""

    name = "bm25"
    scale = "bm25"

    def __init__(self, *, strict: bool = True):
        self.strict = strict
        self._warned: list = [True]  # rank order is BM25's own order: nothing to warn about

    def describe(self) -> dict:
        return {"kind": "bm25", "scale": self.scale}

    def cost(self, cands: Candidates) -> int:
        return 0

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        return first_stage_run(cands, self.name, self.strict, self._warned)


class HybridScorer:
    """``weight`` x z-scored BM25 + (1 - ``weight``) x z-scored cosine of ``bi`` (a BiEncoder or a model name),
    within each list; no training."""

    scale = "zsum"

    def __init__(self, weight: float = HYBRID_WEIGHT, bi: BiEncoder | str = "minilm-l6", *, strict: bool = True):
        self.weights = hybrid_weights(float(weight))
        self.bi = bi if isinstance(bi, BiEncoder) else BiEncoder(bi)
        self.strict = strict
        self._warned: list = []

    @property
    def weight(self) -> float:
        return self.weights["bm25"]

    @property
    def name(self) -> str:
        return f"hybrid:{self.weight:g}@{self.bi.name}"

    def describe(self) -> dict:
        return {"kind": "hybrid", "scale": self.scale, "model": self.bi.name, "weight": self.weight,
                "bi_encoder": self.bi.describe()}

    def cost(self, cands: Candidates) -> int:
        return self.bi.cost(cands)

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        bm25 = first_stage_run(cands, "hybrid", self.strict, self._warned)
        return fuse({"bm25": bm25, "bi": self.bi.score_candidates(cands, progress=progress)}, self.weights)
