"""``finerank serve``: an HTTP rerank service (FastAPI + uvicorn) over a :class:`~finerank.rerank.Reranker`.

- ``POST /rerank`` takes ``{"query", "documents": [...], "top_n"?, "return_documents"?}`` (``texts`` may stand
  for ``documents``, as in text-embeddings-inference; a document may be a string or ``{"text": ...}``) and answers
  ``{"results": [{"index", "relevance_score", "document"?: {"text"}}], "model"}``, best first: the shape of the
  common hosted rerank APIs.
- ``GET /health`` says the model is loaded; ``GET /metrics`` is Prometheus text (requests by path and status,
  /rerank latency, pairs scored).
- Limits: ``max_documents`` a request and ``max_chars`` a document (and for the query), answered 413 naming the
  limit; bodies over what those limits allow are refused (413) before they are read. Malformed requests get 422
  naming the field; never a 500. With ``api_key``, /rerank and /metrics need ``Authorization: Bearer KEY`` (401
  otherwise); /health stays open for probes.
- Requests are scored one at a time (the Reranker's lock): concurrent requests queue and each gets its own answer.
"""

import hmac  # no `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime
import logging
import threading
import time
from collections import Counter

from .errors import FinerankError
from .rerank import Reranker

log = logging.getLogger("finerank.serve")

MAX_DOCUMENTS = 1000
MAX_CHARS = 100_000
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PATHS = ("/rerank", "/health", "/metrics")


