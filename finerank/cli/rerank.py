"""``finerank rerank`` and ``finerank export``: rerank candidate lists with a model, export it to ONNX."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..core.errors import FinerankError
from ..scorers.base import check_top_k
from ..scorers.cascade import Cascade
from ..scorers.load import check_scorer, load_scorer
from ..scorers.on_ray import RayScorer
from ..serving.rerank import MAX_CHARS, rerank_file, rerank_outputs
from ..serving.export import export as run_export
from .common import LongDocsOpt, MaxLabelOpt, NoCascadeOpt, RayAddressOpt, RayOpt, RayWorkersOpt, log_dim, out

WindowOpt = typer.Option(None, "--window", help="Document tokens a window (default: all that fit).")
StrideOpt = typer.Option(None, "--stride", help="Tokens between window starts (default: half a window).")


def rerank(
    model: str = typer.Option(..., "--model", help="Model: run folder, model folder, export folder, hub id."),
    input: str = typer.Option(..., "--input", help="Candidates: pairs JSONL (rows grouped by query_id), or a TREC "
                              "run with --collection."),
    output: str = typer.Option(..., "--output", help="Reranked rows (JSONL, best first per query)."),
    trec: Optional[str] = typer.Option(None, "--trec", help="TREC run to write (default: OUTPUT with .run)."),
    collection: Optional[str] = typer.Option(None, "--collection", help="BEIR folder (or 'cranfield') holding the "
                                             "texts of a TREC run's documents and queries."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep the best K of each list."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's)."),
    long_docs: str = LongDocsOpt, window: Optional[int] = WindowOpt, stride: Optional[int] = StrideOpt,
    batch_size: int = typer.Option(32, "--batch-size", help="Model inputs per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, mps (default: the best there is)."),
    max_label: float = MaxLabelOpt,
    no_cascade: bool = NoCascadeOpt,
    max_chars: int = typer.Option(MAX_CHARS, "--max-chars", help="Characters a query or document may hold; a longer "
                                  "one is refused before scoring."),
    ray: bool = RayOpt,
    ray_workers: Optional[int] = RayWorkersOpt,
    ray_address: Optional[str] = RayAddressOpt,
):
    """Rerank candidate lists; write reranked JSONL and a TREC run (through the model's saved cascade, if any)."""
    check_top_k(top_k)
    rerank_outputs(model, input, output, trec=trec, collection=collection)  # refused before the model loads
    options = dict(cascade=not no_cascade, max_length=max_length, long_docs=long_docs, window=window, stride=stride,
                   batch_size=batch_size, device=device)
    if ray:
        scorer = RayScorer(model, workers=2 if ray_workers is None else ray_workers, address=ray_address, **options)
    else:
        if ray_workers is not None or ray_address is not None:
            raise FinerankError("--ray-workers and --ray-address need --ray", hint="add --ray, or leave them out")
        scorer = load_scorer(model, **options)
    check_scorer(scorer.local if ray else scorer, model)  # every part scores a probe pair with a finite number, or exit 2
    s = rerank_file(model, input, output, trec=trec, collection=collection, top_k=top_k, max_label=max_label,
                    max_chars=max_chars, reranker=scorer)
    if ray:
        out.print(f"scored on Ray by {scorer.workers} actors", highlight=False)
    elif isinstance(scorer, Cascade):
        out.print(f"cascade ({escape(scorer.spec.label())}): the cross-encoder scored {scorer.stats['ce_pairs']} "
                  f"pairs, skipped {scorer.stats['skipped']}", highlight=False)
    out.print(f"reranked {s.pairs} pairs of {s.queries} queries in {s.seconds:.1f}s "
              f"({s.pairs / max(s.seconds, 1e-9):.1f} pairs/s); wrote {s.rows} rows"
              + (f" (the best {top_k} of each list)" if top_k is not None else "")
              + f": {s.output}, {s.trec}", highlight=False)
    if s.after is not None:
        out.print(f"nDCG@10 of the labeled input: {s.before['nDCG@10']:.4f} as given -> {s.after['nDCG@10']:.4f} "
                  "reranked", highlight=False)


def export(
    model: str = typer.Option(..., "--model", help="Model to export: run folder, model folder, hub id."),
    out_dir: str = typer.Option(..., "--out", help="Folder to write: new, empty, or an earlier export (only the "
                                "files its export.json lists are replaced)."),
    format: str = typer.Option("onnx", "--format", help="onnx (openvino is not available with transformers 5)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: dynamic int8 quantization."),
    validation: Optional[str] = typer.Option("cranfield", "--validation", help="Labeled pairs (or a collection) "
                                             "to check the export on."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the check against the original."),
    max_queries: int = typer.Option(30, "--max-queries", help="Validation queries used by the check."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
):
    """Export to ONNX (optionally int8) and check nDCG@10 and speed against the original."""
    rep = run_export(model, out_dir, format=format, quantize=quantize,
                     validation=None if no_check else validation, max_queries=max_queries,
                     log=log_dim)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
        return
    out.print(f"exported {rep.out}/{rep.file} ({rep.size_mb:.1f} MB)", highlight=False)
    c = rep.check
    if c:
        t = Table(title=f"check on {c['queries']} queries, {c['pairs']} pairs ({c['validation']})")
        for col in ("model", "nDCG@10", "pairs/s"):
            t.add_column(col, justify="right" if col != "model" else "left")
        for name in ("original", "exported"):
            t.add_row(name, f"{c[name]['nDCG@10']:.4f}", f"{c[name]['pairs_per_second']:.1f}")
        out.print(t)
        ratio = "n/a" if c["kept"]["nDCG@10"] is None else f"{c['kept']['nDCG@10']:.1%}"
        out.print(f"speed ratio {c['speed_ratio']:.2f}x, nDCG@10 kept {ratio}, largest score difference "
                  f"{c['max_abs_score_diff']:.4f}", highlight=False)
