"""Issue 26, second pass (items 4, 5, 8, 9, 10): one reader for finerank.json, model checks at load (a probe through
every part), serve never answers 500, training refusals (no relevant label, no examples, --resume across
architectures or past --max-steps), hashes of the bytes read, an atomic lock takeover, and the smaller cases (an
empty API key, a NaN model, reserved system names, a document length cap, conflicting grades, lone surrogates).

The table of bad invocations runs through the CLI's entry point in this process (the tiny models load once)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finerank.core.errors import DataError, FinerankError, ModelError


# ------------------------------------------------------------------------------------------------ helpers
def cli(capsys, *args) -> tuple[int, str]:
    """Exit code and output of ``finerank ARGS``; any other exception fails the test (a traceback to a user)."""
    from finerank.cli.app import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def _rows(n_queries: int = 2, n_docs: int = 4, label=lambda i: int(i == 0)) -> list[dict]:
    return [{"query_id": f"q{q}", "query": f"query about topic {q}", "doc_id": f"q{q}-d{i}",
             "document": f"document {i} on topic {q} and other things", "label": label(i), "score": 10.0 - i}
            for q in range(n_queries) for i in range(n_docs)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _nan_copy(src, dst: Path) -> Path:
    """A copy of the tiny cross-encoder whose scoring head's bias is NaN: every score it gives is NaN."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    key = next(k for k in weights if k.endswith("classifier.bias"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def bed(tiny_model, tiny_bi, tmp_path_factory):
    """Candidates (labeled, all-zero labels), a copy of the tiny model, a NaN copy, a copy of the tiny bi-encoder."""
    d = tmp_path_factory.mktemp("robust3")
    _write(d / "cands.jsonl", _rows())
    _write(d / "zeros.jsonl", _rows(label=lambda i: 0))
    shutil.copytree(tiny_model, d / "model")
    _nan_copy(tiny_model, d / "nan")
    shutil.copytree(tiny_bi, d / "bi")
    return d


def _model_with(bed, tmp: Path, spec_text: str) -> Path:
    m = tmp / "m"
    shutil.copytree(bed / "model", m)
    (m / "finerank.json").write_text(spec_text)
    return m


def _rerank(bed, tmp, model):
    return ["rerank", "--model", model, "--input", bed / "cands.jsonl", "--output", tmp / "o.jsonl"]


def _evaluate(bed, model, *extra):
    return ["evaluate", "--model", model, "--dataset", bed / "cands.jsonl", "--query-check", "0", "--no-card", *extra]


# ----------------------------------------------------------------------------------- the table of bad calls
def case_spec_empty(bed, tmp):
    return _rerank(bed, tmp, _model_with(bed, tmp, "")), "finerank.json: the file is empty"


def case_spec_invalid_json(bed, tmp):
    return _rerank(bed, tmp, _model_with(bed, tmp, "{fusion")), "finerank.json: not valid JSON"


def case_spec_an_array(bed, tmp):
    return _evaluate(bed, _model_with(bed, tmp, "[1, 2]")), "finerank.json: expected a JSON object, got list"


def case_spec_fusion_not_an_object(bed, tmp):
    return _evaluate(bed, _model_with(bed, tmp, '{"fusion": 3}')), "finerank.json: field 'fusion': got 3"


def case_spec_unknown_key(bed, tmp):
    return _rerank(bed, tmp, _model_with(bed, tmp, '{"fusoin": {}}')), "finerank.json: field 'fusoin'"


def case_spec_fusion_weight_nan(bed, tmp):
    return (_rerank(bed, tmp, _model_with(bed, tmp, '{"fusion": {"weights": {"ce": NaN}}}')),
            "finerank.json: field 'fusion.weights'")


def case_spec_fusion_bi_encoder_not_a_name(bed, tmp):
    return (_rerank(bed, tmp, _model_with(bed, tmp, '{"fusion": {"weights": {"ce": 1}, "bi_encoder": 5}}')),
            "finerank.json: field 'fusion.bi_encoder'")


def case_nan_model_rerank(bed, tmp):
    return _rerank(bed, tmp, bed / "nan"), "scored a probe pair nan, expected a finite score"


def case_nan_model_evaluate(bed, tmp):
    return _evaluate(bed, bed / "nan"), "scored a probe pair nan, expected a finite score"


