"""Score fusion: tuned on validation, saved with the model, applied where the Reranker produces scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from finerank.retrieval.hybrid import fuse, simplex, tune, zscore
from finerank.scorers.fused import FusionSpec, Fuser


def test_zscore_and_simplex():
    z = zscore({"a": 1.0, "b": 2.0, "c": 3.0})
    assert z["b"] == pytest.approx(0.0) and z["c"] == pytest.approx(-z["a"])
    assert set(zscore({"a": 5.0, "b": 5.0}).values()) == {0.0}
    grid = simplex(["x", "y", "z"], 0.1)
    assert len(grid) == 66 and all(abs(sum(w.values()) - 1) < 1e-9 for w in grid)


def test_tune_finds_the_informative_signal():
    rng = np.random.default_rng(0)
    qrels, good, noise = {}, {}, {}
    for q in range(30):
        docs = [f"d{i}" for i in range(20)]
        rel = set(rng.choice(20, 3, replace=False))
        qrels[f"q{q}"] = {f"d{i}": int(i in rel) for i in range(20)}
        good[f"q{q}"] = {d: float(i in rel) + rng.normal(0, 0.3) for i, d in enumerate(docs)}
        noise[f"q{q}"] = {d: rng.normal() for d in docs}
    weights, value = tune({"good": good, "noise": noise}, qrels, ["good", "noise"])
    assert weights["good"] > weights["noise"]
    assert value >= tune({"noise": noise}, qrels, ["noise"])[1]
    fused = fuse({"good": good, "noise": noise}, {"good": 1.0, "noise": 0.0})
    assert sorted(fused["q0"], key=fused["q0"].get) == sorted(good["q0"], key=good["q0"].get)


def test_fuser_zscores_within_each_query_and_drops_missing_first_stage(caplog):
    f = Fuser(FusionSpec({"ce": 0.5, "bm25": 0.5}))
    pairs = [("q1", "a"), ("q1", "b"), ("q2", "c"), ("q2", "d")]
    ce = np.array([0.0, 1.0, 100.0, 101.0])          # q2's scale is far larger: z-scoring per query removes it
    first = [10.0, 0.0, 10.0, 0.0]
    out = f(pairs, ce, first)
    assert out[0] == pytest.approx(out[1]) and out[2] == pytest.approx(out[3])  # signals cancel out exactly
    assert out[0] == pytest.approx(0.0, abs=1e-6)
    alone = f(pairs, ce, None)                        # no first-stage scores: cross-encoder only, said once
    assert alone[1] > alone[0] and alone[3] > alone[2]
    assert f.warned


def test_reranker_applies_a_saved_fusion(tiny_model, tmp_path):
    from finerank.scorers.cross_encoder import Reranker

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    docs = ["wing lift", "heat transfer", "shock waves", "boundary layer"]
    first = [4.0, 3.0, 2.0, 1.0]
    raw = Reranker(str(model)).score([("q", d) for d in docs])
    FusionSpec({"ce": 0.1, "bm25": 0.9}).save(model)
    fused = Reranker(str(model))
    ranked = fused.rerank("q", docs, first_stage=first)
    assert [r.index for r in ranked] == [0, 1, 2, 3]  # the first stage dominates at weight 0.9
    assert Reranker(str(model), fuse=False).score([("q", d) for d in docs]) == pytest.approx(raw)
    assert FusionSpec.load(model).weights == {"ce": 0.1, "bm25": 0.9}
