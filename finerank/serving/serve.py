"""``finerank serve``: an HTTP rerank service (FastAPI + uvicorn) over any Scorer (:mod:`finerank.scorers.base`;
a model folder loads through :func:`finerank.scorers.load.load_scorer`, with its saved fusion and cascade).

- ``POST /rerank`` takes ``{"query", "documents": [...], "top_n"?, "return_documents"?}`` (a document may be a
  string or ``{"text": ...}``) and answers ``{"results": [{"index", "relevance_score", "score", "document"?:
  {"text"}}], "model"}``, best first; ``relevance_score`` is P(relevant) in [0, 1] (the model's saved calibration,
  else the logistic of the raw score), ``score`` the served scorer's raw score on the scale it states (``GET
  /health``: ``scale``). A request with ``texts`` is text-embeddings-inference's and gets TEI's answer; Cohere's
  ``/v1/rerank`` and ``/v2/rerank`` answer as Cohere does: the routes live in :mod:`finerank.serving.apis`, all over
  one handler and one set of limits.
- ``GET /health`` says the model is loaded and lists its parts (``parts``: each cascade stage and fusion signal,
  each scored a probe pair with a finite number at load, which refuses a model that does not); ``GET /metrics`` is
  Prometheus text (requests by path and status, /rerank latency, pairs scored).
- Limits: ``max_documents`` a request, ``max_chars`` a document (and for the query) and ``max_pairs`` model inputs
  (query-document windows) a request may cost, checked before the model runs, answered 413 naming the limit;
  bodies over what those limits allow are refused (413) by their Content-Length, or as soon as that many bytes of a
  chunked body have come in. Malformed requests (bad JSON, wrong types, text that is not Unicode, numbers out of
  range) get 4xx naming the field; a model that fails or returns a score that is not finite on a request gets 503
  (the server's log says why); never a 500 from the model, and every answer is counted in /metrics. With
  ``api_key`` (an empty one refuses to start), /rerank, /metrics, /docs and /openapi.json need
  ``Authorization: Bearer KEY`` (401 otherwise; ``docs=False`` turns the last two off); /health stays open for
  probes. No answer names where the model lies on disk.
- A request is one candidate list (:func:`finerank.scorers.base.one_list`) scored by ``score_candidates``;
  concurrent requests share the cross-encoder's forward passes (:mod:`finerank.serving.batcher`), with a bounded
  queue (429 and Retry-After past it); ``batching=False`` scores them one at a time.
"""

import hmac  # no `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from pathlib import Path

from ..core.errors import FinerankError
from ..scorers.base import check_top_k, one_list, rank
from ..scorers.cascade import ce_pairs
from ..scorers.load import check_scorer, load_scorer
from .apis import COHERE_PATHS, add_rerank_routes, probability_map
from .batcher import QueueFull, install as install_batchers
from .rerank import MAX_CHARS, too_long  # one cap for the CLI's rerank and the server

log = logging.getLogger("finerank.serving.serve")

MAX_DOCUMENTS = 1000
MAX_PAIRS = 4000  # model inputs (query-document windows) one request may cost: about 1000 documents of 1000 tokens
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RERANK_PATHS = ("/rerank", *COHERE_PATHS)
PATHS = (*RERANK_PATHS, "/health", "/metrics")


