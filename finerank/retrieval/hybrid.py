"""Run fusion and first-stage retrieval over a corpus: BM25, dense, and the training-free hybrid.

A fused score is a weighted sum of per-query z-scored signals (:func:`fuse`); :func:`tune` chooses the weights on
validation queries. The hybrid is ``HYBRID_WEIGHT`` x z-scored BM25 + (1 - ``HYBRID_WEIGHT``) x z-scored cosine of a
bi-encoder (:class:`finerank.retrieval.dense.BiEncoder`), with no training. :func:`retrieve` fetches each query's
top documents of a whole corpus with ``bm25``, ``dense:MODEL`` or ``hybrid:MODEL``.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core.errors import FinerankError
from ..core.metrics import aggregate
from ..core.records import Run
from .bm25 import as_collection, candidates as bm25_run, index_for
from .dense import BiEncoder

HYBRID_WEIGHT = 0.3  # BM25's weight in the training-free hybrid (evaluate's, data candidates', a cascade's default)
RETRIEVERS = "bm25, dense:MODEL or hybrid:MODEL"


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

    THE fused score: the hybrid, fusion tuning, the benchmark and a served model's fusion all compute it here."""
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


def hybrid_weights(weight: float = HYBRID_WEIGHT) -> dict[str, float]:
    """The hybrid's weights: ``weight`` on BM25, the rest on the bi-encoder's cosine."""
    if not 0.0 <= weight <= 1.0:
        raise FinerankError(f"the hybrid's BM25 weight must be in [0, 1], got {weight}")
    return {"bm25": weight, "bi": 1.0 - weight}


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


# ----------------------------------------------------------------------------------- first-stage retrieval
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


def _bm25_of(index, queries: dict[str, str], pools: dict[str, list[str]]) -> Run:
    """BM25's score of each query's ``pools`` documents."""
    pos = {d: i for i, d in enumerate(index.doc_ids)}
    out: Run = {}
    for q, docs in pools.items():
        s = index.scores(queries[q])
        out[q] = {d: float(s[pos[d]]) for d in docs}
    return out


def _hybrid(coll, queries: dict[str, str], index, bi: BiEncoder, top_k: int, weight: float,
            show_progress: bool) -> tuple[Run, Run]:
    width = max(top_k, 100)
    lexical = bm25_run(coll, top_k=width, query_ids=list(queries), index=index, show_progress=show_progress)
    dense = bi.search(queries, coll.corpus, width, progress=show_progress)
    ids, matrix = bi.corpus_matrix(coll.corpus)
    at = {d: i for i, d in enumerate(ids)}
    qv = dict(zip(queries, bi.encode(list(queries.values()))))
    pools = {q: list(dict.fromkeys([*lexical.get(q, {}), *dense.get(q, {})])) for q in queries}
    runs: dict[str, Run] = {"bm25": _bm25_of(index, queries, pools), "bi": {}}
    for q, pool in pools.items():
        cos = matrix[[at[d] for d in pool]] @ qv[q] if pool else np.zeros(0, dtype=np.float32)
        runs["bi"][q] = dict(zip(pool, cos.tolist()))
    fused = fuse(runs, hybrid_weights(weight))
    run = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]) for q, docs in fused.items()}
    return run, {q: {d: runs["bm25"][q][d] for d in docs} for q, docs in run.items()}


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
    if kind == "dense":
        run = bi.search(queries, coll.corpus, top_k, progress=show_progress)
        return run, _bm25_of(index, queries, {q: list(docs) for q, docs in run.items()})
    return _hybrid(coll, queries, index, bi, top_k, weight, show_progress)


def retriever(spec: str, *, top_k: int = 100, weight: float = HYBRID_WEIGHT, show_progress: bool = False):
    """A function (collection, query_ids) -> :func:`retrieve`'s (run, BM25 scores), for
    :func:`finerank.retrieval.mine.write_candidates`; the spec is checked now, the model loads when it runs."""
    parse_retriever(spec)
    return lambda coll, query_ids: retrieve(coll, spec, top_k=top_k, query_ids=query_ids, weight=weight,
                                            show_progress=show_progress)
