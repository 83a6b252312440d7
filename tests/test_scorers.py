"""Every kind of Scorer loads through load_scorer and scores the same list: BM25, dense, the hybrid, a cross-encoder
(torch and its ONNX export), a fused model and a cascade; each states its name, scale, parts and cost. The model's
finerank.json is read by one validating reader: a broken one is a ModelError naming the file and the field."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from finerank.core.errors import FinerankError, ModelError
from finerank.data.candidates import Candidates
from finerank.retrieval.dense import BiEncoder
from finerank.retrieval.hybrid import HYBRID_WEIGHT, fuse
from finerank.scorers.base import SCALES, Scorer, rank
from finerank.scorers.cascade import Cascade, CascadeSpec
from finerank.scorers.cross_encoder import Reranker
from finerank.scorers.first_stage import BM25Scorer, HybridScorer
from finerank.scorers.fused import FusedScorer, FusionSpec
from finerank.scorers.load import load_scorer
from finerank.scorers.spec import SPEC_FILE, read_model_spec

from conftest import run_cli

DOCS = ["wing lift and drag at supersonic speed", "heat transfer in a boundary layer", "shock waves on a cone",
        "the boundary layer of a flat plate", "buckling of thin cylindrical shells"]


@pytest.fixture(scope="module")
def cands() -> Candidates:
    queries = {"q1": "boundary layer heat transfer", "q2": "shock waves"}
    docs = {q: [(f"{q}-d{i}", t) for i, t in enumerate(DOCS)] for q in queries}
    first = {q: {d: float(len(DOCS) - i) * (1 + k) for i, (d, _) in enumerate(ds)}
             for k, (q, ds) in enumerate(docs.items())}
    qrels = {"q1": {"q1-d1": 1, "q1-d3": 1}, "q2": {"q2-d2": 1}}
    return Candidates(queries, docs, first, qrels, "test lists")


@pytest.fixture
def model(tiny_model, tmp_path) -> str:
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst)
    return str(dst)


def _check(scorer, cands: Candidates, kind: str, scale: str) -> dict:
    """The Scorer's face, and a run over exactly the candidates with finite scores."""
    assert isinstance(scorer, Scorer)
    assert scorer.scale == scale and scale in SCALES and isinstance(scorer.name, str) and scorer.name
    info = scorer.describe()
    assert info["kind"] == kind and info["scale"] == scale
    run = scorer.score_candidates(cands)
    assert {q: set(d) for q, d in run.items()} == {q: {d for d, _ in ds} for q, ds in cands.docs.items()}
    assert all(np.isfinite(s) for docs in run.values() for s in docs.values())
    return run


def test_bm25_dense_and_hybrid(cands, tiny_bi):
    bm25 = load_scorer("bm25")
    assert isinstance(bm25, BM25Scorer) and bm25.cost(cands) == 0
    assert _check(bm25, cands, "bm25", "bm25") == cands.first_stage_run()

    encoders: dict = {}
    for spec in (f"bi:{tiny_bi}", f"dense:{tiny_bi}", tiny_bi):  # a sentence-transformers folder is dense
        dense = load_scorer(spec, encoders=encoders)
        assert isinstance(dense, BiEncoder) and dense.cost(cands) == cands.n_pairs
        cos = _check(dense, cands, "bi-encoder", "cosine")
        assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for docs in cos.values() for s in docs.values())
    assert len(encoders) == 1  # one BiEncoder a model, shared: documents encoded once

    hybrid = load_scorer(f"hybrid:0.5@{tiny_bi}", encoders=encoders)
    assert isinstance(hybrid, HybridScorer) and hybrid.bi is dense and hybrid.weight == 0.5
    assert hybrid.describe()["weight"] == 0.5 and hybrid.cost(cands) == cands.n_pairs
    assert _check(hybrid, cands, "hybrid", "zsum") == fuse({"bm25": cands.first_stage_run(), "bi": cos},
                                                           {"bm25": 0.5, "bi": 0.5})
    default = load_scorer("hybrid", bi_encoder=tiny_bi)
    assert default.weight == HYBRID_WEIGHT and default.bi.name == dense.name
    assert load_scorer(f"hybrid@{tiny_bi}").weight == HYBRID_WEIGHT

    unscored = Candidates(cands.queries, cands.docs, {}, cands.qrels, "no scores")
    with pytest.raises(FinerankError, match="first-stage"):
        bm25.score_candidates(unscored)
    with pytest.raises(FinerankError, match="must be a number"):
        load_scorer("hybrid:heavy")
    with pytest.raises(FinerankError, match=r"\[0, 1\]"):
        load_scorer("hybrid:1.5")


