"""benchmarks/quality.py: its tables show the systems a run produced, no more (a --training-free run has no trained
rows and no cost table); its trained rows are scored by the code that ships (Reranker.score_candidates, a saved
fusion applied by finerank.scorers.fused.fuse), not by a scoring loop of its own."""

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SPEC = importlib.util.spec_from_file_location("quality", Path(__file__).parents[1] / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(SPEC)
sys.modules["quality"] = quality  # its dataclasses look their module up there
SPEC.loader.exec_module(quality)


def _collection(systems, folds=5, train=False):
    out = {s: {"nDCG@10": 0.3 + 0.01 * i, "RR@10": 0.5 + 0.01 * i} for i, s in enumerate(systems)}
    meta = {"folds": folds, "folds_done": folds, "partial": False, "queries_evaluated": 40,
            "std": {s: {"nDCG@10": 0.02, "RR@10": 0.03} for s in systems}}
    if train:
        meta.update({"pairs": 900, "seconds": 12.5, "train_pairs_per_second": 70.0, "throughput": 900.0})
    out["_meta"] = meta
    return out


def test_training_free_tables_have_three_columns_and_no_cost():
    t = quality.tables({"cranfield": _collection(quality.TRAINING_FREE), "_run": {}})
    header = t["nDCG@10"].splitlines()[0]
    assert header == "| collection | protocol | bm25 | bi-encoder | hybrid |"
    assert "**0.320 ± 0.020**" in t["nDCG@10"]  # the row's best (hybrid) in bold, with its spread
    assert "cost" not in t


def test_trained_and_training_free_collections_share_one_table():
    t = quality.tables({"scifact": _collection(quality.SYSTEMS, folds=1, train=True),
                        "cisi": _collection(quality.TRAINING_FREE)})
    lines = t["nDCG@10"].splitlines()
    assert lines[0].count("|") == len(quality.SYSTEMS) + 3
    cisi = next(line for line in lines if line.startswith("| cisi"))
    assert cisi.rstrip(" |").endswith("| - | - | -")  # trained systems it never ran
    assert "| scifact | 900 | 12.5 | 70.0 | 900.0 |" in t["cost"]


def test_query_dependence_table_per_system():
    coll = _collection(quality.SYSTEMS, train=True)
    coll["_meta"]["query_dependence"] = {
        "bm25": {"nDCG@10": 0.7, "nDCG@10_wrong_query": 0.245, "rank_correlation": 0.01, "lists": 30},
        "fine-tuned": {"nDCG@10": 0.06, "nDCG@10_wrong_query": 0.068, "rank_correlation": 0.94, "lists": 30}}
    t = quality.tables({"medline": coll})
    row = next(line for line in t["dependence"].splitlines() if line.startswith("| medline"))
    assert row.startswith("| medline | 30 | 0.245 / 0.01 |") and "0.068 / 0.94" in row
    assert "dependence" not in quality.tables({"cisi": _collection(quality.TRAINING_FREE)})


def test_fold_dependence_scores_each_system_against_its_wrong_query_run():
    runs = {"a": {"q1": {"d1": 2.0, "d2": 1.0, "d3": 0.0}}, "b": {"q1": {"d1": 0.0, "d2": 1.0, "d3": 2.0}}}
    wrong = {"a": {"q1": {"d1": 2.0, "d2": 1.0, "d3": 0.0}}}  # "a" ranks as before under the wrong query
    dep = quality.Bench.dependence(runs, wrong, {"q1": {"d1": 1}})
    assert list(dep) == ["a"] and dep["a"]["rank_correlation"] == pytest.approx(1.0)


@pytest.mark.parametrize("flag", [["--training-free"], []])
def test_training_free_is_an_option(flag):
    args = quality.parse_args(flag + ["--collections", "cranfield"])
    assert args.training_free is bool(flag)


# ------------------------------------------------------------------------------------------------ the scoring path
@pytest.fixture(scope="module")
def cranfield_lists():
    """BM25's top 5 for three queries of the embedded Cranfield, with BM25's scores (what a saved fusion fuses)."""
    from finerank.data.candidates import Candidates
    from finerank.io.collection import load_collection
    from finerank.retrieval.bm25 import candidates

    coll = load_collection("cranfield")
    qids = sorted(coll.queries)[:3]
    return Candidates.from_run(candidates(coll, top_k=5, query_ids=qids), coll, source="cranfield BM25 top 5")


def _bench(max_length: int, rerank_batch: int = 32):
    args = quality.parse_args(["--collections", "none"])
    args.rerank_batch = rerank_batch
    args.recipe = quality.Recipe(max_length=max_length)
    return quality.Bench(args)


@pytest.fixture
def fuse_calls(monkeypatch):
    """Every call of finerank.scorers.fused.fuse (Fuser looks it up in its module at call time)."""
    fusion = importlib.import_module("finerank.scorers.fused")  # not finerank.scorers.fused as an attribute: the package shadows it
    calls = []
    real = fusion.fuse

    def spy(runs, weights):
        calls.append(dict(weights))
        return real(runs, weights)

    monkeypatch.setattr(fusion, "fuse", spy)
    return calls


def test_fused_row_is_what_the_shipped_reranker_returns(tiny_model, tmp_path, cranfield_lists, fuse_calls):
    from finerank.scorers.fused import FusionSpec
    from finerank.scorers.cross_encoder import Reranker

    folder = tmp_path / "best"
    shutil.copytree(tiny_model, folder)
    FusionSpec({"ce": 0.5, "bm25": 0.5}).save(folder)  # as finerank.training.cross_encoder saves a fusion that won on validation
    assert cranfield_lists.scored
    product = Reranker(folder)  # what evaluate, rerank and serve load for this folder

    rows = _bench(product.max_length).score_trained(str(folder), cranfield_lists, product.max_length)
    assert fuse_calls and all(w == {"ce": 0.5, "bm25": 0.5} for w in fuse_calls)  # through finerank.scorers.fused.fuse
    shipped = product.score_candidates(cranfield_lists)
    alone = Reranker(folder, fuse=False).score_candidates(cranfield_lists)
    assert rows["fine-tuned+fusion"]["run"] == shipped  # exactly: the same function on the same inputs
    assert rows["fine-tuned"]["run"] == alone
    assert shipped != alone
    assert rows["fine-tuned"]["inputs"] >= cranfield_lists.n_pairs and rows["fine-tuned"]["seconds"] > 0  # windows


def test_without_a_saved_fusion_the_shipped_row_is_the_cross_encoder(tiny_model, cranfield_lists, fuse_calls):
    from finerank.scorers.cross_encoder import Reranker

    bench = _bench(128)
    rows = bench.score_trained(tiny_model, cranfield_lists, 128)
    assert rows["fine-tuned+fusion"]["run"] == rows["fine-tuned"]["run"]
    alone = Reranker(tiny_model, max_length=128, fuse=False).score_candidates(cranfield_lists)
    assert rows["fine-tuned"]["run"] == alone
    assert not fuse_calls


def test_trained_fusion_reports_what_ships():
    info = {"queries": 5, "systems": {"cross-encoder": {"nDCG@10": 0.40}, "fusion": {"nDCG@10": 0.45},
                                      "hybrid": {"nDCG@10": 0.42}},
            "weights": {"fusion": {"ce": 0.3, "bm25": 0.4, "bi": 0.3}, "hybrid": {"bm25": 0.6, "bi": 0.4}}}
    saved = quality.trained_fusion(SimpleNamespace(fusion=info, fusion_saved=True, best_metrics={"nDCG@10": 0.40}))
    assert saved == {"alone": 0.40, "tuned": 0.45, "weights": {"ce": 0.3, "bm25": 0.4, "bi": 0.3}, "saved": True,
                     "shipped": 0.45}
    lost = quality.trained_fusion(SimpleNamespace(fusion=info, fusion_saved=False, best_metrics={"nDCG@10": 0.50}))
    assert lost["shipped"] == 0.50 and lost["tuned"] == 0.45 and not lost["saved"]
    none = quality.trained_fusion(SimpleNamespace(fusion=None, fusion_saved=False, best_metrics={"nDCG@10": 0.50}))
    assert none["tuned"] is None and none["shipped"] == 0.50
