"""The clients people already have, unchanged, against a live ``finerank serve`` on 127.0.0.1 (issue 24): the Cohere
SDK (v1 ``Client`` and v2 ``ClientV2``), LangChain's ``CohereRerank`` in a ``ContextualCompressionRetriever``,
LlamaIndex's Cohere rerank postprocessor, and a TEI-shaped request. Each gets the same top 3 as ``finerank rerank``
on the same list, with ``relevance_score`` in [0, 1]. The packages come with ``pip install 'finerank[clients]'``;
a test whose package is missing is skipped, naming it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install 'finerank[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'finerank[serve]')")

from conftest import ROOT, run_cli
from test_calibration import keyword_lists
from test_rerank import FILLER, keyword_model  # noqa: F401 - the fixture

KEY = "client-test-key"
QUERY = "violin"
DOCS = [" ".join(words) for words in (
    ["the", "was", "of", "and", "a", "to", "in", "is"],
    ["violin", "the", "of", "and", "to", "a", "was"],
    ["for", "on", "that", "with", "as", "by", "at", "from", "it"],
    ["the", "of", "violin", "is", "was", "for"],
    ["tiger", "the", "of", "a", "and", "in", "for", "on", "it", "as"],
    ["with", "as", "by", "violin", "at", "from", "it", "an", "be", "this", "which"],
    ["copper", "the", "of", "and"],
    ["a", "to", "in", "is", "was", "for", "on", "violin"],
)]


def client(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install 'finerank[clients]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def calibrated(keyword_model, tmp_path_factory):
    """The keyword model, calibrated by ``finerank calibrate`` on judged lists."""
    folder = tmp_path_factory.mktemp("clients") / "model"
    shutil.copytree(keyword_model, folder)
    data = keyword_lists(folder.parent / "val.jsonl")
    r = run_cli("calibrate", "--model", folder, "--data", data)
    assert r.returncode == 0, r.stderr
    return folder


@pytest.fixture(scope="module")
def url(calibrated):
    """``finerank serve`` in its own process, as a user starts it."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "finerank", "serve", "--model", str(calibrated), "--port",
                             str(port), "--api-key", KEY], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"finerank serve exited: {proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("finerank serve did not answer /health in 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def want(calibrated, tmp_path_factory):
    """The top 3 (positions in DOCS) of ``finerank rerank`` on the same list."""
    d = tmp_path_factory.mktemp("rerank")
    rows = [{"query_id": "q", "query": QUERY, "doc_id": str(i), "document": t} for i, t in enumerate(DOCS)]
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli("rerank", "--model", calibrated, "--input", d / "in.jsonl", "--output", d / "out.jsonl")
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]
    top = [int(x["doc_id"]) for x in sorted(out, key=lambda x: x["rank"])[:3]]
    assert {DOCS[i].count("violin") for i in top} == {1}  # the model finds the keyword: the order means something
    return top


def _in_unit(scores) -> None:
    assert scores and all(0.0 <= s <= 1.0 for s in scores), scores


def test_health_says_calibrated(url):
    assert httpx.get(f"{url}/health").json()["calibrated"] is True


def test_cohere_v1_client(url, want):
    cohere = client("cohere")
    co = cohere.Client(api_key=KEY, base_url=url)
    res = co.rerank(model="finerank", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    assert [r.index for r in res.results] == want
    assert [r.document.text for r in res.results] == [DOCS[i] for i in want]
    _in_unit([r.relevance_score for r in res.results])
    assert res.id and res.meta.api_version.version == "1"


def test_cohere_v2_client_and_its_errors(url, want):
    cohere = client("cohere")
    co = cohere.ClientV2(api_key=KEY, base_url=url)
    res = co.rerank(model="finerank", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in res.results] == want
    _in_unit([r.relevance_score for r in res.results])
    assert all(isinstance(r.score, float) for r in res.results)  # the raw score, an extra field
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=url).rerank(model="m", query=QUERY, documents=DOCS)
    with pytest.raises(cohere.errors.BadRequestError) as e:
        co.rerank(model="finerank", query=QUERY, documents=DOCS, top_n=0)
    assert "top_n" in e.value.body["message"]


def test_langchain_cohere_in_a_compression_retriever(url, want):
    rerank = client("langchain_cohere")
    compression = client("langchain_classic.retrievers.contextual_compression")
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun):
            return [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(DOCS)]

    compressor = rerank.CohereRerank(cohere_api_key=KEY, base_url=url, model="finerank", top_n=3)
    retriever = compression.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())
    docs = retriever.invoke(QUERY)
    assert [d.metadata["i"] for d in docs] == want
    _in_unit([d.metadata["relevance_score"] for d in docs])


def test_llama_index_cohere_rerank(url, want):
    post = client("llama_index.postprocessor.cohere_rerank")
    schema = client("llama_index.core.schema")
    nodes = [schema.NodeWithScore(node=schema.TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]
    got = post.CohereRerank(api_key=KEY, base_url=url, model="finerank", top_n=3).postprocess_nodes(
        nodes, query_str=QUERY)
    assert [int(n.node.node_id) for n in got] == want
    _in_unit([n.score for n in got])


def test_tei_request(url, want):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    assert isinstance(got, list) and len(got) == len(DOCS) and [x["index"] for x in got[:3]] == want
    assert [x["text"] for x in got[:3]] == [DOCS[i] for i in want]
    _in_unit([x["score"] for x in got])
    raw = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, headers=auth).json()
    assert [x["index"] for x in raw] == [x["index"] for x in got] and "text" not in raw[0]
    bad = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": []}, headers=auth)
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation" and bad.json()["error"]


def test_jina_and_voyage_shaped_requests(url, want):
    auth = {"Authorization": f"Bearer {KEY}"}
    jina = httpx.post(f"{url}/v1/rerank", headers=auth, json={"model": "finerank", "query": QUERY,
                                                               "documents": DOCS, "top_n": 3,
                                                               "return_documents": True}).json()
    assert [x["index"] for x in jina["results"]] == want and jina["results"][0]["document"]["text"] == DOCS[want[0]]
    voyage = httpx.post(f"{url}/v1/rerank", headers=auth, json={"model": "finerank", "query": QUERY,
                                                                 "documents": DOCS, "top_k": 3}).json()
    assert [x["index"] for x in voyage["data"]] == want and voyage["object"] == "list"


def test_no_body_gets_a_500_on_the_cohere_routes(url):
    from test_serve import HOSTILE

    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for path in ("/v1/rerank", "/v2/rerank"):
        for body in HOSTILE:
            r = httpx.post(f"{url}{path}", content=body, headers=auth, timeout=60)
            assert r.status_code < 500, (path, body[:80], r.status_code, r.text[:300])
            if r.status_code != 200:
                assert r.json()["message"], (path, body[:80])
    metrics = httpx.get(f"{url}/metrics", headers=auth).text
    assert 'finerank_requests_total{path="/v2/rerank",status="400"}' in metrics