class Metrics:
    """Counters kept in memory and written in the Prometheus text format."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.pairs = 0
        self.skipped = 0
        self.documents = 0
        self.in_flight = 0
        self.batchers: list = []  # the dynamic batchers in front of the cross-encoders (none: one request a pass)

    def request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path if path in PATHS else "other", status)] += 1
            if path in RERANK_PATHS:
                self.latency_sum += seconds
                self.latency_count += 1
                for i, le in enumerate(BUCKETS):
                    if seconds <= le:
                        self.buckets[i] += 1

    def scored(self, pairs: int, skipped: int = 0) -> None:
        with self._lock:
            self.pairs += pairs
            self.skipped += skipped

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP finerank_requests_total HTTP requests served, by path and status code.",
                     "# TYPE finerank_requests_total counter"]
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'finerank_requests_total{{path="{path}",status="{status}"}} {n}')
            lines += ["# HELP finerank_rerank_latency_seconds Time to answer a rerank request (any of its routes).",
                      "# TYPE finerank_rerank_latency_seconds histogram"]
            for le, n in zip(BUCKETS, self.buckets):
                lines.append(f'finerank_rerank_latency_seconds_bucket{{le="{le}"}} {n}')
            lines += [f'finerank_rerank_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"finerank_rerank_latency_seconds_sum {self.latency_sum:.6f}",
                      f"finerank_rerank_latency_seconds_count {self.latency_count}",
                      "# HELP finerank_pairs_scored_total (query, document) pairs the cross-encoder scored.",
                      "# TYPE finerank_pairs_scored_total counter",
                      f"finerank_pairs_scored_total {self.pairs}",
                      "# HELP finerank_documents_skipped_total Documents a cascade kept from the cross-encoder.",
                      "# TYPE finerank_documents_skipped_total counter",
                      f"finerank_documents_skipped_total {self.skipped}",
                      "# HELP finerank_requests_in_flight Requests being answered now.",
                      "# TYPE finerank_requests_in_flight gauge",
                      f"finerank_requests_in_flight {self.in_flight}"]
        if self.batchers:
            queued = sum(b.queued for b in self.batchers)
            st = {k: sum(b.stats[k] for b in self.batchers) for k in self.batchers[0].stats}
            lines += ["# HELP finerank_batch_queue_pairs Model inputs waiting for a shared forward pass.",
                      "# TYPE finerank_batch_queue_pairs gauge", f"finerank_batch_queue_pairs {queued}",
                      "# HELP finerank_batches_total Shared passes (gathered requests) the batcher ran.",
                      "# TYPE finerank_batches_total counter", f"finerank_batches_total {st['passes']}",
                      "# HELP finerank_batched_requests_total Requests those passes served.",
                      "# TYPE finerank_batched_requests_total counter",
                      f"finerank_batched_requests_total {st['requests']}",
                      "# HELP finerank_batched_pairs_total Model inputs those passes scored.",
                      "# TYPE finerank_batched_pairs_total counter", f"finerank_batched_pairs_total {st['pairs']}",
                      "# HELP finerank_batch_max_requests The most requests one pass served.",
                      "# TYPE finerank_batch_max_requests gauge", f"finerank_batch_max_requests {st['max_requests']}",
                      "# HELP finerank_batch_refused_total Requests refused (429) because the queue was full.",
                      "# TYPE finerank_batch_refused_total counter", f"finerank_batch_refused_total {st['refused']}"]
        return "\n".join(lines) + "\n"


def _error_text(errors) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def public_name(source) -> str:
    """How the service names its model: a hub id as it is, a folder by its name (``run/best`` for a run's kept
    model or checkpoint), never by where it lies on disk."""
    text = str(source)
    path = Path(text)
    if not (path.is_absolute() or path.exists()):
        return text
    if (path.name == "best" or path.name.startswith("checkpoint-")) and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def _no_paths(value):
    """``value`` (a describe() dict) with every absolute path replaced by its :func:`public_name`."""
    if isinstance(value, dict):
        return {k: _no_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return public_name(value)
    return value


def _not_unicode(field: str, text: str) -> str | None:
    """Why ``text`` cannot be scored, when it holds a lone surrogate (JSON may escape one; UTF-8 cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"{field}: not valid Unicode: a lone surrogate U+{ord(text[e.start]):04X} at character {e.start} "
                "(escape a character outside the BMP as a surrogate pair)")
    return None


