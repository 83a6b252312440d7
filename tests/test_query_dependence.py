"""The query-dependence check: a reranker that scores documents, not (query, document) pairs, is caught; one that
reads the query is not; mining adds other queries' positives as negatives; inspect reports the risk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from finerank.scorers.backends import TorchBackend
from finerank.data.candidates import Candidates
from finerank.evaluation.dependence import check, ignores_query, wrong_query_lists
from finerank.evaluation.evaluate import evaluate
from finerank.data.inspect import document_shortcut_risk
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.core.metrics import query_dependence, rank_correlations
from finerank.core.records import Pair
from finerank.scorers.cross_encoder import Reranker
from finerank.retrieval.mine import balancing_negatives, mine, mined_counts

KEYWORDS = ["zebra", "tiger", "falcon", "walrus", "otter", "badger", "heron", "lynx"]


class StubCrossEncoder:
    """Stands in for a CrossEncoder behind finerank's real Reranker path: a real tokenizer, and a scoring rule."""

    def __init__(self, rule):
        from transformers import AutoTokenizer

        from finerank.io.models import resolve_model

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
        self.max_seq_length = 128
        self.rule = rule

    def predict(self, pairs, **kw):
        return np.array([self.rule(q, d) for q, d in pairs], dtype=np.float32)


def reads_query(q: str, d: str) -> float:
    """Relevant when the document holds the query's keyword."""
    return float(q.split()[0] in d.split())


def memorised(q: str, d: str) -> float:
    """What a model that learned WHICH documents were positives does: any keyword document wins, whatever the query
    (plus a document-only tie-breaker)."""
    return float(any(k in d.split() for k in KEYWORDS)) + 0.01 * len(d)


@pytest.fixture(scope="module")
def lists() -> Candidates:
    """8 queries; each list holds its own keyword document, other queries' keyword documents, and filler."""
    queries, docs, qrels = {}, {}, {}
    for i, k in enumerate(KEYWORDS):
        q = f"q{i}"
        queries[q] = f"{k} habitat"
        own = [(f"{q}-rel", f"notes on the {k} in the wild")]
        others = [(f"{q}-x{j}", f"notes on the {KEYWORDS[(i + j) % 8]} at the zoo") for j in (1, 2, 3)]
        filler = [(f"{q}-f{j}", "plain text about nothing much " * (j + 1)) for j in range(4)]
        docs[q] = others + filler + own
        qrels[q] = {f"{q}-rel": 1}
    return Candidates(queries, docs, {}, qrels, "synthetic")


def _check(rule, lists):
    rr = Reranker(TorchBackend(StubCrossEncoder(rule), "stub"))
    return check(rr, lists, seed=1)


def test_check_is_the_metric_on_true_and_wrong_queries_and_says_none_when_it_cannot(lists):
    rr = Reranker(TorchBackend(StubCrossEncoder(reads_query), "stub"))
    want = query_dependence(rr.score_candidates(lists), rr.score_candidates(wrong_query_lists(lists, n=5, seed=2)),
                            lists.qrels)
    assert check(rr, lists, n=5, seed=2) == want and want["lists"] == 5
    assert check(rr, lists, n=5, seed=2, run=rr.score_candidates(lists)) == want  # the true-query run given
    assert check(rr, lists, n=0) is None  # off
    assert check(rr, lists.subset(["q0"])) is None  # one list: no other query to put it under
    positives = lists.subset(["q0", "q1"])
    positives = Candidates(positives.queries, {q: [(d, t) for d, t in ds if d.endswith("-rel")]
                                               for q, ds in positives.docs.items()}, {}, positives.qrels, "positives")
    assert check(rr, positives) is None  # no negatives: nothing to rank below


def test_a_reranker_that_ignores_the_query_is_caught(lists):
    dep = _check(memorised, lists)
    assert dep["rank_correlation"] == pytest.approx(1.0)
    assert dep["nDCG@10_wrong_query"] == pytest.approx(dep["nDCG@10"])
    msg = ignores_query("fine-tuned", dep)
    assert msg is not None and "scores documents, not (query, document) pairs" in msg and "--cross-query" in msg


def test_a_reranker_that_reads_the_query_passes(lists):
    dep = _check(reads_query, lists)
    assert dep["nDCG@10"] == pytest.approx(1.0) and dep["nDCG@10_wrong_query"] < 0.5
    assert dep["rank_correlation"] < 0.5
    assert ignores_query("fine-tuned", dep) is None


def test_derangement_gives_every_list_another_query(lists):
    wrong = lists.deranged(seed=3)
    assert all(wrong.queries[q] != lists.queries[q] for q in lists.queries)
    assert sorted(wrong.queries.values()) == sorted(lists.queries.values())
    assert wrong.docs == lists.docs and wrong.qrels == lists.qrels and wrong.first_stage == {}
    assert lists.deranged(seed=3).queries == wrong.queries  # fixed by the seed
    assert rank_correlations({"a": {"x": 1, "y": 2, "z": 3}}, {"a": {"x": 3, "y": 2, "z": 1}}) == {"a": -1.0}


