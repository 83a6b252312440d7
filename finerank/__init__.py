"""finerank: fine-tune cross-encoder rerankers on your own data, prove it on held-out queries, ship it.

The public API, one function a stage (heavy libraries load only when a function that needs them runs)::

    import finerank as fr
    ds = fr.load("cranfield")                      # pairs JSONL/CSV/TSV, BEIR folder, TREC qrels
    report = fr.inspect(ds)
    parts = fr.split_dataset(ds, val_fraction=0.2)
    result = fr.train(fr.TrainConfig(model="minilm-l6", train="train.jsonl", val="val.jsonl", out="runs/x"))
    cands = fr.Candidates.from_file("test-candidates.jsonl")
    run = fr.Reranker(result.best_dir).score_candidates(cands)

Folders are the layers (a module imports only from lower ones): the README's Layout section lists them, and
tests/test_layers.py reads that list.
"""

from __future__ import annotations

from .training.bi_encoder import BiTrainResult, train_bi_encoder
from .data.candidates import Candidates
from .scorers.cascade import Cascade, CascadeSpec
from .scorers.load import load_scorer
from .training.fit import tune_cascade
from .demo import DemoConfig, demo
from .doctor import doctor
from .core.errors import DataError, FinerankError, ModelError
from .evaluation.evaluate import EvaluationReport, evaluate
from .serving.export import check_export, export
from .scorers.fused import FusionSpec
from .retrieval.hybrid import fuse
from .data.inspect import inspect
from .io.collection import load, load_collection
from .io.outputs import write_pairs
from .core.metrics import aggregate, per_query
from .io.models import load_bi_encoder, load_cross_encoder, resolve_model
from .core.records import Collection, Dataset, Document, Pair, Run, Skipped
from .scorers.cross_encoder import Reranker
from .serving.rerank import rerank_file
from .retrieval.bm25 import BM25Index, candidates, run_metrics
from .retrieval.mine import candidate_pairs, mine, to_listwise
from .retrieval.dense import BiEncoder
from .serving.serve import create_app, serve
from .data.split import check_leakage, split_dataset, write_split
from .training.config import TrainConfig
from .training.distill import DistillConfig, DistillResult, distill
from .training.run import TrainResult
from .training.train import train

__version__ = "0.1.0"

__all__ = [
    # records and errors
    "Pair", "Document", "Collection", "Dataset", "Skipped", "Run", "FinerankError", "DataError", "ModelError",
    # data
    "load", "load_collection", "write_pairs", "inspect", "split_dataset", "write_split", "check_leakage",
    # first stage and candidate lists
    "BM25Index", "candidates", "candidate_pairs", "mine", "to_listwise", "Candidates", "BiEncoder",
    # models, scoring, metrics
    "resolve_model", "load_cross_encoder", "load_bi_encoder", "Reranker", "rerank_file", "fuse", "FusionSpec",
    "Cascade", "CascadeSpec", "load_scorer", "tune_cascade",
    "aggregate", "per_query", "run_metrics",
    # workflows
    "TrainConfig", "TrainResult", "train", "train_bi_encoder", "BiTrainResult", "distill", "DistillConfig",
    "DistillResult", "evaluate", "EvaluationReport", "export", "check_export", "create_app",
    "serve", "doctor", "DemoConfig", "demo",
]
