"""finerank distill: pseudo-queries and query logs, the teacher's cached scores, resume after a kill, no held-out
query reaching the student, and the student's best/ taken by train --model."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from finerank.core.errors import FinerankError
from finerank.core.records import Document
from finerank.data.queries import drop_held_out, pseudo_queries, read_query_log
from finerank.io.collection import load_collection
from finerank.io.outputs import write_pairs
from finerank.training.distill import DistillConfig, distill, distillation_lists, zscores
from finerank.training.teacher import CACHE


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Cranfield: 8 training queries as a query log, 4 labeled validation queries, 4 held-out queries."""
    coll = load_collection("cranfield")
    qids = sorted(coll.queries, key=int)
    d = tmp_path_factory.mktemp("distill-data")
    (d / "log.txt").write_text("\n".join(coll.queries[q] for q in qids[:8]) + "\n")
    write_pairs(d / "val.jsonl", [p for p in coll.pairs() if p.query_id in set(qids[100:104])])
    write_pairs(d / "test.jsonl", [p for p in coll.pairs() if p.query_id in set(qids[200:204])])
    return d


def _config(data, out, teacher, student, **extra) -> DistillConfig:
    opts = dict(model=student, teacher=teacher, queries=str(data / "log.txt"), pseudo_queries=6, corpus="cranfield",
                top_k=4, val=str(data / "val.jsonl"), val_corpus="cranfield", val_top_k=10, out=str(out),
                max_length=64, batch_size=8, eval_steps=2, max_steps=4, lr=5e-5, bi_encoder=extra.pop("bi", "minilm-l6"),
                held_out=str(data / "test.jsonl"), query_check=0, fusion="off")
    opts.update(extra)
    return DistillConfig(**opts)


# ------------------------------------------------------------------------------------------------ queries
def test_pseudo_queries_take_the_query_out_of_its_document():
    corpus = {"a": Document("a", "wing flutter at high speed . the flutter of a wing was measured in a tunnel .",
                            "wing flutter at high speed ."),
              "b": Document("b", "no title here . it has two sentences with enough words in them .")}
    by_doc = {p.doc_id: p for p in pseudo_queries(corpus, 5, kind="auto")}
    assert by_doc["a"].kind == "title" and by_doc["a"].text == "wing flutter at high speed ."
    assert not by_doc["a"].document.startswith("wing flutter at high speed")
    assert by_doc["b"].kind == "sentence" and by_doc["b"].text not in by_doc["b"].document
    assert [p.doc_id for p in pseudo_queries(corpus, 5, kind="title")] == ["a"]
    with pytest.raises(FinerankError):
        pseudo_queries(corpus, 1, kind="words")


