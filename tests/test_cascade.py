"""Cascade reranking: the tuner picks the cut-off that keeps the relevant document in the cross-encoder's head, a
saved cascade round-trips beside other keys, a cascade never scores a document outside its candidates, serve runs
the cross-encoder on n2 documents only (and counts it), and --no-cascade turns it off."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from finerank.data.candidates import Candidates
from finerank.scorers.cascade import Cascade, CascadeSpec
from finerank.core.errors import FinerankError
from finerank.scorers.fused import FusedScorer, FusionSpec
from finerank.scorers.cross_encoder import Reranker
from finerank.scorers.load import load_scorer
from finerank.training.fit import tune_cascade

from conftest import run_cli
from test_rerank import FILLER, KEYWORDS, keyword_model  # noqa: F401  (the fixture, shared)


def _doc(rng: random.Random, keyword: str | None = None) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(8, 16))]
    if keyword:
        words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


def keyword_lists(n_queries: int = 10, n_docs: int = 40, relevant_at=(3, 4, 5), seed: int = 0) -> Candidates:
    """Lists whose one relevant document (the only one holding the query's keyword) sits at first-stage position
    3-5 (0-based), under descending BM25-like scores; the keyword model puts it first when it sees it."""
    rng = random.Random(seed)
    queries, docs, first, qrels = {}, {}, {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        kw = KEYWORDS[i % len(KEYWORDS)]
        pos = relevant_at[i % len(relevant_at)]
        queries[q] = kw
        docs[q] = [(f"{q}-d{j}", _doc(rng, kw if j == pos else None)) for j in range(n_docs)]
        first[q] = {d: float(n_docs - j) for j, (d, _) in enumerate(docs[q])}
        qrels[q] = {f"{q}-d{pos}": 1}
    return Candidates(queries, docs, first, qrels, "keyword lists")


def _copy(model: str, tmp_path) -> str:
    dst = tmp_path / "model"
    shutil.copytree(model, dst)
    return str(dst)


class Recorder:
    """Wraps a backend; records every (query, text) input it scores."""

    def __init__(self, rr: Reranker):
        self.inner, self.seen = rr.backend, []
        rr.backend = self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, pairs):
        self.seen += list(pairs)
        return self.inner(pairs)


# ------------------------------------------------------------------------------------------------ tuning
def test_tuning_picks_the_cut_off_that_keeps_the_relevant_document(keyword_model, tmp_path):
    cands = keyword_lists()
    full = Reranker(keyword_model).score_candidates(cands)
    assert all(max(full[q], key=full[q].get) == next(iter(cands.qrels[q])) for q in cands.docs)  # the model works

    res = tune_cascade(keyword_model, cands, n2=(2, 8), cheap=("bm25",), latency_queries=10, out=tmp_path / "t",
                       choose="pairs", log=lambda m: None)  # the choice independent of measured latencies
    by_n2 = {r["n2"]: r for r in res.rows}
    assert by_n2[None]["nDCG@10"] == pytest.approx(1.0)
    assert not by_n2[2]["within_tolerance"] and by_n2[2]["nDCG@10"] < 0.8  # the relevant document never reaches CE
    assert by_n2[8]["within_tolerance"] and by_n2[8]["nDCG@10"] == pytest.approx(1.0)
    assert by_n2[8]["ce_pairs"] == 8 and by_n2[None]["ce_pairs"] == 40
    assert res.chosen is not None and (res.chosen.cheap, res.chosen.n2) == ("bm25", 8), res.line
    assert "top 8" in res.line and "8.0 cross-encoder pairs a query instead of 40.0" in res.line
    table = json.loads((tmp_path / "t" / "cascade-tuning.json").read_text())
    assert table["chosen"]["n2"] == 8 and table["full"]["ce_pairs"] == 40 and len(table["settings"]) == 3
    assert (tmp_path / "t" / "cascade-tuning.png").read_bytes()[:4] == b"\x89PNG"

    # a budget nothing meets: no choice, and nothing to save
    none = tune_cascade(keyword_model, cands, n2=(2, 8), cheap=("bm25",), latency_queries=3,
                        latency_budget_ms=1e-6, log=lambda m: None)
    assert none.chosen is None and "no setting" in none.line
    with pytest.raises(FinerankError, match="nothing to save"):
        tune_cascade(keyword_model, cands, n2=(2,), cheap=("bm25",), latency_queries=2, save=True,
                     latency_budget_ms=1e-6, log=lambda m: None)
    only_short = tune_cascade(keyword_model, cands, n2=(2,), cheap=("bm25",), latency_queries=2, log=lambda m: None)
    assert only_short.chosen is not None and only_short.chosen.full  # nothing cheaper holds up: the full rerank


def test_the_choice_minimises_latency_or_pairs():
    """Among the settings within tolerance: the lowest measured p50, or with choose="pairs" the fewest cross-encoder
    pairs (the same on any machine); rows below tolerance or over the budget never win."""
    from finerank.training.fit import _choose

    def rows():
        return [{"nDCG@10": 0.50, "ce_pairs": 40, "p50_ms": 30.0},   # the full rerank
                {"nDCG@10": 0.40, "ce_pairs": 2, "p50_ms": 5.0},     # below tolerance
                {"nDCG@10": 0.50, "ce_pairs": 8, "p50_ms": 20.0},
                {"nDCG@10": 0.499, "ce_pairs": 10, "p50_ms": 12.0}]
    assert _choose(rows(), "nDCG@10", 0.01, None) == 3
    assert _choose(rows(), "nDCG@10", 0.01, None, "pairs") == 2
    assert _choose(rows(), "nDCG@10", 0.01, 15.0, "pairs") == 3
    assert _choose(rows(), "nDCG@10", 0.01, 1.0) is None


def test_cli_tune_saves_the_choice_and_rerank_applies_it(keyword_model, tmp_path):
    model = _copy(keyword_model, tmp_path)
    FusionSpec({"ce": 1.0}).save(model)  # another key of finerank.json, which --save must keep
    val = tmp_path / "val.jsonl"
    cands = keyword_lists()
    val.write_text("".join(json.dumps({"query_id": q, "query": cands.queries[q], "doc_id": d, "document": t,
                                       "label": cands.qrels[q].get(d, 0), "score": cands.first_stage[q][d]}) + "\n"
                           for q, ds in cands.docs.items() for d, t in ds))
    r = run_cli("cascade", "tune", "--model", model, "--dataset", val, "--out", tmp_path / "tune", "--n2", "2,8",
                "--cheap", "bm25", "--latency-queries", "5", "--choose", "pairs", "--save")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cascade: bm25 -> cross-encoder top 8" in r.stderr
    spec = json.loads((tmp_path / "model" / "finerank.json").read_text())
    assert spec["cascade"]["n2"] == 8 and spec["fusion"]["weights"] == {"ce": 1.0}

    r = run_cli("rerank", "--model", model, "--input", val, "--output", tmp_path / "out.jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the cross-encoder scored 80 pairs, skipped 320" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and all(row["rank"] > 8 for row in rows if int(row["doc_id"].split("-d")[1]) >= 8)

    r = run_cli("rerank", "--model", model, "--input", val, "--output", tmp_path / "off.jsonl", "--no-cascade")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cascade" not in r.stdout
    ranks = {row["doc_id"]: row["rank"] for row in map(json.loads, (tmp_path / "off.jsonl").read_text().splitlines())}
    assert any(ranks[f"q{i}-d{j}"] <= 8 for i in range(10) for j in range(8, 40))  # the whole list competes


# ------------------------------------------------------------------------------------------------ the spec
def test_a_saved_cascade_round_trips_beside_other_keys(tiny_model, tmp_path):
    model = _copy(tiny_model, tmp_path)
    FusionSpec({"ce": 1.0}, tuned_on={"queries": 3}).save(model)
    spec = CascadeSpec(n2=10, n1=30, cheap="hybrid", hybrid_weight=0.4, tolerance=0.01,
                       tuned_on={"queries": 12, "nDCG@10": 0.5})
    spec.save(model)
    assert CascadeSpec.load(model) == spec
    assert FusionSpec.load(model) == FusionSpec({"ce": 1.0}, tuned_on={"queries": 3})  # not clobbered
    FusionSpec({"ce": 0.5, "bm25": 0.5}).save(model)  # and the fusion's save keeps the cascade
    assert CascadeSpec.load(model) == spec

    scorer = load_scorer(model, max_length=128)
    assert isinstance(scorer, Cascade) and scorer.spec == spec and scorer.ce_pairs(100) == 10
    assert scorer.describe()["cascade"]["n2"] == 10
    alone = load_scorer(model, cascade=False, max_length=128)  # the fused cross-encoder, no cascade
    assert isinstance(alone, FusedScorer) and isinstance(alone.ce, Reranker) and alone.scale == "zsum"
    assert isinstance(scorer.expensive, FusedScorer) and scorer.scale == "cascade"
    assert CascadeSpec.remove(model) and CascadeSpec.load(model) is None and FusionSpec.load(model) is not None

    with pytest.raises(FinerankError, match="larger than n1"):
        CascadeSpec(n2=40, n1=30, cheap="bi")
    with pytest.raises(FinerankError, match="unknown cheap scorer"):
        CascadeSpec(n2=5, cheap="splade")


# ------------------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("spec", [CascadeSpec(n2=5), CascadeSpec(n2=5, n1=15, cheap="hybrid"),
                                  CascadeSpec(n2=4, n1=12, cheap="bi")], ids=["bm25", "hybrid", "bi"])
def test_a_cascade_never_scores_a_document_outside_its_candidates(tiny_model, spec):
    cands = keyword_lists(n_queries=3, n_docs=25)
    rng = random.Random(7)  # a list shorter than n2: all of it goes to the cross-encoder
    cands.docs["short"] = [(f"short-d{j}", _doc(rng, "falcon")) for j in range(3)]
    cands.queries["short"] = "falcon"
    cands.first_stage["short"] = {d: float(3 - j) for j, (d, _) in enumerate(cands.docs["short"])}
    rr = Reranker(tiny_model, max_length=128)
    rec = Recorder(rr)
    casc = Cascade(spec, rr)
    run = casc.score_candidates(cands)

    allowed = {(cands.queries[q], t) for q, ds in cands.docs.items() for _, t in ds}
    assert set(rec.seen) <= allowed
    assert len(rec.seen) == 3 * spec.n2 + 3 == casc.stats["ce_pairs"]
    assert casc.stats["skipped"] == 3 * (25 - spec.n2)
    assert casc.stats["cheap_docs"] == (0 if spec.cheap == "bm25" else 3 * spec.n1)
    for q, ds in cands.docs.items():
        ids = [d for d, _ in ds]
        assert set(run[q]) == set(ids)  # every candidate, nothing else
        scored = {d for d, t in ds if (cands.queries[q], t) in set(rec.seen)}
        if q == "short":
            assert scored == set(ids)
            continue
        assert len(scored) == spec.n2
        if spec.cheap == "bm25":
            assert scored == set(ids[: spec.n2])
        else:
            assert scored <= set(ids[: spec.n1])
        ranked = sorted(run[q], key=lambda d: -run[q][d])
        assert set(ranked[: spec.n2]) == scored  # kept documents strictly above the rest
        assert min(run[q][d] for d in scored) > max(run[q][d] for d in ids if d not in scored)
        if spec.n1:  # documents the first stage cut: last, in first-stage order
            assert ranked[spec.n1:] == ids[spec.n1:]


# ------------------------------------------------------------------------------------------------ serve
def test_serve_runs_the_cross_encoder_on_n2_documents_and_counts_them(tiny_model, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from finerank.serving.serve import create_app

    model = _copy(tiny_model, tmp_path)
    CascadeSpec(n2=10).save(model)
    docs = [_doc(random.Random(i)) for i in range(100)]
    body = {"query": "zebra copper", "documents": docs, "scores": [100.0 - i for i in range(100)]}

    app = create_app(model, max_length=128)
    rec = Recorder(app.state.scorer.expensive)
    client = TestClient(app)
    r = client.post("/rerank", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 100 and {x["index"] for x in results[:10]} == set(range(10))
    assert len(rec.seen) == 10 and {t for _, t in rec.seen} == set(docs[:10])
    metrics = client.get("/metrics").text
    assert "finerank_pairs_scored_total 10\n" in metrics and "finerank_documents_skipped_total 90\n" in metrics
    assert client.get("/health").json()["cascade"]["n2"] == 10

    off = TestClient(create_app(model, max_length=128, cascade=False))
    assert off.post("/rerank", json=body).status_code == 200
    metrics = off.get("/metrics").text
    assert "finerank_pairs_scored_total 100\n" in metrics and "finerank_documents_skipped_total 0\n" in metrics


def test_evaluate_applies_the_cascade_unless_turned_off(tiny_model, tmp_path):
    from finerank.evaluation.evaluate import evaluate

    model = _copy(tiny_model, tmp_path)
    CascadeSpec(n2=3).save(model)
    cands = keyword_lists(n_queries=4, n_docs=12)
    on = evaluate(model, cands, query_check=0, card=False, log=lambda m: None).system(model).run
    off = evaluate(model, cands, query_check=0, card=False, cascade=False, log=lambda m: None).system(model).run
    for q, ds in cands.docs.items():
        top3 = {d for d, _ in ds[:3]}
        assert set(sorted(on[q], key=lambda d: -on[q][d])[:3]) == top3
        assert {d: off[q][d] for d in top3} == pytest.approx({d: on[q][d] for d in top3}, abs=1e-5)
    assert any(set(sorted(off[q], key=lambda d: -off[q][d])[:3]) != {d for d, _ in ds[:3]}
               for q, ds in cands.docs.items())