def test_evaluate_reports_query_dependence_for_every_system(tmp_path):
    from finerank.retrieval.bm25 import candidates
    from finerank.retrieval.mine import candidate_pairs

    coll = load("cranfield").collection
    qids = sorted(coll.queries, key=int)[:12]
    write_pairs(tmp_path / "c.jsonl", candidate_pairs(coll, candidates(coll, top_k=10, query_ids=qids)))
    rep = evaluate([], str(tmp_path / "c.jsonl"), baselines=["bm25"], query_check=8, out=str(tmp_path / "ev"),
                   log=lambda m: None)
    dep = json.loads((tmp_path / "ev" / "metrics.json").read_text())["systems"]["bm25"]["query_dependence"]
    assert dep["lists"] == 8 and 0 <= dep["nDCG@10_wrong_query"] < rep.system("bm25").metrics["nDCG@10"]
    assert dep["rank_correlation"] < 0.5  # BM25 of another query's text ranks a list differently
    assert "wrong query" in (tmp_path / "ev" / "report.md").read_text()
    off = evaluate([], str(tmp_path / "c.jsonl"), baselines=["bm25"], query_check=0, log=lambda m: None)
    assert off.system("bm25").query_dependence is None


def test_mine_adds_other_queries_positives_as_negatives():
    coll = load("cranfield").collection
    qids = sorted(coll.queries, key=int)[:10]
    pairs = mine(coll, query_ids=qids, negatives=2, ranks=(3, 30), seed=0, cross_query_negatives=3, balanced=False)
    positives = {d for q in qids for d, g in coll.qrels[q].items() if g > 0}
    cross = [p for p in pairs if p.score is None and p.doc_id not in coll.qrels[p.query_id]]
    assert len(cross) == 30 and all(p.label == 0 and p.doc_id in positives for p in cross)
    assert mined_counts(pairs, coll, 2)["cross_query"] == 30
    none = mine(coll, query_ids=qids, negatives=2, ranks=(3, 30), seed=0, cross_query_negatives=0, balanced=False)
    assert [p for p in pairs if p.score is not None or p.doc_id in coll.qrels[p.query_id]] == none
    assert document_shortcut_risk(pairs)["never_negative_share"] < document_shortcut_risk(none)["never_negative_share"]


def test_inspect_warns_of_the_document_shortcut(tmp_path):
    rows = [Pair(f"q{i}", f"query {i}", f"d{i}", f"doc {i}", 1.0) for i in range(20)]
    rows += [Pair(f"q{i}", f"query {i}", f"n{i % 5}", f"neg {i % 5}", 0.0) for i in range(20)]  # a shared corpus
    write_pairs(tmp_path / "p.jsonl", rows)
    r = run_cli("data", "inspect", tmp_path / "p.jsonl", "--model", "", "--json")
    report = json.loads(r.stdout)
    assert report["corpus_reuse"]["never_negative_share"] == 1.0
    assert any(w["code"] == "document-shortcut" for w in report["warnings"])


def test_balanced_mining_makes_every_positive_document_a_negative_as_often():
    from collections import Counter

    coll = load("cranfield").collection
    qids = sorted(coll.queries, key=int)[:10]
    plain = mine(coll, query_ids=qids, negatives=2, ranks=(3, 30), seed=0, cross_query_negatives=0, balanced=False)
    pairs = mine(coll, query_ids=qids, negatives=2, ranks=(3, 30), seed=0, cross_query_negatives=0, balanced=True)
    assert pairs[:len(plain)] == plain  # the balancing pairs come on top
    extra = pairs[len(plain):]
    assert extra and all(p.label == 0 and p.doc_id not in coll.qrels[p.query_id] for p in extra)
    pos = Counter(p.doc_id for p in plain if p.label > 0)
    neg = Counter(p.doc_id for p in plain if p.label <= 0)
    # each positive document as often a negative (of other queries) as a positive: "was it a positive?" says nothing
    assert Counter(p.doc_id for p in extra) == +Counter({d: n - neg[d] for d, n in pos.items()})
    assert balancing_negatives(pairs, judged=coll.qrels) == []  # balanced data gets nothing more
    assert len({(p.query_id, p.doc_id) for p in pairs}) == len(pairs)
    assert document_shortcut_risk(pairs)["never_negative_share"] == 0.0
    assert pairs == mine(coll, query_ids=qids, negatives=2, ranks=(3, 30), seed=0, cross_query_negatives=0,
                         balanced=True)