async def _answer(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class _Guard:
    """The app's outer layer (plain ASGI): counts every answer in /metrics by path and status, a 500 too; refuses a
    body over ``max_body`` bytes by its Content-Length, or, while a chunked body streams in, as soon as more has come
    (``too_large``, an HTTPException the app answers 413; the rest is never read); and answers an exception that
    escaped the app with a 500 naming its type only."""

    def __init__(self, app, *, metrics: "Metrics", max_body: int, detail: str, too_large: type):
        self.app, self.metrics, self.max_body, self.detail, self.too_large = app, metrics, max_body, detail, too_large

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = {"status": 500, "started": False, "received": 0}

        async def send_(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        async def receive_():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    raise self.too_large(413, f"request body too large: more than {self.max_body} bytes "
                                              f"({self.detail})")
            return message

        length = dict(scope.get("headers") or []).get(b"content-length")
        with self.metrics._lock:
            self.metrics.in_flight += 1
        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await _answer(send_, 413, {"detail": f"request body too large: {length.decode('latin-1')[:40]} bytes "
                                                     f"(limit {self.max_body} bytes, {self.detail})",
                                           "limit": "max_body"})
            else:
                await self.app(scope, receive_, send_)
        except Exception as exc:  # a bug of ours, not bad input: say so (not where), keep serving
            if isinstance(exc, self.too_large):
                if not state["started"]:
                    await _answer(send_, 413, {"detail": exc.detail, "limit": "max_body"})
            else:
                log.exception("error while answering %s", scope.get("path"))
                if not state["started"]:
                    await _answer(send_, 500, {"detail": f"internal error: {type(exc).__name__}"})
        finally:
            with self.metrics._lock:
                self.metrics.in_flight -= 1
            self.metrics.request(scope.get("path", ""), state["status"], time.perf_counter() - t0)


def _fastapi():
    try:
        import fastapi
        import pydantic  # noqa: F401 - the request model's
    except ImportError:
        raise FinerankError("serve needs FastAPI and uvicorn", hint="pip install 'finerank[serve]'") from None
    return fastapi


def _request_model():
    """The body of POST /rerank: strict types, unknown fields ignored."""
    from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

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
        raw_scores: StrictBool = False  # text-embeddings-inference's: the raw score, not P(relevant)
        scores: list[float] | None = None  # first-stage (e.g. BM25) scores, for a model saved with a fusion

    return RerankRequest


class _Refused(Exception):
    """A request answered with ``status`` and ``detail`` (and a ``limit`` it broke) before any scoring."""

    def __init__(self, status: int, detail: str, limit: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.limit = status, detail, limit


def _texts(req, limits: dict) -> list[str]:
    """The request's document texts, its fields checked against each other and the limits (else _Refused)."""
    if req.documents is not None and req.texts is not None:
        raise _Refused(422, "give 'documents' or 'texts', not both")
    docs = req.documents if req.documents is not None else req.texts
    if docs is None:
        raise _Refused(422, "documents: field required (a list of strings; 'texts' is accepted too)")
    if not req.query.strip():
        raise _Refused(422, "query: must not be empty")
    if not docs:
        raise _Refused(422, "documents: must not be empty")
    try:
        check_top_k(req.top_n, "top_n")
    except FinerankError as e:
        raise _Refused(422, f"top_n: {e.message}") from None
    if len(docs) > limits["max_documents"]:
        raise _Refused(413, f"too many documents: {len(docs)} (limit max_documents={limits['max_documents']})",
                       "max_documents")
    texts = [d if isinstance(d, str) else d.text for d in docs]
    if req.scores is not None and len(req.scores) != len(texts):
        raise _Refused(422, f"scores: {len(req.scores)} first-stage scores for {len(texts)} documents")
    if req.scores is not None and not all(math.isfinite(x) for x in req.scores):
        raise _Refused(422, "scores: every first-stage score must be a finite number")
    return texts


def _checked_list(req, limits: dict):
    """The request as one candidate list, refused (_Refused) when it breaks a limit or holds text not Unicode."""
    cands = one_list(req.query, _texts(req, limits), req.scores)
    found = too_long(cands, limits["max_chars"])
    if found is not None:
        what, _, did, n = found
        name = "query" if what == "query" else f"document {did}"
        raise _Refused(413, f"{name} too long: {n} characters (limit max_chars={limits['max_chars']})", "max_chars")
    why = _not_unicode("query", req.query) or next(
        (w for d, t in next(iter(cands.docs.values())) if (w := _not_unicode(f"documents.{d}", t))), None)
    if why:
        raise _Refused(422, why)
    return cands


def _check_cost(scorer, cands, max_pairs: int) -> None:
    """The model inputs the request would cost, counted before the model runs: a cheap lower bound first (a huge
    request is refused at once), then exactly, off the model's lock."""
    bound = getattr(scorer, "min_cost", None)
    cost = bound(cands) if bound is not None else None
    least = "at least "
    if cost is None or cost <= max_pairs:
        cost, least = scorer.cost(cands), ""
    if cost > max_pairs:
        raise _Refused(413, f"request too costly: {least}{cost} model inputs (query-document windows) for "
                            f"{ce_pairs(scorer, cands.n_pairs)} documents (limit max_pairs={max_pairs})", "max_pairs")


def _answer_rerank(scorer, req, limits: dict, metrics: "Metrics", model_name: str):
    """POST /rerank's answer: (status, body)."""
    try:
        cands = _checked_list(req, limits)
        _check_cost(scorer, cands, limits["max_pairs"])
    except _Refused as r:
        return r.status, {"detail": r.detail, **({"limit": r.limit} if r.limit else {})}
    texts = [t for _, t in next(iter(cands.docs.values()))]
    try:
        ranked = rank(scorer, req.query, texts, req.top_n, req.scores)
    except QueueFull as e:  # backpressure: the batcher's queue is full; the client may retry shortly
        return 429, {"detail": f"the server is busy: {e}; retry shortly", "retry_after": 1}
    except FinerankError as e:  # a part that cannot score now (a model folder gone since the load): not the client's
        log.error("the model could not score a request: %s", e)
        return 503, {"detail": "the model could not score this request (a part of it failed; see the server's "
                               "log); the service needs its operator"}
    if not all(math.isfinite(r.score) for r in ranked):
        if req.scores is not None:
            return 422, {"detail": "scores: fused with these first-stage scores the scores are not finite numbers "
                                   "(scores too large?)"}
        log.error("the model scored a request with a score that is not a finite number (NaN or infinity)")
        return 503, {"detail": "the model returned a score that is not a finite number (NaN or infinity) for this "
                               "request; no ranking can be given (see the server's log)"}
    pairs = ce_pairs(scorer, len(texts))
    metrics.scored(pairs, len(texts) - pairs)
    give_text = req.return_documents or bool(req.return_text)
    results = [{"index": r.index, "relevance_score": r.score, **({"document": {"text": texts[r.index]}}
                                                                  if give_text else {})} for r in ranked]
    return 200, {"results": results, "model": model_name}


def _authorizer(api_key: str | None):
    from fastapi import HTTPException, Request

    def authorized(request: Request):
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorized


def _add_errors(app, metrics: "Metrics", max_body: int, limits: dict) -> None:
    """The guard (body size, every answer counted) and the answers to a too-large or invalid body."""
    from fastapi import HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    class BodyTooLarge(HTTPException):  # raised while the body streams in; FastAPI passes HTTPExceptions on
        pass

    app.add_middleware(_Guard, metrics=metrics, max_body=max_body, too_large=BodyTooLarge,
                       detail=f"from max_documents={limits['max_documents']} and max_chars={limits['max_chars']}")

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        return JSONResponse({"detail": exc.detail, "limit": "max_body"}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": _error_text(errors), "errors": errors}, status_code=422)


def _add_routes(app, scorer, limits: dict, metrics: "Metrics", model_name: str, api_key: str | None,
                docs: bool, checked: list) -> None:
    from fastapi import Depends
    from fastapi.responses import JSONResponse, PlainTextResponse

    authorized = _authorizer(api_key)
    RerankRequest = _request_model()

    @app.get("/health")
    def health():
        return {"status": "ok", **_no_paths(scorer.describe()), "model": model_name, "limits": limits,
                "parts": _no_paths(checked), "calibrated": getattr(scorer, "calibration", None) is not None}

    if docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorized)])
        def openapi():
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=[Depends(authorized)])
        def swagger():
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/metrics", dependencies=[Depends(authorized)])
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    add_rerank_routes(app, answer=lambda req: _answer_rerank(scorer, req, limits, metrics, model_name),
                      native=RerankRequest, authorized=authorized, to_probability=probability_map(scorer))


