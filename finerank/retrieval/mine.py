"""Data work over a collection's first stage: candidate lists as pairs files, and hard-negative mining.

Ranks are 1-based. :func:`mine` samples negatives from the retriever's ranks ``ranks=(lo, hi)`` inclusive,
never a document judged relevant (label > 0) for the query, and never one already judged (judged documents are
in the output with their own labels).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from ..core.errors import FinerankError
from ..core.records import Collection, Pair, Run
from ..core.text import normalize_query
from ..io.collection import load
from ..io.models import load_bi_encoder
from ..io.outputs import check_outputs, write_pairs, written_together
from ..io.runs import write_trec_run
from .bm25 import BM25Index, as_collection, candidates, index_for, run_metrics, select_queries


# ----------------------------------------------------------------------------------------------- inputs
def query_ids_of(pairs_file, collection: Collection, max_label: float | None = 4.0) -> list[str]:
    """The collection's query ids that a pairs file (e.g. DIR/train.jsonl from ``data split``) holds, matched by
    id, or else by normalized query text (its labels checked against ``max_label``, as every loader does)."""
    ds = load(pairs_file, max_label=max_label)
    wanted = list(ds.queries.items())
    by_text = {normalize_query(t): q for q, t in collection.queries.items()}
    out, missing = [], []
    for qid, text in wanted:
        if qid in collection.queries:
            out.append(qid)
        elif normalize_query(text) in by_text:
            out.append(by_text[normalize_query(text)])
        else:
            missing.append(qid)
    if not out:
        raise FinerankError(f"{pairs_file}: none of its {len(wanted)} queries is in {collection.name or 'the collection'}",
                            hint="use a pairs file made from the same collection (and the same --split)")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- candidates
def candidate_pairs(collection, run: Run, scores: Run | None = None) -> list[Pair]:
    """The run as pairs, in rank order per query: label = the judged grade (0 when unjudged), score = the run's
    (BM25's), or ``scores``' where given (a dense or hybrid run's lists carrying BM25's scores)."""
    coll = as_collection(collection)
    pairs = []
    for qid, docs in run.items():
        judged = coll.qrels.get(qid, {})
        for did, score in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])):
            if scores is not None:
                score = scores[qid][did]
            pairs.append(Pair(qid, coll.queries[qid], did, coll.corpus[did].full_text,
                              float(judged.get(did, 0)), float(score)))
    return pairs


def write_candidates(collection, out, *, run_file=None, top_k: int = 100, query_ids: Iterable[str] | None = None,
                     show_progress: bool = False, inputs=(), retriever=None, tag: str = "bm25") -> dict:
    """BM25 top-k of each query written as a pairs JSONL (``out``: label = judged grade, 0 when unjudged; score =
    BM25) and a TREC run (``run_file``, default ``out`` with the suffix ``.trec``); returns what was written and
    BM25's metrics. The outputs are checked first: neither may be an input (``collection`` as a path, ``inputs``)
    nor the other; they land together. ``retriever``, a function (collection, query_ids) -> (run, BM25 scores of
    its documents) such as :func:`finerank.retrieval.hybrid.retriever`, replaces BM25's lists and order (the TREC
    run is the retriever's, tagged ``tag``); each pair's score stays BM25's."""
    out = Path(out)
    if out.suffix.lower() in (".trec", ".run"):
        raise FinerankError(f"--out {out}: --out takes the pairs JSONL", hint="name the run with --run FILE.trec")
    run_file = Path(run_file) if run_file else out.with_suffix(".trec")
    check_outputs([out, run_file], [collection if isinstance(collection, (str, Path)) else None, *inputs])
    coll = as_collection(collection)
    if retriever is None:
        run, bm25_scores = candidates(coll, top_k=top_k, query_ids=query_ids, show_progress=show_progress), None
    else:
        run, bm25_scores = retriever(coll, query_ids)
    pairs = candidate_pairs(coll, run, bm25_scores)
    with written_together():  # both files or neither
        write_pairs(out, pairs)
        write_trec_run(run_file, run, tag=tag)
    return {"collection": coll.name, "queries": len(run), "pairs": len(pairs), "top_k": top_k, "retriever": tag,
            "pairs_file": str(out), "run_file": str(run_file),
            "metrics": run_metrics(run, {q: coll.qrels.get(q, {}) for q in run})}

# ------------------------------------------------------------------------------------------------ mining
def _check_ranks(ranks: tuple[int, int], negatives: int) -> tuple[int, int]:
    lo, hi = int(ranks[0]), int(ranks[1])
    if lo < 1 or hi < lo:
        raise FinerankError(f"ranks must be 1 <= lo <= hi, got {lo}-{hi}", hint="e.g. --ranks 3-50")
    if negatives < 0:
        raise FinerankError(f"negatives must be >= 0, got {negatives}")
    return lo, hi


def parse_ranks(text: str) -> tuple[int, int]:
    """'3-50' -> (3, 50)."""
    try:
        lo, hi = (int(x) for x in str(text).replace(":", "-").split("-"))
    except ValueError:
        raise FinerankError(f"--ranks: got '{text}', expected LO-HI such as 3-50") from None
    return _check_ranks((lo, hi), 0)


CROSS_QUERY_NEGATIVES = 0  # default of mine(cross_query_negatives=...): off until measured (issue 13)
BALANCED = True  # default of mine(balanced=...): measured on MEDLINE (benchmarks/README.md, "Query dependence")


def mine(collection, *, query_ids: Iterable[str] | None = None, negatives: int = 4,
         ranks: tuple[int, int] = (3, 50), model=None, seed: int = 42, index: BM25Index | None = None,
         show_progress: bool = False, positives: str = "all",
         cross_query_negatives: int = CROSS_QUERY_NEGATIVES, balanced: bool = BALANCED) -> list[Pair]:
    """Training pairs: each query's judged documents with their labels, then ``negatives`` label-0 documents
    sampled at random from the retriever's ranks ``ranks`` (1-based, inclusive) that are not judged for the query.

    The retriever is BM25, or with ``model`` (a sentence-transformers embedding model or its name, e.g.
    ``minilm-l6``) ``sentence_transformers.util.mine_hard_negatives``, which ranks only the documents that are not
    the query's positives. With BM25 each query's sample depends on ``seed`` and its id only. A negative's
    ``score`` is the retriever's; a judged document has BM25's score where BM25 ranked it within ``ranks[1]``,
    else None (always None for positives with ``model``).

    ``positives="retrieved"`` keeps only the relevant documents the retriever ranked within ``ranks[1]``: positives
    from the same lists as the negatives, so that "the retriever found it" cannot tell them apart (with all judged
    documents as positives and only retrieved ones as negatives, it could). Judged non-relevant documents are always
    kept. On MEDLINE it changed nothing measurable (benchmarks/README.md).

    ``cross_query_negatives`` more label-0 documents a query are drawn from the OTHER mined queries' positives
    (never a document judged for the query itself, score None): with a few queries over one shared corpus, a
    document that is only ever a positive teaches a cross-encoder to score documents instead of (query, document)
    pairs; as another query's negative it must look at the query (benchmarks/README.md, "query dependence").
    ``balanced`` (the default) then adds :func:`balancing_negatives`: every positive document also a negative of
    another mined query, as often as it is a positive (on MEDLINE: nDCG@10 0.060 -> 0.345, rank correlation under
    a wrong query 0.94 -> 0.67).
    """
    if positives not in ("all", "retrieved"):
        raise FinerankError(f"positives must be 'all' or 'retrieved', got '{positives}'")
    if cross_query_negatives < 0:
        raise FinerankError(f"cross_query_negatives must be >= 0, got {cross_query_negatives}")
    coll = as_collection(collection)
    lo, hi = _check_ranks(ranks, negatives)
    queries = select_queries(coll, query_ids)
    if model is None:
        index = index or index_for(coll.corpus, show_progress=show_progress)
        run = index.search(queries, hi, show_progress=show_progress)
        ranked = {q: sorted(d.items(), key=lambda kv: (-kv[1], kv[0])) for q, d in run.items()}
        windows = {q: r[lo - 1:hi] for q, r in ranked.items()}
        retrieved = {q: dict(r) for q, r in ranked.items()}
    else:
        windows = _dense_windows(coll, queries, lo, hi, model, negatives, seed, show_progress)
        retrieved = {q: dict(w) for q, w in windows.items()}

    pairs: list[Pair] = []
    for qid, text in queries.items():
        judged = coll.qrels.get(qid, {})
        seen = retrieved.get(qid, {})
        for did, label in judged.items():
            if positives == "retrieved" and label > 0 and did not in seen:
                continue
            pairs.append(Pair(qid, text, did, coll.corpus[did].full_text, float(label), seen.get(did)))
        pool = [(d, s) for d, s in windows.get(qid, []) if d not in judged]
        if model is not None:  # mine_hard_negatives already sampled; keep its picks
            chosen = pool[:negatives]
        else:
            rng = random.Random(f"{seed}:{qid}")
            chosen = sorted(rng.sample(range(len(pool)), min(negatives, len(pool))))
            chosen = [pool[i] for i in chosen]
        for did, score in chosen:
            pairs.append(Pair(qid, text, did, coll.corpus[did].full_text, 0.0, float(score)))
        if cross_query_negatives > 0:
            taken = set(judged) | {d for d, _ in chosen}
            others = sorted({d for q in queries if q != qid for d, g in coll.qrels.get(q, {}).items()
                             if g > 0 and d not in taken})
            rng = random.Random(f"{seed}:{qid}:cross")
            for did in rng.sample(others, min(cross_query_negatives, len(others))):
                pairs.append(Pair(qid, text, did, coll.corpus[did].full_text, 0.0, None))
    if balanced:
        pairs += balancing_negatives(pairs, judged=coll.qrels, seed=seed)
    return pairs


def balancing_negatives(pairs: list[Pair], *, judged: dict[str, dict] | None = None, seed: int = 42) -> list[Pair]:
    """Label-0 pairs that make every positive document as often a negative as a positive: for each positive (q, d)
    beyond d's label-0 pairs already there, the pair (q', d) with q' another query of ``pairs`` (drawn at random,
    seeded by q and d) for which d is neither in ``pairs`` nor judged (``judged``: qrels, when known). Then "was this
    document a positive?" predicts nothing, and a model has to read the query. Idempotent: balanced pairs get none.
    Documents of a query that holds every query's pairs for them get fewer (no query left to take them)."""
    queries = dict((p.query_id, p.query) for p in pairs)
    if len(queries) < 2:
        return []
    judged = judged or {}
    taken = {(p.query_id, p.doc_id) for p in pairs}
    need: dict[str, int] = defaultdict(int)
    for p in pairs:
        need[p.doc_id] += 1 if p.label > 0 else -1
    qids = list(queries)
    out = []
    for p in pairs:
        if p.label <= 0 or need[p.doc_id] <= 0:
            continue
        rng = random.Random(f"{seed}:{p.query_id}:{p.doc_id}:balance")
        for q in rng.sample(qids, len(qids)):
            if (q, p.doc_id) not in taken and p.doc_id not in judged.get(q, {}):
                out.append(Pair(q, queries[q], p.doc_id, p.document, 0.0, None))
                taken.add((q, p.doc_id))
                need[p.doc_id] -= 1
                break
    return out


def mined_counts(pairs: list[Pair], collection, negatives: int) -> dict[str, int]:
    """What :func:`mine` produced: queries, judged pairs, negatives from the retriever, negatives that are other
    queries' positives (cross-query, no retriever score), and queries short of ``negatives`` retrieved ones."""
    coll = as_collection(collection)
    per_q: dict[str, int] = defaultdict(int)
    cross = 0
    for p in pairs:
        if p.doc_id not in coll.qrels.get(p.query_id, {}):
            if p.score is None:
                cross += 1
            else:
                per_q[p.query_id] += 1
    queries = {p.query_id for p in pairs}
    mined = sum(per_q.values())
    return {"queries": len(queries), "judged": len(pairs) - mined - cross, "mined": mined, "cross_query": cross,
            "short": sum(1 for q in queries if per_q.get(q, 0) < negatives)}


def _dense_windows(coll: Collection, queries: dict[str, str], lo: int, hi: int, model, negatives: int,
                   seed: int, show_progress: bool) -> dict[str, list[tuple[str, float]]]:
    """Negatives per query from sentence-transformers' mine_hard_negatives (random sampling in ranks lo..hi)."""
    from datasets import Dataset as HFDataset
    from sentence_transformers.util import mine_hard_negatives

    if isinstance(model, (str, Path)):
        model = load_bi_encoder(str(model))
    anchors, positives = [], []
    for qid, text in queries.items():
        for did, label in coll.qrels.get(qid, {}).items():
            if label > 0:
                anchors.append(text)
                positives.append(coll.corpus[did].full_text)
    if not anchors or negatives == 0:
        return {}
    corpus_texts = [d.full_text for d in coll.corpus.values()]
    text_to_ids: dict[str, list[str]] = defaultdict(list)
    for did, doc in coll.corpus.items():
        text_to_ids[doc.full_text].append(did)
    hi = min(hi, len(set(corpus_texts)) - 1)
    num = min(negatives, hi - (lo - 1))
    if num < 1:
        return {}
    state = random.getstate()
    random.seed(seed)  # mine_hard_negatives samples with the global `random`
    try:
        mined = mine_hard_negatives(
            HFDataset.from_dict({"query": anchors, "document": positives}), model, corpus=corpus_texts,
            range_min=lo - 1, range_max=hi, num_negatives=num, sampling_strategy="random",
            output_format="labeled-pair", output_scores=True, verbose=show_progress,
        )
    finally:
        random.setstate(state)
    by_text: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for row in mined:
        for did in text_to_ids.get(row["document"], []):
            by_text[row["query"]].append((did, float(row["score"])))
    out: dict[str, list[tuple[str, float]]] = {}
    for qid, text in queries.items():
        judged_pos = {d for d, l in coll.qrels.get(qid, {}).items() if l > 0}
        # the positives come back too (labeled-pair format); a text shared by several ids maps to each
        out[qid] = [(d, s) for d, s in dict.fromkeys(by_text.get(text, [])) if d not in judged_pos]
    return out


def to_listwise(pairs: Iterable[Pair]) -> list[dict]:
    """One record per query (in first-seen order): query_id, query, doc_ids, documents, labels (and scores when
    every pair has one), for listwise losses."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.query_id, []).append(p)
    out = []
    for qid, ps in groups.items():
        rec = {"query_id": qid, "query": ps[0].query, "doc_ids": [p.doc_id for p in ps],
               "documents": [p.document for p in ps],
               "labels": [int(p.label) if float(p.label).is_integer() else p.label for p in ps]}
        if all(p.score is not None for p in ps):
            rec["scores"] = [p.score for p in ps]
        out.append(rec)
    return out
