"""The serving batcher: concurrent requests share forward passes, each gets exactly its own scores, the queue is
bounded (429 with Retry-After, never a 5xx), and a failing pass fails only its own requests. No test compares
timings: the model is held at a gate until every request is queued, so what shares a pass is certain."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from finerank.serving.batcher import Batcher, QueueFull, install


class Gated:
    """A backend that scores a pair by its length, records each call's size, and holds its first call at a gate."""

    kind, tokenizer, model_max_length, source, activation = "fake", None, 512, "fake", "identity"

    def __init__(self):
        self.gate, self.entered, self.calls = threading.Event(), threading.Event(), []

    def __call__(self, pairs):
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(len(pairs))
        if any(q == "boom" for q, _ in pairs):
            raise RuntimeError("the model failed")
        return np.array([len(q) * 1000 + len(d) for q, d in pairs], dtype=np.float32)


def _wait(cond, seconds=30.0):
    ev = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        ev.wait(0.01)
    raise AssertionError("condition not reached")


def _requests(n):
    return [[(f"q{i}", "d" * (j + 1)) for j in range(3 + i % 4)] for i in range(n)]


def test_queued_requests_share_one_pass_and_each_gets_its_own_scores():
    inner = Gated()
    b = Batcher(inner, batch_size=1000, max_batch_pairs=1000, wait_ms=0)
    first = [("first", "x")]
    reqs = _requests(12)
    with ThreadPoolExecutor(13) as pool:
        f0 = pool.submit(b, first)
        assert inner.entered.wait(30)  # the first pass holds the model; the others queue behind it
        futures = [pool.submit(b, r) for r in reqs]
        _wait(lambda: b.queued == sum(map(len, reqs)))
        inner.gate.set()
        got = [f.result(30) for f in futures]
    assert f0.result().tolist() == [5001.0]
    for r, scores in zip(reqs, got):
        assert scores.tolist() == [len(q) * 1000 + len(d) for q, d in r]  # its own, in its own order
    assert inner.calls == [1, sum(map(len, reqs))]  # two passes: the first request, then all twelve together
    assert b.stats["passes"] == 2 and b.stats["max_requests"] == 12 and b.queued == 0


def test_a_pass_takes_whole_requests_up_to_the_pair_budget_and_sorts_by_length():
    inner = Gated()
    b = Batcher(inner, batch_size=4, max_batch_pairs=8, wait_ms=0)
    with ThreadPoolExecutor(4) as pool:
        f0 = pool.submit(b, [("a", "b")])
        assert inner.entered.wait(30)
        futures = [pool.submit(b, [("q", "d" * k) for k in (1, 9, 5)]) for _ in range(3)]
        _wait(lambda: b.queued == 9)
        inner.gate.set()
        for f in futures:
            assert f.result(30).tolist() == [1001.0, 1009.0, 1005.0]
    f0.result()
    # 9 waiting inputs, 8 a pass: two whole requests (6 inputs, batches of 4 and 2), then the third
    assert inner.calls == [1, 4, 2, 3]
    assert b.stats["passes"] == 3


def test_the_queue_is_bounded_and_a_failure_stays_with_its_requests():
    inner = Gated()
    b = Batcher(inner, batch_size=100, max_batch_pairs=100, wait_ms=0, max_queue=5)
    with ThreadPoolExecutor(4) as pool:
        f0 = pool.submit(b, [("a", "b")])
        assert inner.entered.wait(30)
        f1 = pool.submit(b, [("boom", "x")] * 3)
        _wait(lambda: b.queued == 3)
        with pytest.raises(QueueFull):
            b([("q", "d")] * 3)  # 3 + 3 > 5: refused at once, nothing queued
        assert b.queued == 3 and b.stats["refused"] == 1
        inner.gate.set()
        with pytest.raises(RuntimeError, match="the model failed"):
            f1.result(30)
    f0.result()
    assert b([("q", "dd")]).tolist() == [1002.0]  # the worker lives on after a failed pass


def test_install_puts_one_batcher_before_each_cross_encoder(tiny_model):
    from finerank.scorers.cross_encoder import Reranker

    r = Reranker(tiny_model)
    plain = r.score([("a query", "a document"), ("another", "text " * 50)])
    [b] = install(r, wait_ms=0)
    assert install(r) == [b]  # once
    assert np.allclose(r.score([("a query", "a document"), ("another", "text " * 50)]), plain, atol=1e-5)
    assert b.stats["passes"] == 1


