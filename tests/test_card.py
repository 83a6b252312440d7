"""The model card finerank writes into best/README.md, evaluate's update of it, and --report-to tensorboard."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from conftest import run_cli
from finerank.report.card import (EVAL_END, EVAL_START, MARK, NOT_EVALUATED, base_model, finerank_model_dir, front_matter,
                           write_card)
from finerank.core.errors import FinerankError
from finerank.scorers.fused import FusionSpec
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.io.models import resolve_model
from finerank.retrieval.bm25 import candidates
from finerank.retrieval.mine import candidate_pairs
from finerank.training.config import tracking
from test_train import _lists


def _front_matter(text: str) -> dict:
    import yaml

    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    ds = load("cranfield")
    qids = sorted(ds.collection.queries, key=int)[200:212]
    path = tmp_path_factory.mktemp("held-out") / "test-candidates.jsonl"
    write_pairs(path, candidate_pairs(ds.collection, candidates(ds.collection, top_k=10, query_ids=qids)))
    return path


def test_base_model_and_fresh_head(tiny_model):
    mini = base_model("minilm-l6")
    assert mini["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2" and mini["fresh_head"] is True
    assert _front_matter(front_matter(mini))["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    tiny = base_model(tiny_model)
    assert tiny["hub_id"] is None and tiny["path"] == tiny_model and tiny["fresh_head"] is False
    assert "base_model" not in _front_matter(front_matter(tiny))  # a local path is no hub id: left out
    hub = base_model("some-org/not-cached-anywhere")
    assert hub["hub_id"] == "some-org/not-cached-anywhere" and hub["fresh_head"] is None


def test_train_writes_the_card_evaluate_fills_it_and_tensorboard_logs(tiny_model, held_out, tmp_path):
    from huggingface_hub import ModelCard
    from sentence_transformers import CrossEncoder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_pairs(tmp_path / "train.jsonl", _lists(40, offset=0))
    write_pairs(tmp_path / "val.jsonl", _lists(10, offset=100))
    run = tmp_path / "run"
    r = run_cli("train", "--model", tiny_model, "--train", tmp_path / "train.jsonl", "--val", tmp_path / "val.jsonl",
                "--val-corpus", "cranfield", "--val-top-k", "10", "--out", run, "--max-length", "64", "--batch-size",
                "8", "--eval-steps", "5", "--max-steps", "10", "--loss", "bce", "--query-check", "0",
                "--report-to", "tensorboard")
    assert r.returncode == 0, r.stderr
    record = json.loads((run / "finerank-run.json").read_text())
    best = run / "best"
    text = (best / "README.md").read_text()

    # valid HF / sentence-transformers metadata, and the folder still loads as it is
    meta = _front_matter(text)
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "text-ranking"
    assert "cross-encoder" in meta["tags"]
    assert ModelCard(text).data.to_dict()["library_name"] == "sentence-transformers"
    assert CrossEncoder(str(best)).predict([("q", "d")]).shape == (1,)

    # base, data, recipe, validation history
    assert MARK in text and "This is a [Cross Encoder]" not in text  # sentence-transformers' generic card replaced
    assert f"Base model: `{tiny_model}`" in text and "the base's own sequence-classification head" in text
    assert "`train.jsonl`" in text and record["data"]["train"]["sha256"] in text
    assert record["data"]["val"]["sha256"] in text and "BM25 top 10 over cranfield" in text
    assert f"| {record['data']['train']['pairs']} | 40 |" in text
    assert "labels 0, 1, 2, 3, 4" in text and "| learning rate | 3e-05 |" in text
    kept = int(record["best_checkpoint"].rsplit("-", 1)[-1])
    assert f"**{kept} (kept)**" in text
    for h in record["eval_history"]:
        assert f"{h['nDCG@10']:.4f}" in text
    spec = FusionSpec.load(best)
    assert ("does not give it" in text) == (spec is not None)
    if spec is not None:
        terms = " + ".join(f"{w:g} · z({k})" for k, w in spec.weights.items() if w)
        assert f"score = {terms}" in text
    assert NOT_EVALUATED in text

    # evaluate puts its table into the card's evaluation section, and only there
    models = [f"shipped={run}"] + ([f"alone=raw:{run}"] if spec is not None else [])
    r = run_cli("evaluate", *sum((["--model", m] for m in models), []), "--dataset", held_out, "--judgments",
                "cranfield", "--query-check", "5", "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    after = (best / "README.md").read_text()
    section = after.split(EVAL_START)[1].split(EVAL_END)[0]
    assert NOT_EVALUATED not in after and "`test-candidates.jsonl`" in section and "12 queries" in section
    assert "| bm25 (baseline) |" in section and "| shipped |" in section and "rank corr." in section
    assert "`shipped` is this model as shipped" in section
    if spec is not None:
        assert "| alone |" in section and "`alone` is this model's cross-encoder alone" in section
    assert after.split(EVAL_START)[0] == text.split(EVAL_START)[0]  # the training part untouched
    assert after.split(EVAL_END)[1] == text.split(EVAL_END)[1]
    assert _front_matter(after) == meta

    # --report-to tensorboard: event files with the validation metrics the run record holds
    events = list((run / "runs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("eval/val_nDCG@10")}
    assert logged == pytest.approx({h["step"]: h["nDCG@10"] for h in record["eval_history"]}, abs=1e-6)


def test_the_cards_formula_gives_the_shipped_score(tiny_model, tmp_path):
    """The snippet in the warning box, run as written (paths filled in), scores as the Reranker that ships."""
    from finerank.scorers.cross_encoder import Reranker

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    weights = {"ce": 0.3, "bm25": 0.5, "bi": 0.2}
    FusionSpec(weights, "minilm-l6").save(model)
    card = write_card(model, {"config": {"model": tiny_model}}).read_text()
    code = re.search(r"> ```python\n(.*?)> ```", card, re.S).group(1)
    code = "\n".join(line[2:] for line in code.splitlines())
    code = code.replace('"PATH"', repr(str(model))).replace('"sentence-transformers/all-MiniLM-L6-v2"',
                                                              repr(resolve_model("minilm-l6")))
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the card's own snippet
    query = "how does the boundary layer behave near a shock"
    docs = ["boundary layer separation at a shock wave", "heat transfer in a cylinder", "wing flutter at low speed",
            "laminar boundary layer on a flat plate", "shock waves in nozzles"]
    bm25 = [7.5, 1.2, 0.4, 5.0, 3.3]
    shipped = Reranker(str(model)).score([(query, d) for d in docs], first_stage=bm25)
    assert np.asarray(ns["shipped_scores"](query, docs, bm25)) == pytest.approx(shipped, abs=1e-4)
    alone = Reranker(str(model), fuse=False).score([(query, d) for d in docs])
    assert not np.allclose(alone, shipped, atol=1e-3)  # the box warns about a real difference


def test_cards_finerank_did_not_write_are_left_alone(tiny_model, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    assert finerank_model_dir(str(plain)) is None  # sentence-transformers' own card: not ours to rewrite
    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "best")  # a run trained before finerank wrote cards: record, no card
    (run / "finerank-run.json").write_text(json.dumps({"config": {"model": "minilm-l6"}, "versions": {}}))
    assert finerank_model_dir(str(run)) == run / "best"
    text = (run / "best" / "README.md").read_text()
    assert MARK in text and "base_model: sentence-transformers/all-MiniLM-L6-v2" in text
    assert "Scoring head: **fresh**" in text


def test_report_to_choices():
    assert tracking("none") == "none" and tracking("TensorBoard") == "tensorboard"
    with pytest.raises(FinerankError, match="unknown --report-to"):
        tracking("comet")
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(FinerankError) as e:
            tracking("wandb")
        assert "finerank[wandb]" in e.value.hint