def check_api_key(api_key: str | None) -> None:
    """An API key given (``--api-key``, ``FINERANK_API_KEY``) must hold a character other than whitespace: an empty
    one would serve with no authentication, which its operator did not ask for."""
    if api_key is not None and not api_key.strip():
        raise FinerankError("the API key is empty (--api-key '' or FINERANK_API_KEY set to nothing): the server "
                            "would run without authentication",
                            hint="give a key, or unset FINERANK_API_KEY (and leave --api-key out) to serve without one")


def create_app(model, *, api_key: str | None = None, max_documents: int = MAX_DOCUMENTS,
               max_chars: int = MAX_CHARS, name: str | None = None, cascade: bool = True,
               max_pairs: int = MAX_PAIRS, docs: bool = True, batching: bool = True, batch_wait_ms: float = 2.0,
               max_batch_pairs: int = 256, max_queue: int = 16000, **reranker_options):
    """The FastAPI app serving ``model``: a Scorer, or what :func:`finerank.scorers.load.load_scorer` takes (a model
    saved with a cascade runs the cross-encoder on its top ``n2`` documents only, the request's order being the
    first stage's, unless ``cascade`` is false). ``name``: what answers call the model (default:
    :func:`public_name`). ``docs``: serve /docs and /openapi.json (behind ``api_key`` when one is set).
    ``batching``: concurrent requests share the cross-encoder's forward passes (:mod:`finerank.serving.batcher`: up
    to ``max_batch_pairs`` inputs a pass, gathered for at most ``batch_wait_ms`` after the first; past ``max_queue``
    waiting inputs a request gets 429 with Retry-After); off, requests are scored one at a time."""
    fastapi = _fastapi()
    if max_documents < 1 or max_chars < 1 or max_pairs < 1:
        raise FinerankError("max_documents, max_chars and max_pairs must be at least 1")
    check_api_key(api_key)
    scorer = load_scorer(model, cascade=cascade, **reranker_options)
    checked = check_scorer(scorer, public_name(name or scorer.name))  # every part scores a probe pair, or exit 2
    limits = {"max_documents": max_documents, "max_chars": max_chars, "max_pairs": max_pairs}
    metrics = Metrics()
    if batching:
        metrics.batchers = install_batchers(scorer, wait_ms=batch_wait_ms, max_batch_pairs=max_batch_pairs,
                                            max_queue=max_queue)
    # a body holding max_documents documents of max_chars characters (JSON may escape a character as 12 bytes)
    max_body = 12 * max_chars * (max_documents + 1) + 64 * max_documents + 65536
    app = fastapi.FastAPI(title="finerank rerank service", version="1", docs_url=None, openapi_url=None,
                          redoc_url=None)
    app.state.scorer = scorer
    app.state.metrics = metrics
    _add_errors(app, metrics, max_body, limits)
    _add_routes(app, scorer, limits, metrics, name or public_name(scorer.name), api_key, docs, checked)
    return app