def case_cascade_bi_encoder_moved(bed, tmp):
    spec = {"cascade": {"n2": 1, "cheap": "bi", "bi_encoder": str(tmp / "moved-bi")}}
    return (_rerank(bed, tmp, _model_with(bed, tmp, json.dumps(spec))),
            "its part scorer.cheap (bi-encoder")


def case_fusion_bi_encoder_moved(bed, tmp):
    spec = {"fusion": {"weights": {"ce": 1.0, "bi": 0.5}, "bi_encoder": str(tmp / "moved-bi")}}
    return (_evaluate(bed, _model_with(bed, tmp, json.dumps(spec))), "its part scorer.fusion-bi-encoder")


def case_cascade_tune_without_a_relevant_label(bed, tmp):
    return (["cascade", "tune", "--model", bed / "model", "--dataset", bed / "zeros.jsonl", "--out", tmp / "t",
             "--cheap", "bm25", "--n2", "2"], "no list holds a relevant document")


def case_train_without_examples(bed, tmp):
    one = _write(tmp / "one.jsonl", [dict(r, doc_id="d1", document="the only document") for r in _rows(3, 1)])
    return (["train", "--model", bed / "model", "--train", one, "--out", tmp / "run", "--loss", "lambda",
             "--max-steps", "2", "--max-length", "64", "--fusion", "off"],
            "no training examples: LambdaLoss learns from a query's list of two or more documents")


def case_resume_a_cross_encoder_run_as_a_bi_encoder(bed, tmp):
    run = tmp / "run"
    run.mkdir()
    (run / "finerank-run.json").write_text(json.dumps({"config": {"arch": "cross-encoder", "max_steps": 2}}))
    return (["train", "--arch", "bi-encoder", "--model", bed / "bi", "--train", bed / "cands.jsonl", "--out", run,
             "--resume", "--max-steps", "2"], "holds a cross-encoder run")


def case_resume_a_bi_encoder_checkpoint_as_a_cross_encoder(bed, tmp):
    ckpt = tmp / "run" / "checkpoint-4"
    shutil.copytree(bed / "bi", ckpt)
    (ckpt / ".finerank-complete").write_text("")
    return (["train", "--model", bed / "model", "--train", bed / "cands.jsonl", "--out", tmp / "run", "--resume",
             "--max-steps", "8"], "holds a bi-encoder run")


def case_serve_with_an_empty_api_key(bed, tmp):
    return ["serve", "--model", bed / "model", "--api-key", ""], "the API key is empty"


def case_evaluate_a_model_named_bm25(bed, tmp):
    return _evaluate(bed, f"bm25={bed / 'model'}"), "the name 'bm25' is reserved for the BM25 baseline"


def case_evaluate_a_model_named_BM25(bed, tmp):
    return _evaluate(bed, f"BM25={bed / 'model'}"), "the name 'BM25' is reserved for the BM25 baseline"


def case_evaluate_names_sharing_a_run_file(bed, tmp):
    return (_evaluate(bed, f"mine={bed / 'model'}", "--model", f"Mine={bed / 'model'}"),
            "share a file in the report's runs/")


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_invocation_exits_2_naming_the_cause(case, bed, tmp_path, capsys):
    argv, message = case(bed, tmp_path)
    code, output = cli(capsys, *argv)
    flat = " ".join(output.split())
    assert code == 2, output
    assert message in flat, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.run").exists()  # nothing written


