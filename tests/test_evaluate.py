"""finerank evaluate: metrics equal trec_eval's, significance behaves, files and plots are written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, run_cli
from finerank.data.candidates import Candidates
from finerank.evaluation.evaluate import evaluate
from finerank.evaluation.significance import paired_tests
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.core.metrics import aggregate, parse_metric, per_query


def test_metrics_equal_pytrec_eval():
    """The same numbers as trec_eval (through pytrec_eval, the C implementation), for a fixed graded run."""
    import pytrec_eval

    rng = np.random.default_rng(0)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 4)) for j in range(30) if rng.random() < 0.5} for i in range(20)}
    run = {q: {f"d{j}": float(rng.normal()) for j in range(40)} for q in qrels}
    ours = aggregate(qrels, run, ["nDCG@10", "RR@10", "AP", "P@5", "R@100"])
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank", "map", "P.5", "recall.100"})
    res = ev.evaluate(run)
    # trec_eval's recip_rank has no cut-off; RR@10 equals it when each query's first relevant doc is in the top 10
    want = {"nDCG@10": "ndcg_cut_10", "AP": "map", "P@5": "P_5", "R@100": "recall_100"}
    for ours_name, te in want.items():
        assert ours[ours_name] == pytest.approx(np.mean([res[q][te] for q in res]), abs=1e-9), ours_name
    rr10 = []
    for q, docs in run.items():
        ranked = sorted(docs, key=lambda d: (-docs[d], d))[:10]
        rr10.append(next((1 / (i + 1) for i, d in enumerate(ranked) if qrels[q].get(d, 0) > 0), 0.0))
    assert ours["RR@10"] == pytest.approx(np.mean(rr10), abs=1e-9)


def test_metric_names():
    assert str(parse_metric("ndcg")) == "nDCG@10"
    assert str(parse_metric("mrr")) == "RR@10"
    assert str(parse_metric("MRR@10")) == "RR@10"
    assert str(parse_metric("nDCG@20")) == "nDCG@20"
    assert str(parse_metric("map")) == "AP"
    with pytest.raises(Exception, match="unknown metric"):
        parse_metric("bleu")


def test_ties_are_broken_by_doc_id():
    qrels = {"q": {"b": 1}}
    tied = {"q": {"a": 1.0, "b": 1.0}}
    assert per_query(qrels, tied, ["RR@10"])["RR@10"]["q"] == 0.5  # a before b, always


def test_paired_tests():
    a = np.linspace(0.2, 0.9, 50)
    same = paired_tests(a, a.copy())
    assert same["p_randomization"] == 1.0 and same["wins"] == 0 and same["ties"] == 50
    better = paired_tests(a + 0.1, a)
    assert better["p_randomization"] < 0.001 and better["wins"] == 50
    noisy = paired_tests(a + np.random.default_rng(1).normal(0, 0.3, 50), a)
    assert noisy["ci95"][0] < noisy["ci95"][1]
    assert better["ci95"][0] == pytest.approx(0.1, abs=1e-9)


@pytest.fixture(scope="module")
def candidates_file(tmp_path_factory):
    from finerank.retrieval.bm25 import candidates
    from finerank.retrieval.mine import candidate_pairs

    ds = load("cranfield")
    qids = sorted(ds.collection.queries, key=int)[:12]
    run = candidates(ds.collection, top_k=10, query_ids=qids)
    path = tmp_path_factory.mktemp("cands") / "val.jsonl"
    write_pairs(path, candidate_pairs(ds.collection, run))
    return path


def test_evaluate_writes_report_runs_and_plots(tiny_model, candidates_file, tmp_path):
    rep = evaluate([f"tiny={tiny_model}"], str(candidates_file), baselines=["bm25"], out=str(tmp_path / "ev"),
                   log=lambda m: None)
    assert [s.name for s in rep.systems] == ["bm25", "tiny"]
    bm25 = rep.system("bm25")
    cands = Candidates.from_file(str(candidates_file))
    assert bm25.metrics["nDCG@10"] == pytest.approx(aggregate(cands.qrels, cands.first_stage)["nDCG@10"])
    c = next(c for c in rep.comparisons if c.metric == "nDCG@10")
    assert c.wins + c.ties + c.losses == 12
    assert c.delta == pytest.approx(rep.system("tiny").metrics["nDCG@10"] - bm25.metrics["nDCG@10"])
    d = tmp_path / "ev"
    m = json.loads((d / "metrics.json").read_text())
    assert set(m["systems"]) == {"bm25", "tiny"} and m["per_query"]["tiny"]["nDCG@10"]
    assert "| tiny |" in (d / "report.md").read_text()
    for png in ("metrics.png", "per-query-delta.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (d / "runs" / "tiny.trec").read_text().splitlines()
    assert len(lines) == cands.n_pairs and lines[0].split()[3] == "1"


def test_cli_metric_ndcg_and_guide_script(tiny_model, candidates_file, tmp_path):
    r = run_cli("evaluate", "--model", tiny_model, "--baseline", "bi:minilm-l6", "--dataset", candidates_file,
                "--metric", "ndcg", "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    assert "nDCG@10" in r.stdout and "bi:minilm-l6 (baseline)" in r.stdout and "95% CI" in r.stdout
    import subprocess
    import sys

    g = subprocess.run([sys.executable, "evaluate_reranker.py", "--model", tiny_model, "--dataset",
                        str(candidates_file), "--metric", "ndcg"], cwd=ROOT, capture_output=True, text=True)
    assert g.returncode == 0, g.stderr
    assert "nDCG@10" in g.stdout


def test_collection_plus_trec_run(candidates_file, tmp_path):
    from finerank.io.runs import write_trec_run

    cands = Candidates.from_file(str(candidates_file))
    write_trec_run(tmp_path / "c.trec", cands.first_stage)
    again = Candidates.from_file(str(tmp_path / "c.trec"), collection="cranfield")
    full = {q: load("cranfield").collection.qrels[q] for q in cands.queries}
    assert again.qrels == full  # all judgments, also of relevant documents BM25 missed
    assert Candidates.from_file(str(candidates_file)).with_judgments("cranfield").qrels == full
    rep = evaluate([], again, baselines=["bm25"], log=lambda m: None)
    value = rep.system("bm25").metrics["nDCG@10"]
    assert value == pytest.approx(aggregate(full, cands.first_stage)["nDCG@10"])
    assert value < aggregate(cands.qrels, cands.first_stage)["nDCG@10"]  # the file alone overstates nDCG


def test_collection_without_candidates_is_a_clear_error():
    r = run_cli("evaluate", "--model", "minilm-l6", "--dataset", "cranfield")
    assert r.returncode == 2 and "candidate lists" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_takes_scorers_and_names_each_ones_parts(tiny_bi, candidates_file, tmp_path):
    """Scorers and spec strings side by side; metrics.json names each system's scorer (describe()) and scale."""
    from finerank.core.errors import FinerankError
    from finerank.retrieval.dense import BiEncoder
    from finerank.scorers.first_stage import BM25Scorer, HybridScorer

    bi = BiEncoder(tiny_bi)
    hybrid = HybridScorer(0.5, bi)
    rep = evaluate([bi, hybrid], str(candidates_file), baselines=[BM25Scorer()], query_check=4,
                   out=str(tmp_path / "ev"), log=lambda m: None)
    assert [s.name for s in rep.systems] == ["bm25", bi.name, hybrid.name]  # BM25 not added twice
    systems = json.loads((tmp_path / "ev" / "metrics.json").read_text())["systems"]
    assert systems["bm25"]["scale"] == "bm25" and systems["bm25"]["scorer"] == {"kind": "bm25", "scale": "bm25"}
    assert systems[bi.name]["scale"] == "cosine" and systems[bi.name]["scorer"] == bi.describe()
    assert systems[hybrid.name]["scorer"]["weight"] == 0.5 and systems[hybrid.name]["scale"] == "zsum"
    assert systems["bm25"]["pairs_per_second"] is None and systems[bi.name]["pairs_per_second"] > 0
    assert all(s.query_dependence["lists"] == 4 for s in rep.systems)
    by_spec = evaluate([f"bi:{tiny_bi}", f"hybrid:0.5@{tiny_bi}"], str(candidates_file), query_check=0,
                       log=lambda m: None)
    assert [s.metrics for s in by_spec.systems] == [s.metrics for s in rep.systems]  # the same numbers
    with pytest.raises(FinerankError, match="two systems are named 'a'"):
        evaluate(["a=bm25", f"a=bi:{tiny_bi}"], str(candidates_file), log=lambda m: None)
