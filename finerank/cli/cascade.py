"""``finerank cascade``: choose a cascade's cut-offs on validation lists."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..core.errors import FinerankError
from ..retrieval.hybrid import HYBRID_WEIGHT
from ..training.fit import tune_cascade
from .common import SplitOpt, err, log_dim, out

cascade_app = typer.Typer(help="Cascade reranking: a cheap stage narrows each list, the cross-encoder scores its head.",
                          no_args_is_help=True)


def _ints(text: str, name: str, allow_all: bool = False) -> list:
    vals = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if allow_all and part.lower() in ("all", "none"):
            vals.append(None)
        elif part.isdigit() and int(part) > 0:
            vals.append(int(part))
        else:
            raise FinerankError(f"{name}: '{part}' is not a positive integer" + (" or 'all'" if allow_all else ""),
                                hint=f"e.g. {name} " + ("all,50,30" if allow_all else "5,10,20"))
    if not vals:
        raise FinerankError(f"{name}: no values given")
    return vals


@cascade_app.command("tune")
def cascade_tune(
    model: str = typer.Option(..., "--model", help="Model: run folder, model folder, export folder."),
    dataset: str = typer.Option(..., "--dataset", help="Validation candidate lists (pairs JSONL with labels and "
                                "BM25 scores, from data candidates); never the test queries."),
    judgments: Optional[str] = typer.Option(None, "--judgments", help="Collection with all judgments of the "
                                            "queries."),
    split: Optional[str] = SplitOpt,
    out_dir: str = typer.Option(..., "--out", help="Folder for cascade-tuning.json and cascade-tuning.png."),
    tolerance: float = typer.Option(0.01, "--tolerance", help="Accept settings within this share of the full "
                                    "rerank's nDCG@10 (0.01 = 1% relative)."),
    latency_budget_ms: Optional[float] = typer.Option(None, "--latency-budget-ms", help="Only settings whose p50 "
                                                      "latency per query is within this."),
    n1: str = typer.Option("all,50,30", "--n1", help="Cut-offs of the first stage before the cheap scorer."),
    n2: str = typer.Option("5,10,15,20,30,50", "--n2", help="Cut-offs of the cheap scorer before the "
                           "cross-encoder."),
    cheap: str = typer.Option("bm25,hybrid", "--cheap", help="Cheap scorers to try: bm25 (the first stage's order), "
                              "bi (bi-encoder), hybrid (BM25 + bi-encoder)."),
    bi_encoder: str = typer.Option("minilm-l6", "--bi-encoder", help="The cheap stage's embedding model; a tuned "
                                   "one: a train --arch bi-encoder run folder."),
    hybrid_weight: float = typer.Option(HYBRID_WEIGHT, "--hybrid-weight", help="BM25's weight in the hybrid cheap stage."),
    latency_queries: int = typer.Option(20, "--latency-queries", help="Lists timed per setting (a seeded sample)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Model inputs per forward pass (as served)."),
    choose: str = typer.Option("latency", "--choose", help="Among the settings within tolerance and budget: "
                               "latency (the lowest measured p50) or pairs (the fewest cross-encoder pairs: the same "
                               "choice on any machine)."),
    save: bool = typer.Option(False, "--save", help="Write the chosen cascade into the model's finerank.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as one JSON object."),
):
    """Choose a cascade's cut-offs on validation lists: quality and real latency of each; the cheapest within
    the tolerance (and budget) of the full rerank."""
    res = tune_cascade(model, dataset, n1=_ints(n1, "--n1", allow_all=True), n2=_ints(n2, "--n2"),
                       cheap=[c.strip() for c in cheap.split(",") if c.strip()], tolerance=tolerance,
                       latency_budget_ms=latency_budget_ms, latency_queries=latency_queries, judgments=judgments,
                       split=split, out=out_dir, save=save, max_length=max_length, batch_size=batch_size,
                       bi_encoder=bi_encoder, hybrid_weight=hybrid_weight, choose=choose, log=log_dim)
    if as_json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        t = Table(title=f"{res.queries} validation queries; latency on {res.latency_queries} (one list a call)")
        for col in ("setting", res.metric, "kept", "CE pairs", "p50 ms", "p95 ms", ""):
            t.add_column(col, justify="left" if col == "setting" else "right")
        for r in res.rows:
            kept = "" if r["retained"] is None else f"{r['retained']:.1%}"
            mark = "[bold green]chosen[/]" if r["chosen"] else ("" if r["within_tolerance"] else "[dim]below[/]")
            t.add_row(r["setting"], f"{r[res.metric]:.4f}", kept, f"{r['ce_pairs']:.1f}", f"{r['p50_ms']:.0f}",
                      f"{r['p95_ms']:.0f}", mark)
        out.print(t)
        out.print(f"table: {res.files.get('table')}, plot: {res.files.get('plot')}", highlight=False)
    err.print(escape(res.line) if res.chosen else f"[yellow]{escape(res.line)}[/]", highlight=False)
    if "spec" in res.files:
        err.print(f"saved with the model: {res.files['spec']}", highlight=False)
    if res.chosen is None:
        raise typer.Exit(1)

