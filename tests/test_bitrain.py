"""finerank train --arch bi-encoder: best/ loads as a SentenceTransformer, the best kept by validation nDCG@10,
resume, batches without false negatives, the card, and the tuned model in evaluate's hybrid, data candidates, mining and
the cascade."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from finerank.io.collection import load, load_collection
from finerank.io.outputs import write_pairs
from finerank.core.records import Pair


def _pairs(qids: list[str], negatives: int = 3) -> list[Pair]:
    """Cranfield queries: their judged documents (grades as labels) and BM25-ranked unjudged ones as label 0."""
    from finerank.retrieval.mine import mine

    return mine("cranfield", query_ids=qids, negatives=negatives, ranks=(1, 30), balanced=False, cross_query_negatives=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    coll = load_collection("cranfield")
    qids = sorted(coll.queries, key=int)
    d = tmp_path_factory.mktemp("bi-data")
    write_pairs(d / "train.jsonl", _pairs(qids[:40]))
    write_pairs(d / "val.jsonl", [p for p in coll.pairs() if p.query_id in set(qids[100:110])])
    return d


def _train(tiny_bi, data, out, *extra):
    return run_cli("train", "--arch", "bi-encoder", "--model", tiny_bi, "--train", data / "train.jsonl",
                   "--val", data / "val.jsonl", "--val-corpus", "cranfield", "--val-top-k", "20", "--out", out,
                   "--batch-size", "8", "--eval-steps", "3", "--lr", "5e-5", "--patience", "0", *extra)


@pytest.fixture(scope="module")
def run(tiny_bi, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bi-run") / "run"
    r = _train(tiny_bi, data, out, "--max-steps", "9")
    assert r.returncode == 0, r.stderr
    return out, r


def test_training_writes_a_sentence_transformer_best_and_a_record(run, data):
    from sentence_transformers import SentenceTransformer

    out, r = run
    best = SentenceTransformer(str(out / "best"))
    assert best.encode(["a query"]).shape == (1, 32)
    record = json.loads((out / "finerank-run.json").read_text())
    assert record["arch"] == "bi-encoder" and record["loss"] == "mnrl" and record["global_step"] == 9
    assert [h["step"] for h in record["eval_history"]] == [3, 6, 9]
    assert record["data"]["train"]["pairs"] == len(load(data / "train.jsonl").pairs)
    assert record["data"]["train"]["training_examples"] == record["data"]["train"]["triplets"]["rows"] > 0
    for key in ("retrieval", "hybrid"):  # dense retrieval over the corpus and the hybrid, base and tuned
        assert set(record[key]["base"]) >= {"nDCG@10"} and set(record[key]["best"]) >= {"nDCG@10"}
    assert 0 <= record["retrieval"]["best"]["R@100"] <= 1 and record["retrieval"]["documents"] == len(load_collection("cranfield").corpus)
    assert "validation: base vs best (mnrl loss" in r.stdout and "dense retrieval over --val-corpus" in r.stdout
    assert (out / "finerank-config.yaml").exists() and "arch: bi-encoder" in (out / "finerank-config.yaml").read_text()


def test_fr_train_dispatches_on_arch(run, tiny_bi, data, tmp_path):
    """finerank.train(cfg) with arch="bi-encoder" is the bi-encoder's trainer: --resume of the finished run returns
    its recorded BiTrainResult, dense retrieval and the hybrid included, and trains nothing."""
    import finerank as fr

    out, _ = run
    shutil.copytree(out, tmp_path / "run")
    cfg = fr.TrainConfig(arch="bi-encoder", model=tiny_bi, train=str(data / "train.jsonl"), val=str(data / "val.jsonl"),
                         val_corpus="cranfield", out=str(tmp_path / "run"), max_steps=9, resume=True)
    result = fr.train(cfg)
    record = json.loads((out / "finerank-run.json").read_text())
    assert isinstance(result, fr.BiTrainResult) and result.finished_before == 9 and result.loss == "mnrl"
    assert result.retrieval == record["retrieval"] and result.hybrid == record["hybrid"]
    assert not list((tmp_path / "run").glob("checkpoint-1[0-9]"))


def test_the_kept_model_is_the_best_checkpoint_by_validation_ndcg(run, data):
    """best/ is the checkpoint of the highest validation nDCG@10, and scores exactly that on the same lists."""
    from finerank.data.candidates import Candidates
    from finerank.core.metrics import aggregate
    from finerank.retrieval.dense import BiEncoder

    out, _ = run
    record = json.loads((out / "finerank-run.json").read_text())
    history = record["eval_history"]
    top = max(h["nDCG@10"] for h in history)
    assert record["best"]["nDCG@10"] == pytest.approx(top)
    assert record["best_checkpoint"].endswith(f"checkpoint-{next(h['step'] for h in history if h['nDCG@10'] == top)}")
    cands = Candidates.from_bm25(load(data / "val.jsonl").pairs, "cranfield", 20)
    again = aggregate(cands.qrels, BiEncoder(str(out / "best")).score_candidates(cands))["nDCG@10"]
    assert again == pytest.approx(top, abs=1e-4)


def test_resume_continues_from_the_newest_complete_checkpoint(tiny_bi, data, tmp_path):
    out = tmp_path / "run"
    r = _train(tiny_bi, data, out, "--max-steps", "6")
    assert r.returncode == 0, r.stderr
    for p in (out / "best", out / "finerank-run.json"):  # as if the process had died after checkpoint-6
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "checkpoint-999").mkdir()  # a half-written checkpoint must never be resumed from
    r = _train(tiny_bi, data, out, "--max-steps", "9", "--resume")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "finerank-run.json").read_text())
    assert record["resumed_from"].endswith("checkpoint-6") and record["global_step"] == 9
    assert not (out / "checkpoint-999").exists() and (out / "best" / "modules.json").exists()
    assert [h["step"] for h in record["eval_history"]] == [3, 6, 9]  # the log survives the resume


def test_batches_hold_no_false_negatives():
    """No batch holds a query twice, a document twice, or a document relevant to another query of the batch."""
    from datasets import Dataset

    from finerank.training.bi_encoder import triplets
    from finerank.training.callbacks import QueryBatchSampler

    pairs = []
    for q in range(12):  # doc "shared" is relevant to every query: it may never sit beside another query's row
        pairs += [Pair(f"q{q}", f"query {q}", f"d{q}", f"doc {q}", 1.0), Pair(f"q{q}", f"query {q}", "s", "shared", 2.0),
                  Pair(f"q{q}", f"query {q}", f"n{q}", f"neg {q}", 0.0)]
    cols, keys, counts = triplets(pairs)
    assert counts["rows"] == 24 and set(cols) == {"anchor", "positive", "negative"}
    relevant = {f"query {q}": {f"doc {q}", "shared"} for q in range(12)}
    sampler = QueryBatchSampler(Dataset.from_dict(cols), batch_size=8, drop_last=False, seed=1, rows=keys)
    seen = []
    for batch in sampler:
        qs = [cols["anchor"][i] for i in batch]
        docs = [d for i in batch for d in (cols["positive"][i], cols["negative"][i])]
        assert len(set(qs)) == len(qs) and len(set(docs)) == len(docs)
        for i in batch:
            others = relevant[cols["anchor"][i]]
            assert not any(cols[c][j] in others for j in batch if j != i for c in ("positive", "negative"))
        seen += batch
    assert sorted(seen) == list(range(24))  # every row once an epoch
    assert max(len(b) for b in sampler) == 8  # and batches fill where they can


def test_the_card_names_base_data_and_dense_retrieval_and_evaluate_fills_it(run, tmp_path):
    """best/README.md is finerank's card for an embedding model (front matter a hub parses, the record's numbers);
    evaluate --bi-encoder-tuned writes its results into it."""
    from huggingface_hub import ModelCard

    from finerank.report.card import MARK, NOT_EVALUATED
    from finerank.evaluation.evaluate import evaluate
    from finerank.retrieval.mine import write_candidates

    out, _ = run
    shutil.copytree(out, tmp_path / "run")  # the module's run stays as it was for the other tests
    out = tmp_path / "run"
    card = (out / "best" / "README.md").read_text()
    meta = ModelCard(card).data.to_dict()
    assert meta["pipeline_tag"] == "sentence-similarity" and "finerank" in meta["tags"]
    record = json.loads((out / "finerank-run.json").read_text())
    assert MARK in card and "a fine-tuned embedding model (bi-encoder)" in card
    assert f"`{record['data']['train']['sha256']}`" in card and f"Training rows: {record['data']['train']['triplets']['rows']}" in card
    assert f"{record['retrieval']['best']['R@100']:.4f}" in card and "The training-free hybrid with BM25" in card
    assert "**did not improve**" in card or "**improved**" in card
    coll = load_collection("cranfield")
    write_candidates(coll, tmp_path / "test.jsonl", top_k=20, query_ids=sorted(coll.queries, key=int)[150:160])
    evaluate(["bm25"], str(tmp_path / "test.jsonl"), baselines=["bm25"], tuned_bi_encoder=str(out), query_check=0,
             log=lambda m: None)
    card = (out / "best" / "README.md").read_text()
    assert NOT_EVALUATED.split(":")[0] not in card
    assert "`bi-encoder (tuned)` is this model alone" in card and "`hybrid (tuned)` is this model with BM25" in card


def test_the_tuned_model_in_evaluate_hybrid(run, tmp_path):
    """evaluate --bi-encoder-tuned RUN adds 'bi-encoder (tuned)' and 'hybrid (tuned)': the fused score of BM25 and
    that model's cosine (finerank.retrieval.hybrid.fuse at 0.3), not the untuned hybrid's."""
    from finerank.data.candidates import Candidates
    from finerank.evaluation.evaluate import evaluate
    from finerank.retrieval.hybrid import fuse
    from finerank.retrieval.mine import write_candidates
    from finerank.retrieval.dense import BiEncoder

    out, _ = run
    coll = load_collection("cranfield")
    test_q = sorted(coll.queries, key=int)[150:160]
    write_candidates(coll, tmp_path / "test.jsonl", top_k=20, query_ids=test_q)
    rep = evaluate(["bm25"], str(tmp_path / "test.jsonl"), baselines=["bm25", "hybrid"], tuned_bi_encoder=str(out),
                   query_check=0, card=False, log=lambda m: None)
    names = [s.name for s in rep.systems]
    assert names == ["bm25", "hybrid", "bi-encoder (tuned)", "hybrid (tuned)"]
    cands = Candidates.from_file(tmp_path / "test.jsonl")
    want = fuse({"bm25": cands.first_stage_run(), "bi": BiEncoder(str(out)).score_candidates(cands)},
                {"bm25": 0.3, "bi": 0.7})
    got = rep.system("hybrid (tuned)").run
    for q in want:
        assert list(got[q]) == list(want[q]) and np.allclose(list(got[q].values()), list(want[q].values()), atol=1e-5)
    assert rep.system("hybrid (tuned)").run != rep.system("hybrid").run


def test_data_candidates_dense_and_hybrid_with_the_tuned_model(run, tmp_path):
    """data candidates --retriever dense:RUN is exact cosine top-k over the whole corpus (each pair scored by BM25);
    hybrid:RUN fuses BM25 and that cosine; an unknown retriever is refused with exit 2."""
    from finerank.retrieval.bm25 import index_for
    from finerank.retrieval.dense import BiEncoder

    out, _ = run
    coll = load_collection("cranfield")
    r = run_cli("data", "candidates", "cranfield", "--out", tmp_path / "dense.jsonl", "--top-k", "15",
                "--retriever", f"dense:{out}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["retriever"] == "dense"
    rows = [json.loads(x) for x in (tmp_path / "dense.jsonl").read_text().splitlines()]
    assert len(rows) == 15 * len(coll.queries)
    qid = rows[0]["query_id"]
    ids = list(coll.corpus)
    bi = BiEncoder(str(out))
    cos = bi.encode([coll.corpus[d].full_text for d in ids]) @ bi.encode([coll.queries[qid]])[0]
    want = [ids[i] for i in np.argsort(-cos, kind="stable")[:15]]
    assert [x["doc_id"] for x in rows if x["query_id"] == qid] == want
    bm25 = index_for(coll.corpus).scores(coll.queries[qid])
    pos = {d: i for i, d in enumerate(index_for(coll.corpus).doc_ids)}
    assert all(x["score"] == pytest.approx(float(bm25[pos[x["doc_id"]]])) for x in rows if x["query_id"] == qid)
    trec = (tmp_path / "dense.trec").read_text().splitlines()
    assert trec[0].split()[-1] == "dense"

    r = run_cli("data", "candidates", "cranfield", "--out", tmp_path / "hybrid.jsonl", "--top-k", "15",
                "--retriever", f"hybrid:{out}", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["retriever"] == "hybrid" and res["pairs"] == 15 * len(coll.queries)
    hybrid = [json.loads(x)["doc_id"] for x in (tmp_path / "hybrid.jsonl").read_text().splitlines()
              if json.loads(x)["query_id"] == qid]
    assert hybrid != want and len(set(hybrid)) == 15

    r = run_cli("data", "candidates", "cranfield", "--out", tmp_path / "x.jsonl", "--retriever", "sparse")
    assert r.returncode == 2 and "unknown retriever 'sparse'" in r.stderr and "Traceback" not in r.stderr


def test_mining_with_the_tuned_model(run):
    """data mine --model takes a bi-encoder run folder (its best/)."""
    from finerank.retrieval.mine import mine

    out, _ = run
    pairs = mine("cranfield", query_ids=["1", "2"], negatives=3, ranks=(1, 20), model=str(out), balanced=False,
                 cross_query_negatives=0)
    coll = load_collection("cranfield")
    negs = [p for p in pairs if p.label == 0 and p.doc_id not in coll.qrels[p.query_id]]
    assert len(negs) == 6 and all(p.score is not None for p in negs)


def test_cascade_tune_takes_the_tuned_model_and_saves_where_it_is(run, tiny_model, tmp_path):
    """cascade tune --bi-encoder RUN (given relative to the working directory): the saved cascade names the run's
    absolute path, so the model reranks through it from anywhere. ``--choose pairs``: the choice (bi, 5 of 20 to the
    cross-encoder) does not depend on measured latencies, which vary on a loaded machine."""
    from finerank.scorers.cascade import Cascade
    from finerank.scorers.load import load_scorer
    from finerank.retrieval.mine import write_candidates

    out, _ = run
    shutil.copytree(out, tmp_path / "bi")
    shutil.copytree(tiny_model, tmp_path / "ce")
    coll = load_collection("cranfield")
    write_candidates(coll, tmp_path / "val.jsonl", top_k=20, query_ids=sorted(coll.queries, key=int)[170:178])
    r = subprocess.run([sys.executable, "-m", "finerank", "cascade", "tune", "--model", "ce",
                        "--dataset", "val.jsonl", "--judgments", "cranfield", "--out", "tune", "--cheap", "bi", "--n1", "all", "--n2", "5",
                        "--bi-encoder", "bi", "--tolerance", "0.99", "--latency-queries", "2", "--choose", "pairs", "--save"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    spec = json.loads((tmp_path / "ce" / "finerank.json").read_text())["cascade"]
    assert spec["cheap"] == "bi" and spec["bi_encoder"] == str((tmp_path / "bi").resolve())
    scorer = load_scorer(str(tmp_path / "ce"))  # another working directory than the tuning's
    assert isinstance(scorer, Cascade)
    from finerank.data.candidates import Candidates

    ranked = scorer.score_candidates(Candidates.from_file(tmp_path / "val.jsonl"))
    assert len(ranked) == 8 and scorer.stats["cheap_docs"] == 160


def test_benchmark_reports_the_tuned_rows_and_a_paired_test():
    """benchmarks/quality.py --tune-bi-encoder: the tuned rows in the tables, dense R@100, the paired test."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    good, bad = {"q1": {"a": 2.0, "x": 1.0}, "q2": {"b": 2.0, "y": 1.0}}, {"q1": {"a": 1.0, "x": 2.0},
                                                                          "q2": {"b": 1.0, "y": 2.0}}
    fold = {"_runs": {"bm25": bad, "hybrid": bad, "bi-encoder": bad, "hybrid (tuned)": good, "bi-encoder (tuned)": good},
            "dense_retrieval": {s: {"R@100": r, "nDCG@10": r} for s, r in
                                (("bm25", 0.5), ("bi-encoder", 0.6), ("bi-encoder (tuned)", 0.7))},
            "bi_train": {"seconds": 12.0}}
    summary = quality.tuned_bi_summary([fold], qrels)
    assert summary["dense_R@100"]["bi-encoder (tuned)"] == 0.7 and summary["queries"] == 2
    test = summary["hybrid (tuned) vs hybrid"]
    assert test["delta"] > 0 and test["wins"] == 2 and test["losses"] == 0
    results = {"cranfield": {s: {"nDCG@10": 0.5, "RR@10": 0.5} for s in (*quality.TRAINING_FREE, *quality.TUNED_BI)}}
    results["cranfield"]["_meta"] = {"folds": 1, "folds_done": 1, "queries_evaluated": 2, "tuned_bi": summary}
    t = quality.tables(results)
    assert "hybrid (tuned)" in t["nDCG@10"].splitlines()[0] and "0.500 / 0.600 / 0.700" in t["tuned_bi"]
