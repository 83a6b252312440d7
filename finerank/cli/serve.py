"""``finerank serve``: the HTTP server over a model."""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..serving.serve import check_api_key, serve as run_serve
from .common import LongDocsOpt, NoCascadeOpt, warn


def serve(
    model: str = typer.Option(..., "--model", help="Model: run folder, model folder, export folder, hub id."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FINERANK_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' (or set FINERANK_API_KEY)."),
    max_documents: int = typer.Option(1000, "--max-documents", help="Documents a request may hold."),
    max_chars: int = typer.Option(100_000, "--max-chars", help="Characters a document (or query) may hold."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's)."),
    long_docs: str = LongDocsOpt,
    batch_size: int = typer.Option(32, "--batch-size", help="Model inputs per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, mps (default: the best there is)."),
    no_cascade: bool = NoCascadeOpt,
    max_pairs: int = typer.Option(4000, "--max-pairs", help="Model inputs (query-document windows) a request may "
                                  "cost; a costlier one gets 413 before the model runs."),
    no_docs: bool = typer.Option(False, "--no-docs", help="Serve no /docs or /openapi.json (with --api-key they "
                                 "need the key)."),
    batch_wait_ms: float = typer.Option(2.0, "--batch-wait-ms", min=0, help="How long a shared forward pass waits "
                                        "for more concurrent requests after the first."),
    max_batch_pairs: int = typer.Option(256, "--max-batch-pairs", min=1, help="Model inputs one shared pass "
                                        "gathers (a larger request still runs whole)."),
    max_queue: int = typer.Option(16000, "--max-queue", min=1, help="Model inputs that may wait; past it a "
                                  "request gets 429 with Retry-After."),
    no_batching: bool = typer.Option(False, "--no-batching", help="Score requests one at a time (no shared "
                                     "passes)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes, each with its own model (CPU hosts "
                                "with cores to spare: 2-4, with fewer torch threads each via OMP_NUM_THREADS)."),
):
    """Serve POST /rerank (finerank's and TEI's shapes), Cohere's /v1/rerank and /v2/rerank, GET /health and GET
    /metrics over HTTP (FastAPI + uvicorn). Concurrent requests share forward passes (dynamic batching)."""
    if api_key is None and "FINERANK_API_KEY" in os.environ:  # typer reads a variable set to nothing as unset
        api_key = os.environ["FINERANK_API_KEY"]
    check_api_key(api_key)  # an empty key: refused, never a server without authentication
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"serving on {host} without --api-key: anyone who can reach it can use it")
    run_serve(model, host=host, port=port, api_key=api_key, max_documents=max_documents, max_chars=max_chars,
              max_length=max_length, long_docs=long_docs, batch_size=batch_size, device=device,
              cascade=not no_cascade, max_pairs=max_pairs, docs=not no_docs, batching=not no_batching,
              batch_wait_ms=batch_wait_ms, max_batch_pairs=max_batch_pairs, max_queue=max_queue, workers=workers)
