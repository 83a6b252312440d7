"""Export: the ONNX graph scores as the torch model does, int8 keeps the ranking of a model whose scores mean
something, the folder loads in Reranker, and the check reports nDCG@10 of both and the speed ratio."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

from finerank.core.errors import FinerankError  # noqa: E402
from finerank.serving.export import export  # noqa: E402
from finerank.scorers.cross_encoder import Reranker

from conftest import run_cli
from test_rerank import FILLER, KEYWORDS, keyword_model  # noqa: F401 - the fixture, shared


@pytest.fixture(scope="module")
def keyword_validation(tmp_path_factory):
    """Labeled pairs for the keyword task: 6 queries, 6 documents each, 2 of them holding the keyword."""
    rng = random.Random(11)
    path = tmp_path_factory.mktemp("val") / "val.jsonl"
    rows = []
    for qi, k in enumerate(KEYWORDS[:6]):
        for d in range(6):
            words = [rng.choice(FILLER) for _ in range(rng.randint(10, 20))]
            if d in (2, 5):
                words.insert(rng.randint(0, len(words)), k)
            rows.append({"query_id": f"q{qi}", "query": k, "doc_id": f"q{qi}d{d}", "document": " ".join(words),
                         "label": int(d in (2, 5))})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fp32_onnx_scores_as_torch(tiny_model, tmp_path):
    rep = export(tiny_model, tmp_path / "onnx", validation=None, log=lambda m: None)
    assert rep.file == "onnx/model.onnx" and (tmp_path / "onnx" / rep.file).exists()
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert meta["quantize"] is None and meta["activation"] == "sigmoid" and meta["max_length"] == 128
    assert rep.fused.get("Attention") == 2  # one fused attention per layer of the tiny BERT
    pairs = [("a query", "a document " * k) for k in (1, 5, 40, 200)]  # the last one is windowed
    torch_scores = Reranker(tiny_model).score(pairs)
    onnx = Reranker(str(tmp_path / "onnx"))
    assert onnx.kind == "onnx" and onnx.max_length == 128
    np.testing.assert_allclose(onnx.score(pairs), torch_scores, atol=1e-5)


def test_int8_keeps_ranking_and_reports_check(keyword_model, keyword_validation, tmp_path):  # noqa: F811
    rep = export(keyword_model, tmp_path / "int8", quantize="int8", validation=keyword_validation,
                 log=lambda m: None)
    assert rep.file == "onnx/model_int8.onnx" and rep.quantize == "int8"
    c = rep.check
    assert c["queries"] == 6 and c["pairs"] == 36
    assert c["original"]["nDCG@10"] > 0.95  # the keyword model ranks the keyword documents first
    assert c["exported"]["nDCG@10"] >= 0.99 * c["original"]["nDCG@10"]
    assert c["speed_ratio"] > 0 and c["exported"]["pairs_per_second"] > 0
    assert json.loads((tmp_path / "int8" / "export.json").read_text())["check"] == c
    ranked = Reranker(str(tmp_path / "int8")).rerank("zebra", ["of the and", "the zebra of", "a to in"])
    assert ranked[0].index == 1


def test_export_refuses_what_it_cannot_do(tiny_model, tmp_path):
    with pytest.raises(FinerankError, match="transformers<5.6"):
        export(tiny_model, tmp_path / "ov", format="openvino")
    with pytest.raises(FinerankError, match="quantization"):
        export(tiny_model, tmp_path / "x", quantize="int4")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FinerankError, match="not an earlier export"):
        export(tiny_model, tmp_path / "busy", validation=None)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_cli_export_replaces_an_earlier_export(tiny_model, keyword_validation, tmp_path):
    first = export(tiny_model, tmp_path / "e", validation=None, log=lambda m: None)
    assert first.file == "onnx/model.onnx"
    r = run_cli("export", "--model", tiny_model, "--out", tmp_path / "e", "--quantize", "int8",
                "--validation", keyword_validation, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["file"] == "onnx/model_int8.onnx" and rep["check"]["pairs"] == 36
    assert not (tmp_path / "e" / "onnx" / "model.onnx").exists()  # the old export was replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no temp folder left behind
