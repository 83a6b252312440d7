"""finerank: fine-tune cross-encoder rerankers on your own data, prove it on held-out queries, ship it.

The public API, one function a stage (heavy libraries load only when a function that needs them runs)::

    import finerank as fr
    ds = fr.load("cranfield")            # pairs JSONL/CSV/TSV, BEIR folder, TREC qrels
    report = fr.inspect(ds)
"""

from __future__ import annotations

from importlib import import_module

from .errors import DataError, FinerankError, ModelError
from .io import load, load_collection, write_pairs
from .records import Collection, Dataset, Document, Pair, Skipped

__version__ = "0.1.0"

_LAZY = {
    "inspect": ("finerank.inspect", "inspect"),
    "doctor": ("finerank.doctor", "doctor"),
    "resolve_model": ("finerank.models", "resolve_model"),
    "load_cross_encoder": ("finerank.models", "load_cross_encoder"),
    "split_dataset": ("finerank.split", "split_dataset"),
    "write_split": ("finerank.split", "write_split"),
    "check_leakage": ("finerank.split", "check_leakage"),
    "BM25Index": ("finerank.retrieval", "BM25Index"),
    "candidates": ("finerank.retrieval", "candidates"),
    "candidate_pairs": ("finerank.retrieval", "candidate_pairs"),
    "run_metrics": ("finerank.retrieval", "run_metrics"),
    "mine": ("finerank.retrieval", "mine"),
    "to_listwise": ("finerank.retrieval", "to_listwise"),
    "Reranker": ("finerank.rerank", "Reranker"),
    "rerank_file": ("finerank.rerank", "rerank_file"),
    "export": ("finerank.export", "export"),
    "check_export": ("finerank.export", "check_export"),
    "create_app": ("finerank.serve", "create_app"),
    "serve": ("finerank.serve", "serve"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'finerank' has no attribute {name!r}")


__all__ = ["Collection", "DataError", "Dataset", "Document", "FinerankError", "ModelError", "Pair", "Skipped",
           "load", "load_collection", "write_pairs", *_LAZY]
