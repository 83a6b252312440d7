"""``finerank evaluate``: rerank held-out candidates with each model and compare with the baselines."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from ..evaluation.dependence import CHECK_LISTS
from ..evaluation.evaluate import evaluate as run_evaluate
from .common import MaxLabelOpt, NoCascadeOpt, SplitOpt, log_dim, print_report


def evaluate(
    model: List[str] = typer.Option(..., "--model", help="Model(s) to evaluate: run folder, checkpoint, hub id."),
    dataset: str = typer.Option(..., "--dataset", help="Candidate pairs JSONL, or a collection with --candidates."),
    baseline: List[str] = typer.Option([], "--baseline", help="Baseline(s): bm25, bi:NAME, cross:NAME, or NAME."),
    metric: List[str] = typer.Option([], "--metric", help="ndcg (=nDCG@10), mrr (=RR@10), or any ir-measures name."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="TREC run of candidates for a collection."),
    split: Optional[str] = SplitOpt,
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Rerank only the first K candidates of each query."),
    judgments: Optional[str] = typer.Option(None, "--judgments", help="Collection with all judgments of the queries "
                                            "(counts relevant documents the candidates missed)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Write report.html, report.md, metrics.json, runs and "
                                          "plots here."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per forward pass."),
    query_check: int = typer.Option(CHECK_LISTS, "--query-check", help="Lists scored again under other queries' "
                                    "texts, to catch a model that ignores the query (0 = off)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout."),
    max_label: float = MaxLabelOpt,
    no_cascade: bool = NoCascadeOpt,
    no_card: bool = typer.Option(False, "--no-card", help="Leave the model cards alone (by default the results go "
                                 "into the README.md of each finerank model evaluated)."),
    bi_encoder: str = typer.Option("minilm-l6", "--bi-encoder", help="The embedding model of the hybrid baseline."),
    bi_encoder_tuned: Optional[str] = typer.Option(None, "--bi-encoder-tuned", help="A tuned bi-encoder (run of "
                                                   "train --arch bi-encoder): adds 'bi-encoder (tuned)' and "
                                                   "'hybrid (tuned)'."),
):
    """Rerank held-out candidates with each model; compare with the first baseline (with significance)."""
    report = run_evaluate(model, dataset, baselines=baseline, metrics=metric or ("nDCG@10", "RR@10"),
                          candidates_run=candidates, split=split, top_k=top_k, judgments=judgments, out=out_dir,
                          max_length=max_length, batch_size=batch_size, query_check=query_check, max_label=max_label,
                          cascade=not no_cascade, card=not no_card, bi_encoder=bi_encoder,
                          tuned_bi_encoder=bi_encoder_tuned, log=log_dim)
    if as_json:
        d = report.to_dict()
        d.pop("per_query")
        print(json.dumps(d, indent=2))
        return
    print_report(report)
