"""A fused model: a cross-encoder's scores fused with the first stage's (BM25) and a bi-encoder's cosine.

Signals: ``ce`` (the cross-encoder), ``bm25`` (the first stage's score, which comes in with the candidates) and
``bi`` (cosine of a bi-encoder's embeddings), z-scored within each list and summed with the weights that
:func:`finerank.training.fit.fit` chose on validation queries and saved beside the model in ``finerank.json``
(key ``fusion``, read by :mod:`finerank.scorers.spec`). :meth:`Fuser.apply` is THE one code path that fuses: a
:class:`FusedScorer` and a :class:`~finerank.scorers.cross_encoder.Reranker` loaded with its fusion both go through
it, and it sums through :func:`finerank.retrieval.hybrid.fuse`. The fused score's scale is ``zsum``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ModelError
from ..core.records import Run
from ..data.candidates import Candidates
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import fuse
from .base import Scorer
from .spec import read_model_spec, save_part

SIGNALS = ("ce", "bm25", "bi")


@dataclass
class FusionSpec:
    """How a saved model's scores are combined with the first stage's and a bi-encoder's at rerank time."""

    weights: dict[str, float]
    bi_encoder: str | None = None
    tuned_on: dict = field(default_factory=dict)
    normalize: str = "zscore"

    def save(self, model_dir: str | Path) -> None:
        save_part(model_dir, "fusion", asdict(self))

    @classmethod
    def from_dict(cls, data: dict | None, path=None) -> "FusionSpec | None":
        """The spec of a ``fusion`` part (None: none saved); a part that is not a fusion is a ModelError."""
        if not data:
            return None
        try:
            spec = cls(**data)
        except TypeError as e:
            raise ModelError(f"{path or 'finerank.json'}: field 'fusion': not a fusion spec ({e})",
                             hint="train again, or delete the 'fusion' entry to use the cross-encoder alone") from None
        if not isinstance(spec.weights, dict) or any(k not in SIGNALS or isinstance(w, bool)
                                                     or not isinstance(w, (int, float)) or not math.isfinite(w)
                                                     for k, w in spec.weights.items()):
            raise ModelError(f"{path or 'finerank.json'}: field 'fusion.weights': got {spec.weights!r}, expected "
                             f"finite numbers for {', '.join(SIGNALS)}", hint="train again, or delete the 'fusion' entry")
        for key, ok, expected in (("bi_encoder", spec.bi_encoder is None or isinstance(spec.bi_encoder, str) and
                                   spec.bi_encoder.strip(), "a model name or folder"),
                                  ("tuned_on", isinstance(spec.tuned_on, dict), "a JSON object"),
                                  ("normalize", spec.normalize == "zscore", "'zscore'")):
            if not ok:
                raise ModelError(f"{path or 'finerank.json'}: field 'fusion.{key}': got "
                                 f"{getattr(spec, key)!r}, expected {expected}",
                                 hint="train again, or delete the 'fusion' entry")
        return spec

    @classmethod
    def load(cls, model_dir: str | Path) -> "FusionSpec | None":
        spec = read_model_spec(model_dir)
        return cls.from_dict(spec.fusion, spec.path)


class Fuser:
    """Applies a saved FusionSpec to candidate lists, given the cross-encoder's scores of them.

    Without first-stage scores (a caller that sends none), the bm25 term is left out and a warning is logged once.
    """

    def __init__(self, spec: FusionSpec, bi: BiEncoder | None = None):
        self.spec = spec
        self.bi = bi or BiEncoder(spec.bi_encoder or "minilm-l6")
        self.warned = False

    def apply(self, cands: Candidates, ce_run: Run) -> Run:
        """THE fused score of every candidate: Σ weight · zscore(signal) within each list."""
        weights = {k: w for k, w in self.spec.weights.items() if w}
        runs: dict[str, Run] = {"ce": ce_run}
        if weights.get("bm25"):
            if cands.scored:
                runs["bm25"] = cands.first_stage_run()
            else:
                weights.pop("bm25")
                if not self.warned:
                    logging.getLogger("finerank").warning(
                        "this model fuses its scores with first-stage (BM25) scores, but none came with the "
                        "candidates: ranking with the other signals only")
                    self.warned = True
        if weights.get("bi"):
            runs["bi"] = self.bi.score_candidates(cands)
        return fuse(runs, weights)

    def __call__(self, pairs, ce: np.ndarray, first_stage=None) -> np.ndarray:
        """:meth:`apply` over a flat list of (query, document) pairs: pairs with the same query text form one list."""
        qids: dict[str, str] = {}
        cands = Candidates({}, {}, {}, {}, "pairs")
        ce_run: Run = {}
        for i, (q, d) in enumerate(pairs):
            qid = qids.setdefault(q, str(len(qids)))
            cands.queries[qid] = q
            cands.docs.setdefault(qid, []).append((str(i), d))
            ce_run.setdefault(qid, {})[str(i)] = float(ce[i])
            if first_stage is not None and first_stage[i] is not None:
                cands.first_stage.setdefault(qid, {})[str(i)] = float(first_stage[i])
        fused = self.apply(cands, ce_run)
        return np.fromiter((fused[qids[q]][str(i)] for i, (q, _) in enumerate(pairs)), dtype=np.float32,
                           count=len(pairs))


class FusedScorer:
    """A cross-encoder (any Scorer on its own scale; a :class:`Reranker` loaded with ``fuse=False``) fused with BM25
    and a bi-encoder by a saved :class:`FusionSpec` (scale ``zsum``)."""

    scale = "zsum"

    def __init__(self, ce: Scorer, spec: FusionSpec, bi: BiEncoder | None = None):
        self.ce = ce
        self.fuser = Fuser(spec, bi)

    @property
    def name(self) -> str:
        return self.ce.name

    @property
    def model_dir(self):
        return getattr(self.ce, "model_dir", None)

    def describe(self) -> dict:
        weights = {k: w for k, w in self.fuser.spec.weights.items() if w}
        return {**self.ce.describe(), "kind": "fused", "scale": self.scale,
                "fusion": {"weights": weights, "bi_encoder": self.fuser.bi.name if weights.get("bi") else None}}

    def _bi_cost(self) -> int:
        return int(bool(self.fuser.spec.weights.get("bi")))  # one bi-encoder input a candidate, when it counts

    def cost(self, cands: Candidates) -> int:
        return self.ce.cost(cands) + self._bi_cost() * cands.n_pairs

    def costs(self, cands: Candidates) -> list[int] | None:
        per = getattr(self.ce, "costs", None)
        return None if per is None else [n + self._bi_cost() for n in per(cands)]

    def min_costs(self, cands: Candidates) -> list[int] | None:
        per = getattr(self.ce, "min_costs", None)
        return None if per is None else [n + self._bi_cost() for n in per(cands)]

    def min_cost(self, cands: Candidates) -> int | None:
        per = self.min_costs(cands)
        return None if per is None else sum(per)

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        return self.fuser.apply(cands, self.ce.score_candidates(cands, progress=progress))