def test_query_log_text_and_jsonl(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"query": "lift of a wing", "query_id": "q1"}\n\n{"text": "drag"}\nplain line\n'
                 '{"query": "Lift of a wing!"}\n')
    assert read_query_log(p) == {"q1": "lift of a wing", "log-3": "drag", "log-4": "plain line"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": ""}\n')
    with pytest.raises(FinerankError) as e:
        read_query_log(bad)
    assert "bad.jsonl:1" in str(e.value) and "field 'query'" in str(e.value)


def test_held_out_queries_are_dropped_by_normalized_text():
    kept, n = drop_held_out({"a": "Lift of a wing?", "b": "drag"}, {"t": "lift of a  wing"})
    assert kept == {"b": "drag"} and n == 1


def test_no_held_out_query_reaches_the_student(data, tmp_path):
    """A held-out query in the query log is dropped before the lists are made; no list, and so no teacher score or
    training example, carries its text."""
    coll = load_collection("cranfield")
    qids = sorted(coll.queries, key=int)
    log = tmp_path / "log.txt"
    log.write_text(coll.queries[qids[1]] + "\n" + coll.queries[qids[200]] + "\n")  # the second is held out
    cfg = _config(data, tmp_path / "run", "bm25", "minilm-l6", queries=str(log), pseudo_queries=3)
    cands, counts = distillation_lists(cfg)
    held = {coll.queries[q] for q in qids[200:204]}
    assert counts["held_out_dropped"] == 1 and counts["log"] == 1 and counts["pseudo"] == 3
    assert not held & set(cands.queries.values())
    assert not set(cands.queries.values()) & set(coll.queries[q] for q in qids[100:104]) - {coll.queries[qids[1]]}


def test_zscores():
    z = zscores({"a": 1.0, "b": 3.0})
    assert z == {"a": -1.0, "b": 1.0} and zscores({"a": 2.0, "b": 2.0}) == {"a": 0.0, "b": 0.0}


# ------------------------------------------------------------------------------------------------ runs
def test_distill_from_a_cross_encoder_teacher_end_to_end(data, tiny_model, tmp_path):
    """Teacher: a tiny cross-encoder folder; student: another tiny one. best/ loads with CrossEncoder(path), the cache
    holds every list, the record names the teacher, and train --model takes the run folder."""
    from sentence_transformers import CrossEncoder

    out = tmp_path / "run"
    result = distill(_config(data, out, tiny_model, tiny_model), progress=False)
    lines = (out / CACHE).read_text().splitlines()
    rec = json.loads((out / "finerank-run.json").read_text())
    assert len(lines) == 1 + rec["teacher"]["queries"] and rec["teacher"]["cached_lists"] == 0
    assert rec["arch"] == "distill" and rec["teacher"]["scale"] in ("sigmoid", "logit") and rec["loss"] == "mse"
    assert rec["teacher"]["log"] == 8 and rec["teacher"]["pseudo"] == 6
    assert f"val_nDCG@10" in rec["teacher"] and result.best_metrics
    ce = CrossEncoder(result.best_dir)
    assert ce.predict([("wing", "a wing")]).shape == (1,)
    r = run_cli("train", "--model", out, "--train", data / "val.jsonl", "--out", tmp_path / "ft", "--max-steps", "1",
                "--max-length", "64", "--fusion", "off", "--query-check", "0")
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("loss", ["margin-mse", "listnet"])
def test_distill_from_the_hybrid(data, tiny_model, tiny_bi, tmp_path, loss):
    out = tmp_path / "run"
    result = distill(_config(data, out, f"hybrid:0.5@{tiny_bi}", tiny_model, loss=loss), progress=False)
    rec = json.loads((out / "finerank-run.json").read_text())
    assert rec["loss"] == loss and rec["teacher"]["scale"] == "zsum" and rec["teacher"]["parts"]["weight"] == 0.5
    assert result.train_pairs > 0


class _Counting:
    """A teacher that counts the lists it scores and fails on the n-th call (a kill mid-scoring)."""

    def __init__(self, inner, fail_on: int | None = None):
        self.inner, self.fail_on, self.calls, self.lists = inner, fail_on, 0, []
        self.name, self.scale = inner.name, inner.scale

    def describe(self):
        return self.inner.describe()

    def cost(self, cands):
        return self.inner.cost(cands)

    def score_candidates(self, cands, *, progress=False):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("killed")
        self.lists += list(cands.docs)
        return self.inner.score_candidates(cands)


def test_resume_after_a_kill_reuses_the_cached_teacher_scores(data, tiny_model, tmp_path, monkeypatch):
    from finerank.scorers.load import load_scorer
    from finerank.training import distill as mod, teacher

    monkeypatch.setattr(teacher, "CHUNK", 4)
    first = _Counting(load_scorer("bm25"), fail_on=3)  # two chunks of 4 lists scored, then killed
    monkeypatch.setattr(mod, "load_scorer", lambda *a, **k: first)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        distill(_config(data, out, "bm25", tiny_model), progress=False)
    assert len(first.lists) == 8 and len((out / CACHE).read_text().splitlines()) == 9
    second = _Counting(load_scorer("bm25"))
    monkeypatch.setattr(mod, "load_scorer", lambda *a, **k: second)
    result = distill(_config(data, out, "bm25", tiny_model, resume=True), progress=False)
    total = result.teacher["queries"]
    rescored = [q for q in second.lists if q.startswith(("log-", "pq-"))]  # not the validation lists it also scores
    assert not set(rescored) & set(first.lists) and len(rescored) == total - 8
    assert result.teacher["cached_lists"] == 8


def test_cli_distill_prints_the_teacher_and_refuses_bad_input(data, tiny_model, tmp_path):
    r = run_cli("distill", "--teacher", "bm25", "--student", tiny_model, "--corpus", "cranfield", "--queries",
                data / "log.txt", "--pseudo-queries", "4", "--top-k", "4", "--held-out", data / "test.jsonl",
                "--val", data / "val.jsonl", "--val-corpus", "cranfield", "--out", tmp_path / "run", "--max-steps", "2",
                "--max-length", "64", "--eval-steps", "1", "--batch-size", "8")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "distilled on 12 lists (8 logged queries, 4 pseudo-queries; 0 held-out dropped" in r.stdout
    assert (tmp_path / "run" / "best" / "config.json").exists()
    r = run_cli("distill", "--corpus", "cranfield", "--out", tmp_path / "none")  # no queries at all
    assert r.returncode == 2 and "no distillation queries" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("distill", "--corpus", "cranfield", "--queries", tmp_path / "missing.txt", "--out", tmp_path / "m")
    assert r.returncode == 2 and "missing.txt" in r.stderr and "Traceback" not in r.stderr
