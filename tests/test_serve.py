"""The HTTP service, started for real (uvicorn on a free loopback port) and called over HTTP: answers for a model
trained by finerank train and for its int8 export, 4xx (never 500) on bad requests, the key, metrics, and many
requests at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from finerank.rerank import Reranker
from finerank.serve import create_app

from conftest import ROOT

KEY = "s3cret-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving ``app`` in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory) -> str:
    """A run folder written by finerank train (a few steps on the tiny model)."""
    from finerank.train import train

    d = tmp_path_factory.mktemp("serve-run")
    rows = []
    for q in range(6):
        for i in range(4):
            rows.append({"query_id": f"q{q}", "query": f"query number {q}", "doc_id": f"q{q}d{i}",
                         "document": f"document {i} about topic {q}" + " and more words" * i, "label": int(i == 0)})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(model=tiny_model, train=str(d / "train.jsonl"), out=str(d / "run"), max_steps=3, batch_size=8,
          max_length=64, eval_steps=100, loss="bce", progress=False)
    assert (d / "run" / "best" / "config.json").exists()
    return str(d / "run")


@pytest.fixture(scope="module")
def reranker(trained_run) -> Reranker:
    return Reranker(trained_run)


@pytest.fixture(scope="module")
def url(reranker):
    with Server(create_app(reranker, api_key=KEY, max_documents=20, max_chars=500)) as base:
        yield base


def _post(url, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/rerank", json=body, headers=headers, timeout=60, **kw)


def test_rerank_answers_like_the_library(url, reranker):
    docs = ["document 0 about topic 1", "something else entirely", "document 3 about topic 1 and more words"]
    r = _post(url, {"query": "query number 1", "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    want = reranker.rerank("query number 1", docs, top_k=2)
    assert [x["index"] for x in body["results"]] == [w.index for w in want]
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx([w.score for w in want], abs=1e-6)
    assert [x["document"]["text"] for x in body["results"]] == [docs[w.index] for w in want]

    texts = _post(url, {"query": "query number 1", "texts": docs}).json()["results"]  # TEI's field name
    assert len(texts) == 3 and "document" not in texts[0]
    objs = _post(url, {"query": "query number 1", "documents": [{"text": d} for d in docs], "model": "any"})
    assert [x["index"] for x in objs.json()["results"]] == [x["index"] for x in texts]


@pytest.mark.parametrize("body, status, words", [
    ({"documents": ["a"]}, 422, "query"),
    ({"query": "q", "documents": []}, 422, "empty"),
    ({"query": "   ", "documents": ["a"]}, 422, "query"),
    ({"query": "q"}, 422, "documents"),
    ({"query": "q", "documents": ["a"], "texts": ["b"]}, 422, "not both"),
    ({"query": 5, "documents": ["a"]}, 422, "query"),
    ({"query": "q", "documents": "a single string"}, 422, "documents"),
    ({"query": "q", "documents": ["a", 7]}, 422, "documents"),
    ({"query": "q", "documents": ["a"], "top_n": "two"}, 422, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 422, "return_documents"),
    ({"query": "q", "documents": ["a"] * 21}, 413, "max_documents=20"),
    ({"query": "q", "documents": ["a", "x" * 501]}, 413, "max_chars=500"),
    ({"query": "q" * 501, "documents": ["a"]}, 413, "max_chars=500"),
    (["not", "an", "object"], 422, ""),
])
def test_bad_requests_get_clear_4xx(url, body, status, words):
    r = _post(url, body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_malformed_bodies_and_the_key(url):
    r = httpx.post(f"{url}/rerank", content=b"{not json", headers={"Authorization": f"Bearer {KEY}",
                                                                   "Content-Type": "application/json"})
    assert r.status_code == 422
    huge = httpx.post(f"{url}/rerank", content=b"x" * 400_000, headers={"Authorization": f"Bearer {KEY}"})
    assert huge.status_code == 413 and "too large" in huge.json()["detail"]
    body = {"query": "q", "documents": ["a"]}
    assert _post(url, body, key=None).status_code == 401
    wrong = _post(url, body, key="wrong")
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/metrics").status_code == 401
    health = httpx.get(f"{url}/health")  # open, for probes
    assert health.status_code == 200 and health.json()["backend"] == "torch"


def test_concurrent_requests_each_get_their_own_answer(url, reranker):
    requests = [(f"query number {i % 6}", [f"document {j} about topic {i}" + " more" * (i % 4) for j in range(2 + i % 5)])
                for i in range(24)]
    want = [[(w.index, w.score) for w in reranker.rerank(q, d)] for q, d in requests]

    def call(req):
        r = _post(url, {"query": req[0], "documents": req[1]})
        return r.status_code, [(x["index"], x["relevance_score"]) for x in r.json()["results"]]

    with ThreadPoolExecutor(max_workers=24) as pool:
        got = list(pool.map(call, requests))
    assert all(status == 200 for status, _ in got)
    for (_, results), expected in zip(got, want):
        assert [i for i, _ in results] == [i for i, _ in expected]
        assert [s for _, s in results] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_metrics_count_requests_and_pairs(url):
    before = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    pairs = lambda text: int(next(l.split()[1] for l in text.splitlines() if l.startswith("finerank_pairs_scored_total")))
    _post(url, {"query": "q", "documents": ["a", "b", "c"]})
    _post(url, {"query": "q", "documents": []})
    after = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert pairs(after) == pairs(before) + 3
    assert 'finerank_requests_total{path="/rerank",status="200"}' in after
    assert 'finerank_requests_total{path="/rerank",status="422"}' in after
    assert "finerank_rerank_latency_seconds_count" in after and "# TYPE finerank_rerank_latency_seconds histogram" in after


def test_int8_export_of_the_trained_model_serves(trained_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from finerank.export import export

    export(trained_run, tmp_path / "int8", quantize="int8", validation=None, log=lambda m: None)
    with Server(create_app(str(tmp_path / "int8"))) as base:
        assert httpx.get(f"{base}/health").json()["backend"] == "onnx"
        r = httpx.post(f"{base}/rerank", json={"query": "query number 2", "documents": ["document 0 about topic 2",
                                                                                       "unrelated", "words"]})
        assert r.status_code == 200, r.text
        assert sorted(x["index"] for x in r.json()["results"]) == [0, 1, 2]


def test_cli_serve_over_http(trained_run):
    port = _free_port()
    env = {**os.environ, "FINERANK_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "finerank", "serve", "--model", trained_run, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "finerank serve did not come up"
            time.sleep(0.3)
        r = _post(f"http://127.0.0.1:{port}", {"query": "q", "documents": ["a", "b"]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert _post(f"http://127.0.0.1:{port}", {"query": "q", "documents": ["a"]}, key=None).status_code == 401
    finally:
        proc.terminate()
        proc.wait(20)
