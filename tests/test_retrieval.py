"""BM25 candidates (bm25s), their metrics, and hard-negative mining (BM25 and sentence-transformers)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from conftest import run_cli, shared
from finerank.core.errors import FinerankError
from finerank.io.collection import load, load_collection
from finerank.io.runs import read_trec_run
from finerank.core.records import Collection, Document
from finerank.retrieval.bm25 import BM25Index, candidates, index_for, run_metrics
from finerank.retrieval.mine import candidate_pairs, mine, parse_ranks, to_listwise


@pytest.fixture(scope="module")
def cran() -> Collection:
    return load_collection("cranfield")


def _toy() -> dict[str, Document]:
    return {
        "a": Document("a", "Turbulent flows over a swept wing at high speed.", "Wing flow"),
        "b": Document("b", "Heat transfer in a hypersonic boundary layer."),
        "c": Document("c", "A cookbook of soups and breads."),
        "d": Document("d", "The flow of heat in solids."),
    }


def test_bm25_ranks_stems_and_drops_non_matching():
    idx = BM25Index(_toy())
    run = idx.search({"q1": "flowing over wings", "q2": "the of and", "q3": "soup"}, top_k=3)
    assert list(run["q1"])[0] == "a"  # 'wings' and 'flowing' match 'wing' and 'flows' through the stemmer
    assert "c" not in run["q1"] and "b" not in run["q1"]  # no shared term: left out, not ranked at 0
    assert run["q2"] == {}  # stop words only
    assert list(run["q3"]) == ["c"]
    assert list(run["q1"].values()) == sorted(run["q1"].values(), reverse=True)
    assert len(idx.search({"q": "flow heat wing"}, top_k=2)["q"]) == 2


def test_candidates_on_cranfield(cran):
    run = candidates(cran, top_k=20)
    assert set(run) == set(cran.queries)
    assert all(0 < len(d) <= 20 for d in run.values())
    m = run_metrics(run, cran.qrels)
    assert set(m) == {"nDCG@10", "RR@10", "R@100"}
    assert 0.3 < m["nDCG@10"] < 0.6  # BM25 on cranfield is near 0.36; far off means a broken index
    assert index_for(cran.corpus) is index_for(cran.corpus)  # built once, reused
    sub = candidates(cran, top_k=20, query_ids=["3", "1"])
    assert list(sub) == ["3", "1"] and sub["1"] == run["1"]
    with pytest.raises(FinerankError, match="not in"):
        candidates(cran, query_ids=["no-such-query"])


def test_run_metrics_counts_missing_queries_as_zero(cran):
    run = candidates(cran, top_k=10, query_ids=["1", "2"])
    full = run_metrics(run, {q: cran.qrels[q] for q in ("1", "2")})["nDCG@10"]
    half = run_metrics({"1": run["1"]}, {q: cran.qrels[q] for q in ("1", "2")})["nDCG@10"]
    one = run_metrics({"1": run["1"]}, {"1": cran.qrels["1"]})["nDCG@10"]
    assert half == pytest.approx(one / 2)
    assert full >= half


def test_candidate_pairs_carry_labels_and_scores_in_rank_order(cran):
    run = candidates(cran, top_k=30, query_ids=list(cran.queries)[:15])
    pairs = candidate_pairs(cran, run)
    assert len(pairs) == sum(len(d) for d in run.values())
    by_q = defaultdict(list)
    for p in pairs:
        by_q[p.query_id].append(p)
        assert p.label == cran.qrels[p.query_id].get(p.doc_id, 0)
        assert p.score == run[p.query_id][p.doc_id]
        assert p.document == cran.corpus[p.doc_id].full_text
    for ps in by_q.values():
        assert [p.score for p in ps] == sorted((p.score for p in ps), reverse=True)
    assert any(p.label > 0 for p in pairs) and any(p.label == 0 for p in pairs)


def _ranks(cran, qid, depth):
    ranked = sorted(candidates(cran, top_k=depth, query_ids=[qid])[qid].items(), key=lambda kv: (-kv[1], kv[0]))
    return {d: i for i, (d, _) in enumerate(ranked, start=1)}


def test_mine_bm25_keeps_judged_and_samples_in_range(cran):
    qids = list(cran.queries)[:30]
    pairs = mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, negatives=4, ranks=(3, 40), seed=1)
    by_q = defaultdict(list)
    for p in pairs:
        by_q[p.query_id].append(p)
    assert list(by_q) == qids
    for q, ps in by_q.items():
        judged = cran.qrels[q]
        assert {p.doc_id: p.label for p in ps if p.doc_id in judged} == judged  # every judged doc, its label
        negs = [p for p in ps if p.doc_id not in judged]
        ranks = _ranks(cran, q, 40)
        window = [d for d, r in ranks.items() if r >= 3 and d not in judged]
        assert len(negs) == min(4, len(window))
        assert all(p.label == 0 and 3 <= ranks[p.doc_id] <= 40 for p in negs)
        assert len({p.doc_id for p in ps}) == len(ps)  # no document twice
    assert sum(1 for p in pairs if p.doc_id not in cran.qrels[p.query_id]) > 0


def test_mine_retrieved_positives_only(cran):
    qids = list(cran.queries)[:30]
    every = mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, negatives=4, ranks=(1, 20), seed=1)
    kept = mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, negatives=4, ranks=(1, 20), seed=1, positives="retrieved")
    dropped = 0
    for q in qids:
        top = _ranks(cran, q, 20)
        pos = {p.doc_id for p in kept if p.query_id == q and p.label > 0}
        assert pos == {d for d, g in cran.qrels[q].items() if g > 0 and d in top}  # relevant and BM25 top 20
        negs = [p for p in kept if p.query_id == q and p.label == 0]
        assert negs == [p for p in every if p.query_id == q and p.label == 0]  # the same negatives
        dropped += sum(1 for d, g in cran.qrels[q].items() if g > 0 and d not in top)
    assert dropped > 0 and len(every) - len(kept) == dropped  # the test means something on this data
    with pytest.raises(FinerankError):
        mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids[:1], positives="some")


def test_mine_is_deterministic_per_seed_and_per_query(cran):
    qids = list(cran.queries)[:25]
    a = mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, seed=3)
    assert a == mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, seed=3)
    assert a != mine(cran, cross_query_negatives=0, balanced=False, query_ids=qids, seed=4)
    # a query's negatives do not depend on which other queries are mined with it
    alone = mine(cran, cross_query_negatives=0, balanced=False, query_ids=[qids[7]], seed=3)
    assert alone == [p for p in a if p.query_id == qids[7]]


def test_mine_rejects_bad_ranks(cran):
    assert parse_ranks("3-50") == (3, 50)
    for bad in ("0-10", "10-3", "x"):
        with pytest.raises(FinerankError):
            mine(cran, cross_query_negatives=0, balanced=False, ranks=parse_ranks(bad)) if bad == "x" else mine(cran, cross_query_negatives=0, balanced=False, ranks=tuple(map(int, bad.split("-"))))


def test_to_listwise(cran):
    pairs = mine(cran, cross_query_negatives=0, balanced=False, query_ids=["1", "2"], negatives=2)
    recs = to_listwise(pairs)
    assert [r["query_id"] for r in recs] == ["1", "2"]
    for r in recs:
        ps = [p for p in pairs if p.query_id == r["query_id"]]
        assert r["doc_ids"] == [p.doc_id for p in ps]
        assert r["labels"] == [p.label for p in ps]
        assert len(r["documents"]) == len(r["doc_ids"]) and r["query"] == ps[0].query
        assert "scores" not in r or len(r["scores"]) == len(ps)


def _small(cran, n_queries=8, extra_docs=150) -> Collection:
    qids = list(cran.queries)[:n_queries]
    keep = {d for q in qids for d in cran.qrels[q]}
    keep |= set(list(cran.corpus)[:extra_docs])
    return Collection({d: cran.corpus[d] for d in cran.corpus if d in keep}, {q: cran.queries[q] for q in qids},
                      {q: cran.qrels[q] for q in qids}, "cranfield-small")


def test_mine_with_a_sentence_transformers_model(cran, tiny_model):
    small = _small(cran, n_queries=5, extra_docs=60)
    pairs = mine(small, cross_query_negatives=0, balanced=False, negatives=3, ranks=(2, 30), model=tiny_model, seed=0)
    negs = Counter()
    for p in pairs:
        if p.doc_id not in small.qrels[p.query_id]:
            negs[p.query_id] += 1
            assert p.label == 0 and p.score is not None
        else:
            assert p.label == small.qrels[p.query_id][p.doc_id]
    assert negs == {q: 3 for q in small.queries}
    assert pairs == mine(small, cross_query_negatives=0, balanced=False, negatives=3, ranks=(2, 30), model=tiny_model, seed=0)


def test_cli_candidates_writes_pairs_and_run(tmp_path):
    res = run_cli("data", "candidates", "cranfield", "--out", tmp_path / "c.jsonl", "--top-k", "25", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["run_file"] == str(tmp_path / "c.trec") and info["metrics"]["nDCG@10"] > 0.3
    run = read_trec_run(tmp_path / "c.trec")
    pairs = load(tmp_path / "c.jsonl").pairs
    assert len(pairs) == info["pairs"] == sum(len(d) for d in run.values())
    assert all(run[p.query_id][p.doc_id] == pytest.approx(p.score, abs=1e-5) for p in pairs)

    text = run_cli("data", "candidates", "cranfield", "--out", tmp_path / "d.jsonl", "--run", tmp_path / "r.run")
    assert text.returncode == 0 and "nDCG@10" in text.stdout and (tmp_path / "r.run").exists()


def test_cli_mine_restricted_to_a_split_file(tmp_path):
    assert run_cli("data", "split", "cranfield", "--out", tmp_path / "s").returncode == 0
    res = run_cli("data", "mine", "cranfield", "--queries", tmp_path / "s" / "train.jsonl", "--out",
                  tmp_path / "m.jsonl", "--negatives", "2", "--ranks", "5-30", "--listwise", tmp_path / "l.jsonl")
    assert res.returncode == 0, res.stderr
    train_q = set(load(tmp_path / "s" / "train.jsonl").queries)
    mined = load(tmp_path / "m.jsonl").pairs
    assert {p.query_id for p in mined} == train_q
    rows = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(rows) == len(train_q) and sum(len(r["doc_ids"]) for r in rows) == len(mined)

    val_q = set(load(tmp_path / "s" / "val.jsonl").queries)
    res = run_cli("data", "candidates", "cranfield", "--queries", tmp_path / "s" / "val.jsonl", "--out",
                  tmp_path / "c.jsonl", "--json")
    info = json.loads(res.stdout)
    assert info["queries"] == len(val_q) and {p.query_id for p in load(tmp_path / "c.jsonl").pairs} <= val_q
    coll = load_collection("cranfield")
    run = read_trec_run(tmp_path / "c.trec")
    assert info["metrics"]["nDCG@10"] == pytest.approx(run_metrics(run, {q: coll.qrels[q] for q in val_q})["nDCG@10"],
                                                       abs=1e-4)

    bad = run_cli("data", "mine", "cranfield", "--out", tmp_path / "x.jsonl", "--ranks", "9-2")
    assert bad.returncode == 2 and "ranks" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.shared
def test_scifact_test_bm25_ndcg_at_least_064(tmp_path):
    res = run_cli("data", "candidates", shared("scifact"), "--split", "test", "--top-k", "100", "--out",
                  tmp_path / "c.jsonl", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["queries"] == 300
    assert info["metrics"]["nDCG@10"] >= 0.64, info["metrics"]


@pytest.mark.shared
def test_scifact_train_mined_negatives_are_never_judged_positives():
    path = shared("scifact")
    coll = load_collection(path, split="train")
    every = load_collection(path)  # train and test judgments together
    pairs = mine(coll, cross_query_negatives=0, balanced=False, negatives=8, ranks=(1, 100), seed=0)
    negatives = [p for p in pairs if p.doc_id not in coll.qrels[p.query_id]]
    assert len(negatives) > 7 * len(coll.queries)
    for p in negatives:
        assert p.label == 0
        assert every.qrels.get(p.query_id, {}).get(p.doc_id, 0) == 0, (p.query_id, p.doc_id)
    # ranks from 1 means the positives BM25 ranks on top were in the window and had to be left out
    top1 = candidates(coll, top_k=1)
    assert sum(1 for q, d in top1.items() if any(coll.qrels[q].get(x, 0) > 0 for x in d)) > 100


@pytest.mark.slow
def test_mine_with_minilm_prefers_similar_documents(cran):
    small = _small(cran, n_queries=5, extra_docs=120)
    pairs = mine(small, cross_query_negatives=0, balanced=False, negatives=3, ranks=(1, 10), model="minilm-l6", seed=0)
    negs = [p for p in pairs if p.doc_id not in small.qrels[p.query_id]]
    assert len(negs) == 15 and all(p.label == 0 for p in negs)
    assert all(0.0 < p.score <= 1.0 for p in negs)  # cosine similarities of the nearest unjudged documents