class Metrics:
    """Counters kept in memory and written in the Prometheus text format."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.pairs = 0
        self.documents = 0
        self.in_flight = 0

    def request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path if path in PATHS else "other", status)] += 1
            if path == "/rerank":
                self.latency_sum += seconds
                self.latency_count += 1
                for i, le in enumerate(BUCKETS):
                    if seconds <= le:
                        self.buckets[i] += 1

    def scored(self, pairs: int) -> None:
        with self._lock:
            self.pairs += pairs

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP finerank_requests_total HTTP requests served, by path and status code.",
                     "# TYPE finerank_requests_total counter"]
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'finerank_requests_total{{path="{path}",status="{status}"}} {n}')
            lines += ["# HELP finerank_rerank_latency_seconds Time to answer POST /rerank.",
                      "# TYPE finerank_rerank_latency_seconds histogram"]
            for le, n in zip(BUCKETS, self.buckets):
                lines.append(f'finerank_rerank_latency_seconds_bucket{{le="{le}"}} {n}')
            lines += [f'finerank_rerank_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"finerank_rerank_latency_seconds_sum {self.latency_sum:.6f}",
                      f"finerank_rerank_latency_seconds_count {self.latency_count}",
                      "# HELP finerank_pairs_scored_total (query, document) pairs scored.",
                      "# TYPE finerank_pairs_scored_total counter",
                      f"finerank_pairs_scored_total {self.pairs}",
                      "# HELP finerank_requests_in_flight Requests being answered now.",
                      "# TYPE finerank_requests_in_flight gauge",
                      f"finerank_requests_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"


def _error_text(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(model, *, api_key: str | None = None, max_documents: int = MAX_DOCUMENTS,
               max_chars: int = MAX_CHARS, name: str | None = None, **reranker_options):
    """The FastAPI app serving ``model`` (a :class:`Reranker`, or anything ``Reranker`` takes)."""
    try:
        from fastapi import Depends, FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, PlainTextResponse
        from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr
    except ImportError:
        raise FinerankError("serve needs FastAPI and uvicorn", hint="pip install 'finerank[serve]'") from None
    if max_documents < 1 or max_chars < 1:
        raise FinerankError("max_documents and max_chars must be at least 1")

    reranker = model if isinstance(model, Reranker) else Reranker(model, **reranker_options)
    model_name = name or str(reranker.backend.source)
    metrics = Metrics()
    # a body holding max_documents documents of max_chars characters (JSON may escape a character as 12 bytes)
    max_body = 12 * max_chars * (max_documents + 1) + 64 * max_documents + 65536

    class TextObject(BaseModel):
        model_config = ConfigDict(extra="ignore")
        text: StrictStr

    class RerankRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # clients send e.g. "model"; it is not ours to choose
        query: StrictStr
        documents: list[StrictStr | TextObject] | None = None
        texts: list[StrictStr] | None = None
        top_n: StrictInt | None = None
        return_documents: StrictBool = False
        return_text: StrictBool | None = None  # text-embeddings-inference's name for return_documents
        scores: list[float] | None = None  # first-stage (e.g. BM25) scores, for a model saved with a fusion

    app = FastAPI(title="finerank rerank service", version="1", docs_url="/docs", redoc_url=None)
    app.state.reranker = reranker
    app.state.metrics = metrics

    def problem(status: int, detail: str, **extra) -> JSONResponse:
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            response = problem(413, f"request body too large: {length} bytes (limit {max_body} bytes, from "
                                    f"max_documents={max_documents} and max_chars={max_chars})", limit="max_body")
        else:
            with metrics._lock:
                metrics.in_flight += 1
            try:
                response = await call_next(request)
            finally:
                with metrics._lock:
                    metrics.in_flight -= 1
        metrics.request(request.url.path, response.status_code, time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return problem(422, _error_text(errors), errors=errors)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug of ours, not bad input: say so, keep serving
        log.exception("error while answering %s", request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}")

    def authorized(request: Request):
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            from fastapi import HTTPException

            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    def health():
        return {"status": "ok", **reranker.describe(), "limits": {"max_documents": max_documents,
                                                                   "max_chars": max_chars}}

    @app.get("/metrics", dependencies=[Depends(authorized)])
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/rerank", dependencies=[Depends(authorized)])
    def rerank(req: RerankRequest):
        if req.documents is not None and req.texts is not None:
            return problem(422, "give 'documents' or 'texts', not both")
        docs = req.documents if req.documents is not None else req.texts
        if docs is None:
            return problem(422, "documents: field required (a list of strings; 'texts' is accepted too)")
        if not req.query.strip():
            return problem(422, "query: must not be empty")
        if not docs:
            return problem(422, "documents: must not be empty")
        if req.top_n is not None and req.top_n < 1:
            return problem(422, f"top_n: must be at least 1, got {req.top_n}")
        if len(docs) > max_documents:
            return problem(413, f"too many documents: {len(docs)} (limit max_documents={max_documents})",
                           limit="max_documents")
        if len(req.query) > max_chars:
            return problem(413, f"query too long: {len(req.query)} characters (limit max_chars={max_chars})",
                           limit="max_chars")
        texts = [d if isinstance(d, str) else d.text for d in docs]
        for i, t in enumerate(texts):
            if len(t) > max_chars:
                return problem(413, f"document {i} too long: {len(t)} characters (limit max_chars={max_chars})",
                               limit="max_chars")
        if req.scores is not None and len(req.scores) != len(texts):
            return problem(422, f"scores: {len(req.scores)} first-stage scores for {len(texts)} documents")
        ranked = reranker.rerank(req.query, texts, top_k=req.top_n, first_stage=req.scores)
        metrics.scored(len(texts))
        give_text = req.return_documents or bool(req.return_text)
        results = []
        for r in ranked:
            row = {"index": r.index, "relevance_score": r.score}
            if give_text:
                row["document"] = {"text": texts[r.index]}
            results.append(row)
        return {"results": results, "model": model_name}

    return app


def serve(model, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          max_documents: int = MAX_DOCUMENTS, max_chars: int = MAX_CHARS, log_level: str = "info",
          **reranker_options) -> None:
    """Load ``model`` and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise FinerankError("serve needs FastAPI and uvicorn", hint="pip install 'finerank[serve]'") from None
    app = create_app(model, api_key=api_key, max_documents=max_documents, max_chars=max_chars,
                     **reranker_options)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