def test_cross_encoder_fused_and_cascade(cands, model):
    ce = load_scorer(model, max_length=128)
    assert isinstance(ce, Reranker) and ce.fusion is None and ce.kind == "torch"
    scale = "sigmoid" if ce.backend.activation == "sigmoid" else "logit"
    raw = _check(ce, cands, "cross-encoder", scale)
    if scale == "sigmoid":
        assert all(0.0 <= s <= 1.0 for docs in raw.values() for s in docs.values())
    assert ce.cost(cands) == cands.n_pairs  # short documents: one window each
    assert ce.describe()["backend"] == "torch"

    FusionSpec({"ce": 0.5, "bm25": 0.5}).save(model)
    fused = load_scorer(model, max_length=128)
    assert isinstance(fused, FusedScorer) and isinstance(fused.ce, Reranker) and fused.ce.fusion is None
    run = _check(fused, cands, "fused", "zsum")
    assert fused.describe()["fusion"]["weights"] == {"ce": 0.5, "bm25": 0.5}
    assert run == fuse({"ce": raw, "bm25": cands.first_stage_run()}, {"ce": 0.5, "bm25": 0.5})
    shipped = Reranker(model, max_length=128)  # fr.Reranker: the same fused score, through the same code path
    assert shipped.scale == "zsum" and shipped.score_candidates(cands) == run
    listed = rank(fused, cands.queries["q1"], [t for _, t in cands.docs["q1"]],
                  first_stage=[cands.first_stage["q1"][d] for d, _ in cands.docs["q1"]])
    assert [r.score for r in listed] == sorted(run["q1"].values(), reverse=True)
    for alone in (load_scorer(model, fuse=False, max_length=128), load_scorer(f"raw:{model}", max_length=128)):
        assert isinstance(alone, Reranker) and alone.fusion is None and alone.score_candidates(cands) == raw

    CascadeSpec(n2=2).save(model)
    casc = load_scorer(f"cross:{model}", max_length=128)
    assert isinstance(casc, Cascade) and isinstance(casc.expensive, FusedScorer)
    assert isinstance(casc.cheap, BM25Scorer) and casc.describe()["cascade"]["n2"] == 2
    assert casc.cost(cands) == 2 * len(cands.docs) < fused.cost(cands)
    crun = _check(casc, cands, "cascade", "cascade")
    for q, ds in cands.docs.items():
        head = [d for d, _ in ds[:2]]  # BM25's top 2 go to the cross-encoder and stay on top
        assert sorted(crun[q], key=lambda d: -crun[q][d])[:2] == sorted(head, key=lambda d: -crun[q][d])
    assert casc.stats["ce_pairs"] == 4 and casc.stats["skipped"] == cands.n_pairs - 4
    assert isinstance(load_scorer(model, cascade=False, max_length=128), FusedScorer)
    assert load_scorer(casc) is casc and load_scorer(casc, cascade=False) is casc.expensive
    assert load_scorer(ce) is not ce and isinstance(load_scorer(ce), Cascade)  # a Reranker gains its cascade


def test_the_onnx_export_is_a_cross_encoder_on_the_same_scale(cands, tiny_model, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from finerank.serving.export import export

    export(tiny_model, tmp_path / "onnx", validation=None, log=lambda m: None)
    torch_ce = load_scorer(tiny_model, max_length=128)
    onnx_ce = load_scorer(str(tmp_path / "onnx"))
    assert isinstance(onnx_ce, Reranker) and onnx_ce.kind == "onnx" and onnx_ce.describe()["backend"] == "onnx"
    run = _check(onnx_ce, cands, "cross-encoder", torch_ce.scale)
    want = torch_ce.score_candidates(cands)
    assert all(run[q][d] == pytest.approx(want[q][d], abs=1e-4) for q in want for d in want[q])


@pytest.mark.parametrize("text,field", [("", "empty"), ("{nope", "not valid JSON"), ("[1, 2]", "got list"),
                                        ('{"fusion": [0.5]}', "field 'fusion'"),
                                        ('{"cascade": "n2=5"}', "field 'cascade'"),
                                        ('{"fusion": {"weights": {"ce": "a"}}}', "field 'fusion.weights'"),
                                        ('{"cascade": {"n2": 0}}', "field 'cascade'")])
def test_a_broken_model_spec_is_a_model_error_naming_file_and_field(model, text, field):
    (__import__("pathlib").Path(model) / SPEC_FILE).write_text(text)
    with pytest.raises(ModelError, match=field) as e:
        load_scorer(model, max_length=128)
    assert SPEC_FILE in str(e.value)


def test_the_reader_keeps_other_parts_and_the_cli_refuses_a_broken_file(model, tmp_path):
    assert read_model_spec(model).fusion is None and read_model_spec(None).path is None
    FusionSpec({"ce": 1.0}).save(model)
    CascadeSpec(n2=3).save(model)
    spec = read_model_spec(model)
    assert spec.fusion["weights"] == {"ce": 1.0} and spec.cascade["n2"] == 3
    assert CascadeSpec.remove(model) and read_model_spec(model).cascade is None
    assert read_model_spec(model).fusion is not None

    (tmp_path / "model" / SPEC_FILE).write_text("[]")
    rows = tmp_path / "c.jsonl"
    rows.write_text('{"query_id": "q", "query": "q", "doc_id": "d", "document": "text"}\n')
    r = run_cli("rerank", "--model", model, "--input", rows, "--output", tmp_path / "o.jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert SPEC_FILE in r.stderr and "expected a JSON object" in r.stderr
