"""The rerank routes in the shapes clients already speak, over ``serve``'s one handler and one set of limits.

- ``POST /rerank``: finerank's own request ``{"query", "documents", "top_n"?, "return_documents"?, "scores"?}`` ->
  ``{"results": [{"index", "relevance_score", "score", "document"?}], "model"}``; a request with ``texts`` (and no
  ``documents``) is text-embeddings-inference's: it gets TEI's answer, a bare list ``[{"index", "score", "text"?}]``
  of every text, best first (``score``: P(relevant), or the raw score with ``"raw_scores": true``; ``text`` with
  ``"return_text": true``) and TEI's errors ``{"error", "error_type"}``.
- ``POST /v1/rerank`` and ``POST /v2/rerank``: Cohere's (the ``cohere`` SDK's ``Client.rerank`` and
  ``ClientV2.rerank``, and what LangChain's and LlamaIndex's Cohere rerankers call): ``{"model", "query",
  "documents", "top_n"?, "return_documents"?, "rank_fields"? (v1)}`` -> ``{"id", "results": [{"index",
  "relevance_score", "score", "document"?: {"text"}}], "meta", "model"}``; errors ``{"message"}`` with Cohere's
  statuses (400 a bad request, 401 the key, 413 a limit), which the SDK raises as ``BadRequestError``,
  ``UnauthorizedError``, ... Jina's request is the same and so is its answer's ``results``; Voyage's ``top_k`` is
  read as ``top_n`` and its answer's ``data`` list is added.

``relevance_score`` is P(relevant) in [0, 1]: the model's calibration where one is saved for the served score
(``finerank calibrate``, or ``train`` on its validation lists), else the logistic of the raw score (the raw score
itself when it is a sigmoid already): see :mod:`finerank.scorers.calibration`. ``score`` is the raw score.
"""

import json  # no `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime
import uuid

from ..scorers.calibration import probability
from ..scorers.load import calibration_of

COHERE_PATHS = ("/v1/rerank", "/v2/rerank")


def probability_map(scorer):
    """The function that turns ``scorer``'s raw scores into P(relevant) (its saved calibration, else logistic)."""
    cal = calibration_of(scorer)
    return lambda scores: probability(scores, cal, scorer.scale)


def _with_probability(body: dict, to_probability) -> dict:
    """The handler's answer with ``relevance_score`` as P(relevant) and the raw score as ``score``."""
    raw = [r["relevance_score"] for r in body["results"]]
    probs = to_probability(raw) if raw else []
    results = [{"index": r["index"], "relevance_score": float(p), "score": s,
                **({"document": r["document"]} if "document" in r else {})}
               for r, p, s in zip(body["results"], probs, raw)]
    return {**body, "results": results}


def _tei(req, status: int, body: dict, to_probability):
    """(status, body) of a TEI-shaped request: a bare list, or TEI's error."""
    if status != 200:
        kind = "Overloaded" if status == 429 else "Validation"
        return status, {"error": body["detail"], "error_type": kind, **body}
    raw = [r["relevance_score"] for r in body["results"]]
    scores = raw if req.raw_scores else [float(p) for p in to_probability(raw)]
    return 200, [{"index": r["index"], "score": s, **({"text": req.texts[r["index"]]} if req.return_text else {})}
                 for r, s in zip(body["results"], scores)]


def _field_errors(err) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _cohere_model():
    """The body of Cohere's /v1 and /v2 rerank (and Jina's, Voyage's): strict types, unknown fields ignored."""
    from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

    class CohereRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: StrictStr | None = None
        query: StrictStr
        documents: list[StrictStr | dict]
        top_n: StrictInt | None = None
        top_k: StrictInt | None = None  # Voyage's name for top_n
        return_documents: StrictBool | None = None
        rank_fields: list[StrictStr] | None = None

    return CohereRequest


