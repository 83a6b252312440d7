"""The HTTP service, started for real (uvicorn on a free loopback port) and called over HTTP: answers for a model
trained by finerank train and for its int8 export, 4xx (never 500) on bad requests, the key, metrics, and many
requests at once."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from finerank.scorers.cross_encoder import Reranker
from finerank.serving.serve import create_app

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
    from finerank.training.train import train

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
    assert [x["score"] for x in body["results"]] == pytest.approx([w.score for w in want], abs=1e-6)  # the raw score
    assert all(0 <= x["relevance_score"] <= 1 for x in body["results"])  # P(relevant) (issue 24)
    assert [x["document"]["text"] for x in body["results"]] == [docs[w.index] for w in want]

    texts = _post(url, {"query": "query number 1", "texts": docs}).json()  # TEI's request: TEI's bare list
    assert len(texts) == 3 and set(texts[0]) == {"index", "score"}
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
        return r.status_code, [(x["index"], x["score"]) for x in r.json()["results"]]

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
    from finerank.serving.export import export

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
    proc = subprocess.Popen([sys.executable, "-m", "finerank", "serve", "--model", trained_run, "--port", str(port),
                             "--max-pairs", "3", "--no-docs"],
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
        big = _post(f"http://127.0.0.1:{port}", {"query": "q", "documents": ["a", "b", "c", "d"]})
        assert big.status_code == 413 and "max_pairs=3" in big.json()["detail"]
        assert httpx.get(f"http://127.0.0.1:{port}/docs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["model"] == "run/best"
    finally:
        proc.terminate()
        proc.wait(20)


# ------------------------------------------------------------------------------ hostile bodies, limits, paths
def _raw(url, body: bytes, key=KEY, content_type="application/json"):
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(f"{url}/rerank", content=body, headers=headers, timeout=60)


def _statuses(url) -> Counter:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    out: Counter = Counter()
    for line in text.splitlines():
        if line.startswith('finerank_requests_total{path="/rerank"'):
            out[int(line.split('status="')[1].split('"')[0])] += int(line.split()[-1])
    return out


HOSTILE = [  # bodies a client may send; none may get a 500
    b'{"query": "a\\ud800", "documents": ["x"]}',                   # a lone surrogate (valid JSON, invalid Unicode)
    b'{"query": "q", "documents": ["ok", "\\udc00b"]}',
    b'{"query": "q", "texts": ["\\ud83d"]}',
    b'{"query": "q", "documents": [{"text": "\\udfff"}]}',
    b'{"query": "q", "documents": ["a"], "model": "\\ud800"}',       # in a field we ignore: fine
    b"[" * 100_000 + b"]" * 100_000,                               # deep nesting
    b'{"query": "q", "documents": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"a": ' * 20_000 + b"1" + b"}" * 20_000,
    b'{"query": "q", "documents": ["a"], "top_n": 1' + b"0" * 5000 + b"}",  # more digits than Python parses
    b'{"query": "q", "documents": ["a"], "top_n": 1e400}',
    b'{"query": "q", "documents": ["a"], "top_n": 100000000000000000000000000000}',
    b'{"query": "q", "documents": ["a"], "top_n": -3}',
    b'{"query": "q", "documents": ["a", "b"], "scores": [1e400, 1]}',
    b'{"query": "q", "documents": ["a", "b"], "scores": [NaN, 1]}',
    b'{"query": "q", "documents": ["a", "b"], "scores": [-Infinity, 1]}',
    b'{"query": "q", "documents": ["a", "b"], "scores": ["x", 1]}',
    b'{"query": "q", "documents": ["a", "b"], "scores": [1]}',
    b'{"query": null, "documents": ["a"]}',
    b'{"query": ["q"], "documents": ["a"]}',
    b'{"query": {"text": "q"}, "documents": ["a"]}',
    b'{"query": "q", "documents": [null]}',
    b'{"query": "q", "documents": [[]]}',
    b'{"query": "q", "documents": [{}]}',
    b'{"query": "q", "documents": [{"text": 5}]}',
    b'{"query": "q", "documents": {"0": "a"}}',
    b'{"query": "q", "documents": ["a"], "return_documents": 1}',
    b'{"query": "q", "documents": [""]}',
    b'{"query": "q\\u0000", "documents": ["a\\u0000b"]}',
    b'{"query": "q", "documents": ["\\ufffe\\uffff"]}',
    b'{"query": "\xff\xfe", "documents": ["a"]}',                 # not UTF-8 at all
    b"", b"null", b"1", b'"text"', b"[]", b"{}", b'{"query": "q", "documents": ["a"]',
]


def test_no_body_gets_a_500_and_every_answer_is_counted(url):
    before = _statuses(url)
    seen: Counter = Counter()
    for body in HOSTILE:
        r = _raw(url, body)
        assert r.status_code < 500, (body[:80], r.status_code, r.text[:300])
        if r.status_code != 200:
            assert r.json()["detail"], body[:80]
        seen[r.status_code] += 1
    r = _raw(url, b'{"query": "q", "documents": ["a"]}', content_type="text/plain")
    assert r.status_code < 500
    seen[r.status_code] += 1
    assert _raw(url, HOSTILE[0]).json()["detail"].startswith("query: ")  # the field is named
    seen[422] += 1
    after = _statuses(url)
    assert {s: after[s] - before[s] for s in after if after[s] != before[s]} == dict(seen)


def test_a_500_is_counted_and_says_nothing_of_the_model(reranker, trained_run, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError(f"disk trouble at {trained_run}")

    app = create_app(reranker, api_key=KEY)  # the probe at load scores before the bug is planted
    monkeypatch.setattr(reranker, "score_candidates", boom)
    with Server(app) as base:
        r = _post(base, {"query": "q", "documents": ["a"]})
        assert r.status_code == 500 and trained_run not in r.text and r.json()["detail"] == "internal error: RuntimeError"
        assert _statuses(base)[500] == 1


def test_no_response_reveals_the_model_path(url, trained_run):
    health = httpx.get(f"{url}/health").json()
    assert health["model"] == "run/best"  # the run folder's name and the kept model, not where it lies
    answers = [httpx.get(f"{url}/health").text, _post(url, {"query": "q", "documents": ["a"]}).text,
               _post(url, {"query": "q", "documents": []}).text, _raw(url, HOSTILE[0]).text,
               httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text,
               httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).text,
               httpx.get(f"{url}/nowhere").text]
    parent = os.path.dirname(trained_run)
    for text in answers:
        assert parent not in text and "/tmp" not in text, text[:300]


def test_docs_need_the_key_or_are_off(reranker):
    auth = {"Authorization": f"Bearer {KEY}"}
    with Server(create_app(reranker, api_key=KEY)) as base:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(f"{base}{path}").status_code == 401, path
            assert httpx.get(f"{base}{path}", headers=auth).status_code == 200, path
        assert "/rerank" in httpx.get(f"{base}/openapi.json", headers=auth).json()["paths"]
    with Server(create_app(reranker, api_key=KEY, docs=False)) as base:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(f"{base}{path}", headers=auth).status_code == 404, path
    with Server(create_app(reranker)) as base:  # no key: open, as before
        assert httpx.get(f"{base}/openapi.json").status_code == 200


def test_a_chunked_body_is_refused_while_it_streams_in(url):
    """No Content-Length: the limit (about 190 kB here) must stop the upload, not be checked after 20 MB."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"x" * 65536
    total, sent = 320, 0  # 20 MB on offer
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /rerank HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        s.sendall(b"%x\r\n%s\r\n" % (len(b'{"query": "q", "documents": ["'), b'{"query": "q", "documents": ["'))
        s.settimeout(5)
        try:
            while sent < total:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    break
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += 1
            else:
                s.sendall(b'3\r\n"]}\r\n0\r\n\r\n')
        except (socket.timeout, ConnectionError):
            pass  # the server stopped reading: what we want
        s.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head or len(head.split(b"\r\n\r\n", 1)[1]) < int(
                head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
            more = s.recv(65536)
            if not more:
                break
            head += more
        head = head.decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "max_documents=20" in head and "max_chars=500" in head
    assert sent < total // 4, f"the server read {sent} of {total} chunks before answering"


@pytest.fixture(scope="module")
def budget_url(reranker):
    with Server(create_app(reranker, api_key=KEY, max_documents=50, max_chars=50_000, max_pairs=12)) as base:
        yield base


def test_one_request_cannot_hold_the_model_past_its_budget(budget_url, reranker):
    long_doc = " ".join(f"word{i}" for i in range(3000))  # many windows at the tiny model's max_length
    # few words, many tokens: only the exact count (the tokenizer's windows) finds it over the budget
    dense = " ".join(f"x{i}y{i}z" for i in range(150))  # 150 words, some 900 tokens
    assert sum(reranker.min_inputs([dense])) <= 12 < sum(reranker.inputs_needed([("q", dense)]))
    windows = reranker.stats["windows"]
    for body in ({"query": "q", "documents": [long_doc]},             # one document, too many windows
                 {"query": "q", "documents": [f"d{i}" for i in range(13)]},  # more documents than the budget
                 {"query": "q", "documents": [dense]}):
        r = _post(budget_url, body)
        assert r.status_code == 413, r.text
        assert "max_pairs=12" in r.json()["detail"] and r.json()["limit"] == "max_pairs"
    assert "at least" not in r.json()["detail"]  # the last one was counted exactly
    assert reranker.stats["windows"] == windows  # refused before the model ran
    ok = _post(budget_url, {"query": "q", "documents": [f"d{i}" for i in range(12)]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 12
    assert httpx.get(f"{budget_url}/health").json()["limits"]["max_pairs"] == 12


def test_the_cheap_bound_never_exceeds_the_exact_count(reranker):
    docs = ["", "short", "word " * 500, "a-b.c,d;e " * 300, "漢字の文書" * 400, "\x00 \x01 " * 800,
            " ".join(f"x{i}y{i}z" for i in range(400)), "x" * 5000, "déjà vu, naïve café " * 200]
    assert all(lo <= ex for lo, ex in zip(reranker.min_inputs(docs), reranker.inputs_needed([("q", d) for d in docs])))
