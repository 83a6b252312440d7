"""Cascade reranking: spend the expensive scorer (a cross-encoder) only on the head of each list.

Stages: the first stage's order (the candidates' order, BM25's in ``data candidates``) -> keep its top ``n1`` ->
a cheap Scorer (``bm25``: the first stage's own order, no model; ``bi``: the bi-encoder; ``hybrid``: ``w`` x
z-scored first-stage score + (1-w) x z-scored bi-encoder cosine, :class:`finerank.scorers.first_stage.HybridScorer`)
-> keep its top ``n2`` -> the expensive Scorer (a cross-encoder, with the model's saved fusion, if any).

:meth:`Cascade.score_candidates` returns a run over every candidate it was given and scores no other document
(scale ``cascade``): the ``n2`` kept documents carry the expensive scorer's scores; below them, strictly, come the
documents the cheap stage cut (in its order), then those the first stage cut (in its order); their scores are
placeholders that only fix that order (``lowest kept score - 1 - position``).

A cascade is saved beside the model in ``finerank.json`` (key ``cascade``, next to ``fusion``);
:func:`finerank.scorers.load.load_scorer` builds it. :func:`finerank.training.fit.tune_cascade` chooses the
cut-offs on validation lists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import FinerankError, ModelError
from ..core.records import Run
from ..data.candidates import Candidates
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import HYBRID_WEIGHT
from .base import Scorer
from .first_stage import BM25Scorer, HybridScorer
from .spec import SPEC_FILE, read_model_spec, save_part

CHEAP = ("bm25", "bi", "hybrid")


# ------------------------------------------------------------------------------------------------ the spec
@dataclass
class CascadeSpec:
    """The cut-offs: ``n1`` documents of the first stage go to the cheap scorer (None = all), its best ``n2`` to the
    cross-encoder (None = all: the full rerank). ``cheap``: bm25, bi or hybrid (``hybrid_weight`` on the first
    stage). ``tuned_on``: what chose it (queries, tolerance, the measured setting)."""

    n2: int | None
    n1: int | None = None
    cheap: str = "bm25"
    bi_encoder: str = "minilm-l6"
    hybrid_weight: float = HYBRID_WEIGHT
    tolerance: float | None = None
    tuned_on: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.cheap not in CHEAP:
            raise FinerankError(f"unknown cheap scorer '{self.cheap}'", hint=f"choose one of: {', '.join(CHEAP)}")
        for name in ("n1", "n2"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise FinerankError(f"cascade {name} must be a positive integer or None, got {v!r}")
        if self.cheap == "bm25":
            self.n1 = None  # no model in the cheap stage: nothing to cut before it
        if self.n1 is not None and self.n2 is not None and self.n2 > self.n1:
            raise FinerankError(f"cascade n2 ({self.n2}) is larger than n1 ({self.n1})",
                                hint="the cross-encoder sees at most what the cheap stage kept")
        if not 0.0 <= self.hybrid_weight <= 1.0:
            raise FinerankError(f"hybrid_weight must be in [0, 1], got {self.hybrid_weight}")

    @property
    def full(self) -> bool:
        return self.n2 is None

    def label(self) -> str:
        if self.full:
            return "full rerank"
        return f"{self.cheap}" + (f" top {self.n1}" if self.n1 else "") + f" -> cross-encoder top {self.n2}"

    def to_dict(self) -> dict:
        return asdict(self)

    def cheap_scorer(self, bi: BiEncoder | None = None) -> Scorer:
        """The cheap stage as a Scorer (lenient: lists without first-stage scores go by their order);
        ``bi``: the bi-encoder to use (default: ``bi_encoder``, loaded on first use)."""
        if self.cheap == "bm25":
            return BM25Scorer(strict=False)
        bi = bi or BiEncoder(self.bi_encoder)
        return bi if self.cheap == "bi" else HybridScorer(self.hybrid_weight, bi, strict=False)

    def save(self, model_dir: str | Path) -> Path:
        """Write the spec into ``model_dir/finerank.json`` (key ``cascade``), atomically, keeping every other key."""
        return save_part(model_dir, "cascade", self.to_dict())[0]

    @classmethod
    def from_dict(cls, data: dict | None, path=None) -> "CascadeSpec | None":
        """The spec of a ``cascade`` part (None: none saved); a part that is not a cascade is a ModelError."""
        if not data:
            return None
        try:
            return cls(**data)
        except (TypeError, FinerankError) as e:
            raise ModelError(f"{path or 'finerank.json'}: field 'cascade': not a cascade spec "
                             f"({getattr(e, 'message', e)})",
                             hint="tune it again with finerank cascade tune --save") from None

    @classmethod
    def load(cls, model_dir: str | Path) -> "CascadeSpec | None":
        spec = read_model_spec(model_dir)
        return cls.from_dict(spec.cascade, spec.path)

    @staticmethod
    def remove(model_dir: str | Path) -> bool:
        """Take the cascade out of ``model_dir/finerank.json`` (other keys stay); whether there was one."""
        if not (Path(model_dir) / SPEC_FILE).exists():
            return False
        return save_part(model_dir, "cascade", None)[1]


# ------------------------------------------------------------------------------------------------ the cascade
class Cascade:
    """``spec``'s stages: ``cheap`` (a Scorer; default the spec's) on the first stage's top ``n1``, ``expensive``
    (a Scorer: the cross-encoder, with its fusion if any) on the cheap scorer's top ``n2``.

    ``stats`` counts ``ce_pairs`` (documents the expensive scorer scored), ``skipped`` (documents it did not) and
    ``cheap_docs`` (documents a cheap model scored)."""

    scale = "cascade"

    def __init__(self, spec: CascadeSpec, expensive: Scorer, cheap: Scorer | None = None):
        self.spec = spec
        self.expensive = expensive
        self.cheap = cheap if cheap is not None else spec.cheap_scorer()
        self.stats = {"ce_pairs": 0, "skipped": 0, "cheap_docs": 0}

    @property
    def name(self) -> str:
        return self.expensive.name

    def describe(self) -> dict:
        """The expensive scorer's description, with the cut-offs (``cascade``) and the cheap stage (``cheap``)."""
        return {**self.expensive.describe(), "kind": "cascade", "scale": self.scale,
                "cascade": {k: v for k, v in self.spec.to_dict().items() if k != "tuned_on"},
                "cheap": self.cheap.describe()}

    def ce_pairs(self, n: int) -> int:
        """Documents of a list of ``n`` that the expensive scorer scores."""
        return min(n, *(v for v in (self.spec.n1, self.spec.n2) if v is not None)) if not self.spec.full else n

    # ------------------------------------------------------------------------------------------- cost
    def _head_cost(self, cands: Candidates, per: list[int]) -> int:
        """The expensive stage's cost at most: each list's ``ce_pairs`` costliest documents."""
        total, at = 0, 0
        for ds in cands.docs.values():
            costs = sorted(per[at: at + len(ds)], reverse=True)
            total += sum(costs[: self.ce_pairs(len(ds))])
            at += len(ds)
        return total

    def cost(self, cands: Candidates) -> int:
        """Model inputs at most: the cheap stage's on the lists it cuts, the expensive one's on each list's
        costliest head (which head the cheap stage keeps is known only once it ran)."""
        if self.spec.full:
            return self.expensive.cost(cands)
        stage1 = cands.top(self.spec.n1) if self.spec.n1 else cands
        long = stage1.subset([q for q, ds in stage1.docs.items() if len(ds) > self.spec.n2])
        cheap = self.cheap.cost(long) if long.docs else 0
        costs = getattr(self.expensive, "costs", None)
        per = costs(cands) if costs is not None else None
        if per is None:  # a scorer without per-document costs: its cost on the first stage's heads
            return cheap + self.expensive.cost(cands.top(self.spec.n2))
        return cheap + self._head_cost(cands, per)

    def min_cost(self, cands: Candidates) -> int | None:
        """:meth:`cost`'s bound without a tokenizer, on each list's head (None when the expensive scorer has none)."""
        bound = getattr(self.expensive, "min_costs", None)
        per = bound(cands) if bound is not None else None
        return None if per is None else self._head_cost(cands, per)

    # ------------------------------------------------------------------------------------------- scoring
    def _order(self, stage1: Candidates) -> dict[str, list[str]]:
        """Each list's documents in the cheap stage's order (lists no longer than ``n2`` keep theirs)."""
        long = stage1.subset([q for q, ds in stage1.docs.items() if len(ds) > self.spec.n2])
        cheap = self.cheap.score_candidates(long) if long.docs else {}
        if long.docs and self.cheap.cost(long):
            self.stats["cheap_docs"] += long.n_pairs
        order = {}
        for q, ds in stage1.docs.items():
            pos = {d: i for i, (d, _) in enumerate(ds)}
            order[q] = sorted(pos, key=lambda d: (-cheap[q][d], pos[d])) if q in cheap else list(pos)
        return order

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        """Every candidate of every list scored (query id -> doc id -> score); the expensive scorer scores only each
        list's ``n2`` kept documents, which rank above the rest."""
        spec = self.spec
        if spec.full:
            run = self.expensive.score_candidates(cands, progress=progress)
            self.stats["ce_pairs"] += cands.n_pairs
            return run
        stage1 = cands.top(spec.n1) if spec.n1 else cands
        order = self._order(stage1)
        keep = {q: set(o[: spec.n2]) for q, o in order.items()}
        kept = Candidates(cands.queries, {q: [(d, t) for d, t in ds if d in keep[q]] for q, ds in stage1.docs.items()},
                          {q: {d: s for d, s in sc.items() if d in keep[q]}
                           for q, sc in cands.first_stage.items() if q in keep},
                          cands.qrels, cands.source)
        scored = self.expensive.score_candidates(kept, progress=progress)
        run: Run = {}
        for q in cands.docs:
            scores = dict(scored.get(q, {}))
            floor = min(scores.values()) if scores else 0.0
            below = order[q][spec.n2:] + [d for d, _ in cands.docs[q][len(stage1.docs[q]):]]
            for i, d in enumerate(below):
                scores[d] = floor - 1.0 - i
            run[q] = scores
        self.stats["ce_pairs"] += kept.n_pairs
        self.stats["skipped"] += cands.n_pairs - kept.n_pairs
        return run


def ce_pairs(scorer, n: int) -> int:
    """Documents of an ``n``-document list that ``scorer`` runs its expensive model on (a Cascade's head, or all)."""
    return scorer.ce_pairs(n) if isinstance(scorer, Cascade) else n
