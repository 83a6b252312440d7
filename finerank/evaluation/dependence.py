"""The query-dependence check: score candidate lists a second time, each under another list's query text, and see
how much the ranking moves. A reranker fine-tuned on a few queries over one shared corpus can learn WHICH documents
were positives instead of what makes a document relevant to a query; it then ranks a new query's list by document
alone, and under a wrong query it ranks exactly as under the right one. :func:`check` is the check, for any Scorer
(train's validation, ``evaluate``); :func:`ignores_query` the loud message.

Thresholds, measured: on Cranfield (50 lists of BM25's top 20) BM25, the minilm-l6 bi-encoder and their hybrid
correlate -0.07, 0.12 and 0.13 with themselves under another query, and keep 45-54% of their nDCG@10; the
fine-tuned cross-encoder on MEDLINE correlated 0.94 and kept 113% (benchmarks/README.md). A system is flagged
from 0.8, or from 80% kept.
"""

from __future__ import annotations

import random

from ..core.metrics import DEFAULT_METRICS, query_dependence
from ..core.records import Run
from ..data.candidates import Candidates
from ..retrieval.bm25 import rescore_lists

CHECK_LISTS = 50        # lists scored a second time, under other queries' texts: the check's cost
CORRELATION_WARN = 0.8  # median per-list rank correlation between true-query and wrong-query scores
WRONG_SHARE_WARN = 0.8  # wrong-query nDCG@10 at least this share of the true-query nDCG@10
SHARE_MIN_LISTS = 10    # ... judged on this many lists at least (on 5, BM25 and the hybrid were flagged by chance)


def wrong_query_lists(cands: Candidates, n: int = CHECK_LISTS, seed: int = 0) -> Candidates | None:
    """Up to ``n`` of the lists (a seeded sample), each under another list's query text, with BM25 scores of those
    texts over the lists' documents (so that BM25, the hybrid and a fused model are checked as well); None when
    there are fewer than two lists."""
    if len(cands.docs) < 2:
        return None
    qids = sorted(cands.docs)
    qids = sorted(random.Random(seed).sample(qids, min(n, len(qids))))
    if len(qids) < 2:
        return None
    wrong = cands.subset(qids).deranged(seed)
    wrong.first_stage = rescore_lists(wrong.queries, wrong.docs)
    return wrong


def check(scorer, cands: Candidates, *, n: int = CHECK_LISTS, seed: int = 0, run: Run | None = None) -> dict | None:
    """The query dependence of ``scorer`` (any Scorer) on up to ``n`` of the lists of ``cands`` (a seeded sample):
    scores them (or takes ``run``, its scores on ``cands``) and the same lists under other queries' texts
    (:func:`wrong_query_lists`). Returns :func:`finerank.core.metrics.query_dependence`'s dict, with the number of
    lists checked; None when ``n`` is 0, there are fewer than two lists, or no list holds a negative."""
    if not n or not cands.has_negatives():
        return None
    wrong = wrong_query_lists(cands, n, seed)
    if wrong is None:
        return None
    if run is None:
        run = scorer.score_candidates(cands.subset(sorted(wrong.docs)))
    return query_dependence(run, scorer.score_candidates(wrong), cands.qrels)


def ignores_query(name: str, dep: dict, metric: str = DEFAULT_METRICS[0]) -> str | None:
    """The loud message for a system whose ranking barely depends on the query, else None."""
    true, wrong, corr = dep[metric], dep[f"{metric}_wrong_query"], dep["rank_correlation"]
    kept = true > 0 and wrong >= WRONG_SHARE_WARN * true and dep.get("lists", SHARE_MIN_LISTS) >= SHARE_MIN_LISTS
    if corr is None or not (corr >= CORRELATION_WARN or kept):
        return None
    return (f"{name} scores documents, not (query, document) pairs: under another query's text its {metric} is "
            f"{wrong:.3f} (true query {true:.3f}) and its scores correlate {corr:.2f} with the true query's. "
            "Likely cause: an untrained head ignores the query; a model fine-tuned on a few queries over one shared "
            "corpus learned which documents were positives. Remedy: balanced training pairs, each positive document also "
            "another query's negative (the default of finerank data mine and train; off with --no-balance), more "
            "negatives from other queries' positives (data mine --cross-query-negatives), more queries, or the "
            "training-free hybrid (evaluate --baseline hybrid)")