def test_an_empty_api_key_in_the_environment_refuses_to_start(bed):
    env = {**os.environ, "FINERANK_API_KEY": ""}
    r = subprocess.run([sys.executable, "-m", "finerank", "serve", "--model", str(bed / "model"), "--port", "1"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    assert r.returncode == 2 and "the API key is empty" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------- the probe, rerank
def test_the_probe_goes_through_every_part(bed, tmp_path):
    from finerank.scorers.cascade import CascadeSpec
    from finerank.scorers.load import check_scorer, load_scorer

    model = tmp_path / "m"
    shutil.copytree(bed / "model", model)
    CascadeSpec(n2=1, cheap="hybrid", bi_encoder=str(bed / "bi")).save(model)
    scorer = load_scorer(model)
    parts = check_scorer(scorer)
    assert scorer.stats == {"ce_pairs": 0, "skipped": 0, "cheap_docs": 0}  # the probe counts as no work done
    assert [p["part"] for p in parts] == ["scorer.cheap.bi-encoder", "scorer.cheap", "scorer.expensive", "scorer"]
    assert [p["kind"] for p in parts] == ["bi-encoder", "hybrid", "cross-encoder", "cascade"]
    assert all(p["ok"] for p in parts)


def test_rerank_never_writes_a_score_that_is_not_finite(bed, tmp_path):
    """A model that passes the probe but scores NaN on the data: refused, nothing written."""
    from finerank.serving.rerank import rerank_file

    class Sometimes:
        name, scale = "sometimes", "logit"

        def describe(self):
            return {"kind": "cross-encoder", "scale": self.scale}

        def cost(self, cands):
            return cands.n_pairs

        def score_candidates(self, cands, *, progress=False):
            return {q: {d: (float("nan") if d == "q1-d2" else 1.0) for d, _ in ds} for q, ds in cands.docs.items()}

    with pytest.raises(ModelError, match="scored doc_id q1-d2 of query_id q1 nan"):
        rerank_file(bed / "model", bed / "cands.jsonl", tmp_path / "o.jsonl", reranker=Sometimes(), progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ serve
@pytest.fixture
def client_of():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from finerank.serving.serve import create_app

    return lambda model, **kw: TestClient(create_app(model, **kw))


def test_serve_answers_503_never_500_when_the_model_fails_on_a_request(bed, client_of, monkeypatch):
    client = client_of(bed / "model")
    scorer = client.app.state.scorer
    body = {"query": "q", "documents": ["a", "b"]}
    assert client.post("/rerank", json=body).status_code == 200
    monkeypatch.setattr(scorer, "score_candidates",
                        lambda cands, progress=False: {q: {d: float("nan") for d, _ in ds}
                                                       for q, ds in cands.docs.items()})
    r = client.post("/rerank", json=body)
    assert r.status_code == 503 and "not a finite number" in r.json()["detail"]

    def gone(cands, progress=False):
        raise ModelError(f"{bed}/gone: no such model folder")

    monkeypatch.setattr(scorer, "score_candidates", gone)
    r = client.post("/rerank", json=body)
    assert r.status_code == 503 and str(bed) not in r.text  # the operator's log says where, never the answer
    assert client.post("/rerank", json={"query": "q"}).status_code == 422
    metrics = client.get("/metrics").text
    assert 'status="503"} 2' in metrics and 'status="500"' not in metrics


def test_serve_checks_and_lists_every_part_of_a_saved_cascade(bed, client_of, tmp_path):
    from finerank.scorers.cascade import CascadeSpec

    model = tmp_path / "m"
    shutil.copytree(bed / "model", model)
    shutil.copytree(bed / "bi", tmp_path / "bi")
    CascadeSpec(n2=2, cheap="bi", bi_encoder=str(tmp_path / "bi")).save(model)
    health = client_of(model).get("/health").json()
    assert [(p["part"], p["kind"], p["ok"]) for p in health["parts"]] == [
        ("scorer.cheap", "bi-encoder", True), ("scorer.expensive", "cross-encoder", True), ("scorer", "cascade", True)]
    assert not any(str(tmp_path) in str(p["model"]) for p in health["parts"])  # names, never paths

    (tmp_path / "bi").rename(tmp_path / "moved")  # the bi-encoder's folder moved: refused at load, not a 500 later
    with pytest.raises(ModelError, match="its part scorer.cheap"):
        client_of(model)


def test_serve_refuses_an_empty_api_key(bed):
    from finerank.serving.serve import create_app

    for key in ("", "  "):
        with pytest.raises(FinerankError, match="the API key is empty"):
            create_app(bed / "model", api_key=key)


# ------------------------------------------------------------------------------------------------ run folders
def _take(out: str, ready, tried, won) -> None:
    """One contender: take the lock when all are ready, say whether it got it, hold it until all have tried."""
    from finerank.training.run import RunLock

    ready.wait()
    try:
        lock = RunLock(Path(out)).acquire()
    except FinerankError:
        lock = None
    won.put(lock is not None)
    tried.wait()
    if lock is not None:
        lock.release()


def test_of_several_processes_taking_over_a_dead_lock_exactly_one_wins(tmp_path):
    import platform

    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    n = 4
    for trial in range(8):
        out = tmp_path / f"run{trial}"
        out.mkdir()
        (out / ".lock").write_text(f"{dead.pid}@{platform.node()}\n")
        ready, tried, won = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_take, args=(str(out), ready, tried, won)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [won.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        assert sum(results) == 1, f"trial {trial}: {sum(results)} processes hold the lock"
        assert not (out / ".lock").exists()  # the winner released it


def test_a_lock_is_held_until_released_and_then_free(tmp_path):
    from finerank.training.run import RunLock

    first = RunLock(tmp_path).acquire()
    with pytest.raises(FinerankError, match=f"PID {os.getpid()}"):  # a second writer, even in this process
        RunLock(tmp_path).acquire()
    first.release()
    second = RunLock(tmp_path).acquire()
    assert second.took_over is None and (tmp_path / ".lock").read_text().startswith(f"{os.getpid()}@")
    second.release()
    assert not (tmp_path / ".lock").exists()


def test_resume_at_max_steps_trains_no_further_step(tiny_model, tmp_path):
    """A run killed after its last checkpoint (while saving best/): --resume restores it and takes no step."""
    from test_train import _lists

    from finerank.io.outputs import write_pairs
    from finerank.training.config import TrainConfig
    from finerank.training.train import train

    write_pairs(tmp_path / "train.jsonl", _lists(6, offset=0))
    write_pairs(tmp_path / "val.jsonl", _lists(3, offset=100))
    out = tmp_path / "run"
    opts = dict(model=tiny_model, train=str(tmp_path / "train.jsonl"), val=str(tmp_path / "val.jsonl"),
                out=str(out), max_length=64, batch_size=8, eval_steps=2, max_steps=2, loss="bce", fusion="off",
                query_check=0)
    train(TrainConfig(**opts), progress=False)
    for name in ("best", "finerank-run.json", "finerank-config.yaml"):  # what the kill left unwritten
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    res = train(TrainConfig(**opts, resume=True), progress=False)
    record = json.loads((out / "finerank-run.json").read_text())
    assert record["global_step"] == 2 and record["resumed_from"].endswith("checkpoint-2")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "best" / "config.json").exists() and res.best_metrics


# ------------------------------------------------------------------------------------------------ provenance
def test_loaders_hash_the_bytes_they_read(tmp_path):
    import hashlib

    from finerank.data.candidates import Candidates
    from finerank.io.collection import load
    from finerank.io.files import EMBEDDED

    src = _write(tmp_path / "pairs.jsonl", _rows())
    original = src.read_bytes()
    ds = load(src)
    cands = Candidates.from_file(src, top_k=2)
    with open(src, "a") as f:  # appended after the read: not what was loaded
        f.write(json.dumps(dict(_rows()[0], query_id="late")) + "\n")
    assert ds.sha256 == cands.sha256 == hashlib.sha256(original).hexdigest()
    beir = EMBEDDED["cranfield"]
    both = b"".join((beir / n).read_bytes() for n in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"))
    assert load("cranfield").sha256 == hashlib.sha256(both).hexdigest()


def test_the_run_record_hashes_the_training_file_as_it_was_read(tiny_model, tmp_path, monkeypatch):
    """A training file appended to mid-run: the record keeps the hash of what was trained on, beside its count."""
    import hashlib

    import finerank.training.skeleton as skeleton
    from finerank.training.train import train

    src = _write(tmp_path / "train.jsonl", _rows(4))
    original = hashlib.sha256(src.read_bytes()).hexdigest()
    load_data = skeleton.load_data

    def load_then_append(cfg):
        loaded = load_data(cfg)
        with open(src, "a") as f:
            f.write(json.dumps(dict(_rows()[0], query_id="late")) + "\n")
        return loaded

    monkeypatch.setattr(skeleton, "load_data", load_then_append)
    train(model=tiny_model, train=str(src), out=str(tmp_path / "run"), max_steps=1, batch_size=8, max_length=64,
          loss="bce", fusion="off", query_check=0, progress=False)
    data = json.loads((tmp_path / "run" / "finerank-run.json").read_text())["data"]["train"]
    assert data["sha256"] == original and data["pairs"] == 16


# ---------------------------------------------------------------------------------------------- data files
def _beir(tmp: Path, corpus: str, queries: str, qrels: str) -> Path:
    d = tmp / "beir"
    d.mkdir()
    (d / "corpus.jsonl").write_text(corpus)
    (d / "queries.jsonl").write_text(queries)
    (d / "qrels.tsv").write_text(qrels)
    return d


CORPUS = '{"_id": "d1", "text": "wings and lift"}\n{"_id": "d2", "text": "heat transfer"}\n'
QUERIES = '{"_id": "q1", "text": "lift"}\n'


def data_long_document_in_pairs(tmp):
    rows = _rows()
    rows[5]["document"] = "word " * 20_001
    return _write(tmp / "long.jsonl", rows), "long.jsonl:6: field 'document'", "at most 100000 characters"


def data_long_document_in_a_corpus(tmp):
    corpus = CORPUS + json.dumps({"_id": "d3", "title": "t", "text": "x" * 100_001}) + "\n"
    return (_beir(tmp, corpus, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\n"), "corpus.jsonl:3: field 'text'",
            "found 100001")


def data_conflicting_grades_in_pairs(tmp):
    rows = _rows()
    return (_write(tmp / "twice.jsonl", rows + [dict(rows[1], label=1)]), "twice.jsonl:9: field 'label'",
            "that line 2 gives query q0, document q0-d1")


def data_conflicting_grades_in_qrels(tmp):
    return (_beir(tmp, CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq1\td1\t2\n"),
            "qrels.tsv:4: field 'score'", "that line 2 gives query q1, document d1")


def data_lone_surrogate_in_pairs(tmp):
    text = _write(tmp / "s.jsonl", _rows()).read_text().replace("document 2 on topic 1", "document \\ud800 two", 1)
    (tmp / "s.jsonl").write_text(text)
    return tmp / "s.jsonl", "s.jsonl:7: field 'document'", "a lone surrogate U+D800"


def data_lone_surrogate_in_a_query(tmp):
    return (_beir(tmp, CORPUS, '{"_id": "q1", "text": "lift \\udc00"}\n', "query-id\tcorpus-id\tscore\nq1\td1\t1\n"),
            "queries.jsonl:1: field 'text'", "a lone surrogate U+DC00")


DATA = [v for k, v in sorted(globals().items()) if k.startswith("data_")]


@pytest.mark.parametrize("case", DATA, ids=[c.__name__[5:] for c in DATA])
def test_bad_data_is_refused_naming_file_line_and_field(case, tmp_path, capsys, bed):
    from finerank.io.collection import load

    path, where, what = case(tmp_path)
    with pytest.raises(DataError) as e:
        load(path)
    assert where in str(e.value) and what in str(e.value)
    code, output = cli(capsys, "evaluate", "--model", "bm25", "--dataset", path, "--query-check", "0", "--no-card",
                       *(["--candidates", _trec(tmp_path)] if path.is_dir() else []))
    assert code == 2 and where in output and "Traceback" not in output, output


def _trec(tmp: Path) -> Path:
    (tmp / "run.trec").write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0 bm25\n")
    return tmp / "run.trec"


def test_a_repeated_pair_with_the_same_grade_and_inspect_still_report(tmp_path):
    from finerank.data.inspect import inspect
    from finerank.io.collection import load

    rows = _rows()
    src = _write(tmp_path / "again.jsonl", rows + [rows[1]])
    assert len(load(src).pairs) == 9  # the same judgment twice: a repeat, not a conflict
    noisy = _write(tmp_path / "noisy.jsonl", rows + [dict(rows[1], label=1)])
    report = inspect(load(noisy, one_grade=False), model=None)
    assert report.conflicting_pairs == 1  # data inspect reads label noise to report it


def test_rerank_keeps_its_own_cap(bed, tmp_path, capsys):
    """rerank's --max-chars is the cap of the files it reads: a longer one allows a document over 100,000."""
    rows = _rows()
    rows[0]["document"] = "word " * 20_001
    src = _write(tmp_path / "long.jsonl", rows)
    code, output = cli(capsys, "rerank", "--model", bed / "model", "--input", src, "--output", tmp_path / "o.jsonl",
                       "--max-chars", "200000")
    assert code == 0, output
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 8
