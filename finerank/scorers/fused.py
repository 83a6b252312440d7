"""Score fusion: a weighted sum of per-query z-scored signals, weights chosen on validation queries only.

Signals: ``ce`` (the cross-encoder), ``bm25`` (the first stage's score, which comes in with the candidates) and
``bi`` (cosine of a bi-encoder's embeddings). ``hybrid`` is bm25 + bi with no training at all. A fusion that wins on
validation is saved beside the model as ``finerank.json``, so that evaluate, rerank and serve apply the same one.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.candidates import Candidates
from ..core.errors import FinerankError
from ..io.formats import write_json
from ..core.metrics import aggregate
from ..core.records import Run
from ..retrieval.bm25 import as_collection, candidates as bm25_run, index_for
from ..retrieval.dense import BiEncoder

SPEC_FILE = "finerank.json"


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 1e-12 else np.zeros_like(v)


def zscore(scores: dict[str, float]) -> dict[str, float]:
    """Scores of one query's list, centred and scaled; a constant list becomes all zeros."""
    if not scores:
        return {}
    return dict(zip(scores, _z(np.fromiter(scores.values(), dtype=float)).tolist()))


def fuse(runs: dict[str, Run], weights: dict[str, float]) -> Run:
    """Σ weight · zscore(signal) per query, over the documents of the first signal's lists.

    THE fused score: the hybrid baseline, fusion tuning, the benchmark and a served model's :class:`Fuser` all
    compute it here."""
    active = {k: w for k, w in weights.items() if w}
    first = runs[next(iter(active))] if active else next(iter(runs.values()))
    out: Run = {}
    for qid, docs in first.items():
        total = dict.fromkeys(docs, 0.0)
        for name, w in active.items():
            z = zscore(runs[name].get(qid, {}))
            for d in total:
                total[d] += w * z.get(d, 0.0)
        out[qid] = total
    return out


def simplex(signals: list[str], step: float = 0.1) -> list[dict[str, float]]:
    """Every weighting of ``signals`` on a grid of ``step`` whose weights sum to 1."""
    n = round(1 / step)
    grid = []
    for parts in itertools.product(range(n + 1), repeat=len(signals)):
        if sum(parts) == n:
            grid.append({s: p / n for s, p in zip(signals, parts)})
    return grid


def tune(runs: dict[str, Run], qrels: dict[str, dict[str, int]], signals: list[str], *, metric: str = "nDCG@10",
         step: float = 0.1) -> tuple[dict[str, float], float]:
    """The weights (summing to 1) that maximise ``metric`` over the given (validation) queries."""
    best, best_value = None, -1.0
    z = {s: {q: zscore(d) for q, d in runs[s].items()} for s in signals}
    for w in simplex(signals, step):
        value = aggregate(qrels, fuse(z, w), [metric])[metric]
        if value > best_value + 1e-9:
            best, best_value = w, value
    return best, best_value


@dataclass
class FusionSpec:
    """How a saved model's scores are combined with the first stage's and a bi-encoder's at rerank time."""

    weights: dict[str, float]
    bi_encoder: str | None = None
    tuned_on: dict = field(default_factory=dict)
    normalize: str = "zscore"

    def save(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / SPEC_FILE
        data = json.loads(path.read_text()) if path.exists() else {}
        data["fusion"] = asdict(self)
        write_json(path, data)

    @classmethod
    def load(cls, model_dir: str | Path) -> "FusionSpec | None":
        path = Path(model_dir) / SPEC_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text()).get("fusion")
        return cls(**data) if data else None


def fit(cands: Candidates, ce_run: Run, *, bi_encoder: str | BiEncoder = "minilm-l6", metric: str = "nDCG@10",
        step: float = 0.1) -> tuple[FusionSpec | None, dict]:
    """Tune fusion weights of (ce, bm25, bi) on validation candidate lists that carry first-stage scores.

    Returns the spec when fusion beats the cross-encoder alone on these queries (else None), and what was measured:
    ``{"queries", "systems": {"cross-encoder" | "fusion" | "hybrid": {metric: value}}, "weights": {"fusion" |
    "hybrid": {signal: weight}}}`` (the hybrid is bm25 + bi, no training)."""
    if not cands.scored:
        return None, {"skipped": "the validation candidates carry no first-stage scores"}
    bi = bi_encoder if isinstance(bi_encoder, BiEncoder) else BiEncoder(bi_encoder)
    runs = {"ce": ce_run, "bm25": cands.first_stage_run(), "bi": bi.score_candidates(cands)}
    alone = aggregate(cands.qrels, ce_run, [metric])[metric]
    weights, fused = tune(runs, cands.qrels, ["ce", "bm25", "bi"], metric=metric, step=step)
    hybrid_w, hybrid = tune(runs, cands.qrels, ["bm25", "bi"], metric=metric, step=step)
    info = {"queries": len(cands.qrels),
            "systems": {"cross-encoder": {metric: alone}, "fusion": {metric: fused}, "hybrid": {metric: hybrid}},
            "weights": {"fusion": weights, "hybrid": hybrid_w}}
    if fused <= alone + 1e-9 or not weights.get("ce"):
        return None, info
    return FusionSpec(weights, bi.name if weights.get("bi") else None, tuned_on=info), info


