"""Metric names and scoring, all through ir-measures (the trec_eval definitions), never hand-rolled.

``ndcg`` means nDCG@10 and ``mrr`` MRR@10 (ir-measures writes it ``RR@10``); any ir-measures name is accepted
(``MAP``, ``R@100``, ``P@5``, ``nDCG@20`` ...). Unjudged documents count as not relevant. Ties in a run are
broken deterministically by doc id before scoring (ir-measures would otherwise break them by its own rule).
"""

from __future__ import annotations

from .errors import FinerankError
from .records import Run

DEFAULT_METRICS = ("nDCG@10", "RR@10")
ALIASES = {"ndcg": "nDCG@10", "mrr": "RR@10", "mrr@10": "RR@10", "rr": "RR@10", "map": "AP", "ap": "AP"}


def parse_metric(name: str):
    """An ir-measures measure from a user's name (``ndcg``, ``mrr``, ``nDCG@10``, ``MRR@10``, ``R@100`` ...)."""
    import ir_measures

    key = name.strip()
    key = ALIASES.get(key.lower(), key)
    if key.lower().startswith("mrr@"):
        key = "RR@" + key[4:]
    if key.lower().startswith("ndcg@"):
        key = "nDCG@" + key[5:]
    try:
        return ir_measures.parse_measure(key)
    except Exception:
        raise FinerankError(f"unknown metric '{name}'",
                            hint="use ndcg, mrr, or an ir-measures name such as nDCG@10, RR@10, AP, R@100, P@5") from None


def _untied(run: Run) -> Run:
    """Scores nudged so that equal scores rank by doc id (ascending), identically in every tool."""
    out: Run = {}
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
        n = len(ranked)
        out[qid] = {did: float(n - i) for i, (did, _) in enumerate(ranked)}
    return out


def per_query(qrels: dict[str, dict[str, int]], run: Run, metrics=DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """metric name -> query id -> value, for every query in ``qrels`` (a query with no run scores 0)."""
    import ir_measures

    measures = [parse_metric(m) if isinstance(m, str) else m for m in metrics]
    run = _untied({q: d for q, d in run.items() if q in qrels})
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    out: dict[str, dict[str, float]] = {str(m): {q: 0.0 for q in qrels} for m in measures}
    for r in ir_measures.iter_calc(measures, qrels, run):
        out[str(r.measure)][r.query_id] = float(r.value)
    return out


def aggregate(qrels: dict[str, dict[str, int]], run: Run, metrics=DEFAULT_METRICS) -> dict[str, float]:
    """metric name -> mean over the judged queries (queries absent from the run count as 0)."""
    pq = per_query(qrels, run, metrics)
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in pq.items()}


def rank_correlations(a: Run, b: Run) -> dict[str, float]:
    """Spearman's rank correlation, per query, between two runs over the same lists (queries whose scores are
    constant in either run are left out: no ranking to compare)."""
    from scipy.stats import spearmanr

    out = {}
    for q, docs in a.items():
        other = b.get(q, {})
        ids = [d for d in docs if d in other]
        x, y = [docs[d] for d in ids], [other[d] for d in ids]
        if len(ids) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
            continue
        out[q] = float(spearmanr(x, y).statistic)
    return out


def query_dependence(true_run: Run, wrong_run: Run, qrels: dict[str, dict[str, int]],
                     metric: str = DEFAULT_METRICS[0]) -> dict:
    """How much a ranking depends on the query: ``wrong_run`` scores the same lists under other queries' texts (see
    :meth:`finerank.data.candidates.Candidates.deranged`). Returns the metric of the true and of the wrong-query run over
    the lists in ``wrong_run`` (judged by the true queries' judgments), and the median per-list rank correlation
    between the two runs' scores (1: the query changes nothing)."""
    import statistics

    judged = {q: qrels.get(q, {}) for q in wrong_run}
    corr = rank_correlations(true_run, wrong_run)
    return {metric: aggregate(judged, {q: true_run[q] for q in wrong_run if q in true_run}, [metric])[metric],
            f"{metric}_wrong_query": aggregate(judged, wrong_run, [metric])[metric],
            "rank_correlation": statistics.median(corr.values()) if corr else None,
            "lists": len(wrong_run)}