def serve(model, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          max_documents: int = MAX_DOCUMENTS, max_chars: int = MAX_CHARS, max_pairs: int = MAX_PAIRS,
          docs: bool = True, log_level: str = "info", workers: int = 1, **options) -> None:
    """Load ``model`` and serve it until interrupted (the options as :func:`create_app`'s). ``workers``: server
    processes, each with its own copy of the model (uvicorn's workers; for CPU hosts with cores to spare: a
    process's forward pass already uses several threads, so 2-4 workers of a few threads each is the usual split)."""
    check_api_key(api_key)
    try:
        import uvicorn
    except ImportError:
        raise FinerankError("serve needs FastAPI and uvicorn", hint="pip install 'finerank[serve]'") from None
    if workers < 1:
        raise FinerankError(f"workers must be at least 1, got {workers}")
    kwargs = dict(api_key=api_key, max_documents=max_documents, max_chars=max_chars, max_pairs=max_pairs, docs=docs,
                  **options)
    app = create_app(model, **kwargs)  # loaded and checked here first: a bad model is exit 2, not N dying workers
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    del app
    os.environ[_OPTIONS_VAR] = json.dumps({"model": str(model), **kwargs})
    uvicorn.run("finerank.serving.serve:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level=log_level)


_OPTIONS_VAR = "FINERANK_SERVE_OPTIONS"  # how serve(workers=N) hands its options to each worker process


def app_from_environment():
    """The app of one of ``serve(workers=N)``'s worker processes, built from the options it left in the
    environment."""
    options = json.loads(os.environ[_OPTIONS_VAR])
    return create_app(options.pop("model"), **options)