class Fuser:
    """Applies a saved FusionSpec to a flat list of (query, document) pairs: pairs with the same query text form
    one candidate list, and :func:`fuse` combines the z-scored signals within it.

    Without first-stage scores (a caller that sends none), the bm25 term is left out and a warning is logged once.
    """

    def __init__(self, spec: FusionSpec):
        self.spec = spec
        self.bi = BiEncoder(spec.bi_encoder or "minilm-l6")
        self.warned = False

    def __call__(self, pairs, ce: np.ndarray, first_stage=None) -> np.ndarray:
        weights = {k: w for k, w in self.spec.weights.items() if w}
        signals = {"ce": np.asarray(ce, dtype=float)}
        if weights.get("bm25"):
            if first_stage is None or any(s is None for s in first_stage):
                weights.pop("bm25")
                if not self.warned:
                    logging.getLogger("finerank").warning(
                        "this model fuses its scores with first-stage (BM25) scores, but none came with the "
                        "candidates: ranking with the other signals only")
                    self.warned = True
            else:
                signals["bm25"] = np.asarray(first_stage, dtype=float)
        if weights.get("bi"):
            signals["bi"] = self.bi.score(pairs)
        runs: dict[str, Run] = {name: {} for name in weights}
        for name in weights:
            for i, (q, _) in enumerate(pairs):
                runs[name].setdefault(q, {})[i] = float(signals[name][i])
        fused = fuse(runs, weights)
        return np.fromiter((fused[q][i] for i, (q, _) in enumerate(pairs)), dtype=np.float32, count=len(pairs))


# ----------------------------------------------------------------------------------- first-stage retrieval
HYBRID_WEIGHT = 0.3  # BM25's weight in the training-free hybrid (evaluate's default, data candidates')
RETRIEVERS = "bm25, dense:MODEL or hybrid:MODEL"


def parse_retriever(spec: str) -> tuple[str, str | None]:
    """``bm25`` -> ("bm25", None); ``dense:MODEL`` / ``hybrid:MODEL`` -> (kind, MODEL): an embedding model's name,
    folder, or a finerank run folder of ``train --arch bi-encoder`` (its ``best/``)."""
    kind, _, model = str(spec).partition(":")
    if kind == "bm25" and not model:
        return "bm25", None
    if kind in ("dense", "hybrid") and model:
        return kind, model
    raise FinerankError(f"unknown retriever '{spec}'", hint=f"choose {RETRIEVERS} (e.g. dense:minilm-l6, "
                                                          "hybrid:runs/bi)")


def retrieve(collection, retriever: str = "bm25", *, top_k: int = 100, query_ids=None,
             weight: float = HYBRID_WEIGHT, bi: BiEncoder | None = None,
             show_progress: bool = False) -> tuple[Run, Run]:
    """Each query's ``top_k`` documents of the whole corpus, best first, and BM25's score of each of them.

    ``bm25``: BM25 (:mod:`finerank.retrieval.bm25`). ``dense:MODEL``: exact cosine over every document
    (:meth:`BiEncoder.search`: the corpus's embeddings in memory, N x 384 float32 for minilm-l6, about 460 MB for
    300,000 documents). ``hybrid:MODEL``: ``weight`` x z-scored BM25 + (1 - ``weight``) x z-scored cosine
    (:func:`fuse`) over the union of both retrievers' top max(``top_k``, 100), the best ``top_k`` kept."""
    kind, model = parse_retriever(retriever)
    coll = as_collection(collection)
    if top_k < 1:
        raise FinerankError(f"top_k must be at least 1, got {top_k}")
    queries = coll.queries if query_ids is None else {q: coll.queries[q] for q in query_ids}
    index = index_for(coll.corpus, show_progress=show_progress)
    if kind == "bm25":
        run = bm25_run(coll, top_k=top_k, query_ids=list(queries), index=index, show_progress=show_progress)
        return run, run
    bi = bi or BiEncoder(model)
    pos = {d: i for i, d in enumerate(index.doc_ids)}
    if kind == "dense":
        run = bi.search(queries, coll.corpus, top_k, progress=show_progress)
        bm25 = {}
        for q, docs in run.items():
            s = index.scores(queries[q])
            bm25[q] = {d: float(s[pos[d]]) for d in docs}
        return run, bm25
    width = max(top_k, 100)
    lexical = bm25_run(coll, top_k=width, query_ids=list(queries), index=index, show_progress=show_progress)
    dense = bi.search(queries, coll.corpus, width, progress=show_progress)
    ids, matrix = bi.corpus_matrix(coll.corpus)
    at = {d: i for i, d in enumerate(ids)}
    qv = dict(zip(queries, bi.encode(list(queries.values()))))
    runs: dict[str, Run] = {"bm25": {}, "bi": {}}
    for q, text in queries.items():
        pool = list(dict.fromkeys([*lexical.get(q, {}), *dense.get(q, {})]))
        s = index.scores(text)
        runs["bm25"][q] = {d: float(s[pos[d]]) for d in pool}
        cos = matrix[[at[d] for d in pool]] @ qv[q] if pool else np.zeros(0, dtype=np.float32)
        runs["bi"][q] = dict(zip(pool, cos.tolist()))
    fused = fuse(runs, {"bm25": weight, "bi": 1 - weight})
    run = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]) for q, docs in fused.items()}
    return run, {q: {d: runs["bm25"][q][d] for d in docs} for q, docs in run.items()}


def retriever(spec: str, *, top_k: int = 100, weight: float = HYBRID_WEIGHT, show_progress: bool = False):
    """A function (collection, query_ids) -> :func:`retrieve`'s (run, BM25 scores), for
    :func:`finerank.retrieval.bm25.write_candidates`; the spec is checked now, the model loads when it runs."""
    parse_retriever(spec)
    return lambda coll, query_ids: retrieve(coll, spec, top_k=top_k, query_ids=query_ids, weight=weight,
                                            show_progress=show_progress)