def _document_text(doc, i: int, rank_fields) -> str:
    """A Cohere document as the text scored: a string; an object's ``text``; with ``rank_fields``, those fields as
    ``field: value`` lines (Cohere's way)."""
    if isinstance(doc, str):
        return doc
    if rank_fields:
        missing = [f for f in rank_fields if f not in doc]
        if missing:
            raise ValueError(f"documents.{i}: no field '{missing[0]}' (named in rank_fields)")
        return "\n".join(f"{f}: {doc[f] if isinstance(doc[f], str) else json.dumps(doc[f])}" for f in rank_fields)
    if not isinstance(doc.get("text"), str):
        raise ValueError(f"documents.{i}: a string, or an object with a string 'text' (or give rank_fields)")
    return doc["text"]


def _retry(status: int) -> dict | None:
    """The headers of an error answer: 429 (the batcher's queue is full) says when to come back."""
    return {"Retry-After": "1"} if status == 429 else None


def _cohere_error(status: int, message: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    status = 400 if status == 422 else status  # Cohere answers a bad request 400
    return JSONResponse({"id": str(uuid.uuid4()), "message": message, "detail": message}, status_code=status,
                        headers=headers)


def _cohere_answer(version: str, body: dict, docs: list, return_documents: bool, voyage: bool) -> dict:
    results = []
    for r in body["results"]:
        doc = docs[r["index"]]
        results.append({"index": r["index"], "relevance_score": r["relevance_score"], "score": r["score"],
                        **({"document": doc if isinstance(doc, dict) else {"text": doc}} if return_documents
                           else {})})
    out = {"id": str(uuid.uuid4()), "results": results, "model": body.get("model"),
           "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}}
    if voyage:
        out.update({"object": "list", "data": results})
    return out


def _cohere_route(version: str, *, answer, native, authorized, to_probability):
    """The endpoint of /v{version}/rerank: parse, check the key, one handler, Cohere's answer or error."""
    from fastapi import HTTPException, Request
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool

    CohereRequest = _cohere_model()

    async def endpoint(request: Request):
        try:
            authorized(request)
        except HTTPException as e:
            return _cohere_error(e.status_code, e.detail, e.headers)
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError) as e:
            return _cohere_error(400, f"body: not valid JSON ({type(e).__name__})")
        try:
            req = CohereRequest.model_validate(data)
            texts = [_document_text(d, i, req.rank_fields) for i, d in enumerate(req.documents)]
            top_n = req.top_n if req.top_n is not None else req.top_k
            inner = native(query=req.query, documents=texts, top_n=top_n)
        except ValidationError as e:
            return _cohere_error(400, _field_errors(e))
        except (ValueError, RecursionError) as e:
            return _cohere_error(400, str(e))
        status, body = await run_in_threadpool(answer, inner)
        if status != 200:
            return _cohere_error(status, body["detail"], _retry(status))
        return _cohere_answer(version, _with_probability(body, to_probability), req.documents,
                              bool(req.return_documents), req.top_k is not None and req.top_n is None)

    endpoint.__name__ = f"cohere_v{version}_rerank"
    return endpoint


def add_rerank_routes(app, *, answer, native, authorized, to_probability) -> None:
    """Mount /rerank (finerank's and TEI's shapes) and Cohere's /v1/rerank and /v2/rerank on ``app``, every one over
    ``answer`` (the one handler: a ``native`` request -> (status, body)), behind ``authorized`` (the key)."""
    from fastapi import Depends
    from fastapi.responses import JSONResponse

    @app.post("/rerank", dependencies=[Depends(authorized)])
    def rerank(req: native):
        tei = req.texts is not None and req.documents is None
        status, body = answer(req)
        if tei:
            status, body = _tei(req, status, body, to_probability)
        elif status == 200:
            body = _with_probability(body, to_probability)
        return body if status == 200 else JSONResponse(body, status_code=status, headers=_retry(status))

    for path in COHERE_PATHS:
        version = path.split("/")[1].removeprefix("v")
        app.post(path)(_cohere_route(version, answer=answer, native=native, authorized=authorized,
                                     to_probability=to_probability))