def test_many_threads_through_one_batcher_get_the_scores_of_one_at_a_time(tiny_model):
    """The request threads cut windows while the worker runs the model: each needs its own tokenizer (a shared
    fast tokenizer garbled 3 of 2,000 served requests into 500s, benchmarks/speed.py). 16 threads, 240 requests of
    mixed lengths, every answer equal to the unbatched score."""
    from finerank.scorers.cross_encoder import Reranker

    words = "wing lift flow boundary layer pressure shock heat transfer plate cone".split()
    reqs = [[(" ".join(words[i % 5: i % 5 + 3]), " ".join(words[(i + j) % 11:] * (1 + (i * j) % 9)))
             for j in range(1 + i % 7)] for i in range(240)]
    r = Reranker(tiny_model, max_length=64, long_docs="first")
    expected = [r.score(q) for q in reqs]
    [b] = install(r, wait_ms=1)
    assert r.tokenizer is not b.inner.tokenizer
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(r.score, reqs))
    for e, g in zip(expected, got):
        assert np.allclose(e, g, atol=1e-5)
    assert b.stats["requests"] == 240 and b.stats["max_requests"] > 1


@pytest.fixture
def client_app(tiny_model):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from finerank.serving.serve import create_app

    return create_app(tiny_model, max_queue=6, max_batch_pairs=1000, batch_wait_ms=0)


def test_served_requests_share_passes_get_429_past_the_queue_and_match_one_at_a_time(tiny_model, client_app):
    from fastapi.testclient import TestClient

    from finerank.serving.serve import create_app

    docs = [["a short one", "a much longer document " * 5, "mid length text"], ["x", "y y"]]
    with TestClient(create_app(tiny_model, batching=False)) as plain_client:
        assert "finerank_batches_total" not in plain_client.get("/metrics").text
        want = [plain_client.post("/rerank", json={"query": "q", "documents": d}).json()["results"] for d in docs]
    [b] = client_app.state.metrics.batchers
    real, gate, entered = b.inner, threading.Event(), threading.Event()

    def held(pairs):
        entered.set()
        gate.wait(30)
        return real(pairs)

    b.inner = held
    with TestClient(client_app) as client, ThreadPoolExecutor(4) as pool:
        f0 = pool.submit(client.post, "/rerank", json={"query": "q", "documents": docs[1]})
        assert entered.wait(30)
        futures = [pool.submit(client.post, "/rerank", json={"query": "q", "documents": d}) for d in docs]
        _wait(lambda: b.queued == 5)
        busy = client.post("/rerank", json={"query": "q", "documents": ["a", "b"]})  # 5 + 2 > 6
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
        busy = client.post("/v2/rerank", json={"model": "m", "query": "q", "documents": ["a", "b"]})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        gate.set()
        got = [f.result(30).json()["results"] for f in futures]
        assert f0.result(30).status_code == 200
        metrics = client.get("/metrics").text
    for g, w in zip(got, want):
        assert [r["index"] for r in g] == [r["index"] for r in w]
        assert np.allclose([r["score"] for r in g], [r["score"] for r in w], atol=1e-5)
    assert b.stats["max_requests"] == 2  # the two queued requests shared one pass
    assert "finerank_batch_refused_total 2" in metrics and "finerank_batch_max_requests 2" in metrics


def test_serve_with_two_worker_processes_answers(tiny_model, tmp_path):
    """``--workers 2``: uvicorn's worker processes each build the app from the options serve left them."""
    httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "finerank", "serve", "--model", tiny_model, "--port", str(port),
                             "--workers", "2", "--api-key", "k"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    try:
        answer = None
        for _ in range(1200):
            if proc.poll() is not None:
                break
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/rerank", headers={"Authorization": "Bearer k"},
                                    json={"query": "q", "documents": ["a", "b c"]}, timeout=30)
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        assert answer is not None and answer.status_code == 200, proc.stdout.read().decode()[-2000:] \
            if proc.poll() is not None else answer
        assert sorted(r["index"] for r in answer.json()["results"]) == [0, 1]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert out.count("Started server process") >= 2 or "Started parent process" in out, out[-2000:]


def test_bad_batching_options_are_a_clear_error():
    from finerank.core.errors import FinerankError

    with pytest.raises(FinerankError, match="max_queue 0 must be at least 1"):
        Batcher(Gated(), max_queue=0)
