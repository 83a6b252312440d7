"""The ``finerank`` command line: a thin shell over the public functions. Parse, call one function, print.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so ``--help`` and the
data commands start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .training.bi_encoder import train_bi_encoder
from .demo import demo as run_demo, DemoConfig
from .scorers.cascade import Cascade, load_scorer, tune_cascade
from .doctor import doctor as run_doctor
from .core.errors import FinerankError
from .evaluation.dependence import CHECK_LISTS, ignores_query
from .evaluation.evaluate import dependence_cells, evaluate as run_evaluate
from .serving.export import export as run_export
from .scorers.fused import RETRIEVERS, parse_retriever, retriever as make_retriever
from .data.inspect import inspect
from .io.formats import check_outputs, load, load_collection, resolve_path, write_jsonl, write_pairs, written_together
from .scorers.cross_encoder import MAX_CHARS, check_top_k, rerank_file, rerank_outputs
from .retrieval.bm25 import BALANCED, CROSS_QUERY_NEGATIVES, mine, mined_counts, parse_ranks, query_ids_of, to_listwise, write_candidates
from .serving.serve import serve as run_serve
from .data.split import check_leakage, split_dataset, split_outputs, write_split
from .training.cross_encoder import finish_distributed, hybrid_warning, summarize, train as run_train, TrainConfig

app = typer.Typer(help="Fine-tune cross-encoder rerankers on your own data, prove it on held-out queries, ship it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Load, inspect, split and mine labeled (query, document, label) data.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
cascade_app = typer.Typer(help="Cascade reranking: a cheap stage narrows each list, the cross-encoder scores its head.",
                          no_args_is_help=True)
app.add_typer(cascade_app, name="cascade")
NoCascadeOpt = typer.Option(False, "--no-cascade", help="Run the cross-encoder on every candidate, even if the model "
                            "is saved with a cascade.")

out = Console(width=None if sys.stdout.isatty() else 160)  # tables stay readable in logs and pipes
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

FormatOpt = typer.Option(None, "--format", help="Force a format: jsonl, csv, tsv, beir, trec.")
SplitOpt = typer.Option(None, "--split", help="BEIR qrels split (qrels/<split>.tsv), e.g. train or test.")
SkipOpt = typer.Option(False, "--skip-invalid", help="Skip bad rows (and report them) instead of stopping.")
MaxLabelOpt = typer.Option(4.0, "--max-label", help="Highest label on the scale (labels are 0..max).")
CorpusOpt = typer.Option(None, "--corpus", help="corpus.jsonl for TREC qrels (default: beside them).")
QueriesOpt = typer.Option(None, "--queries-file", help="queries.jsonl for TREC qrels (default: beside them).")


def _input_path(path):
    """The file or folder an input argument names (an embedded collection's folder for its name), or None."""
    try:
        return resolve_path(path)
    except FinerankError:
        return None


def _load(path, format=None, split=None, skip_invalid=False, max_label=4.0, corpus=None, queries=None):
    ds = load(path, format, split=split, corpus=corpus, queries=queries, max_label=max_label,
              skip_invalid=skip_invalid)
    if ds.skipped:
        why = "; ".join(f"{r} ({n})" for r, n in ds.skipped_reasons().items())
        first = ds.skipped[0]
        err.print(f"[yellow]skipped {len(ds.skipped)} invalid rows[/]: {escape(why)} (first: {escape(first.path)}:"
                  f"{first.line})", highlight=False)
    return ds


# ------------------------------------------------------------------------------------------------ data
@data_app.command("inspect")
def data_inspect(
    path: str = typer.Argument(..., help="Pairs file (JSONL/CSV/TSV), BEIR folder, TREC qrels, or 'cranfield'."),
    model: str = typer.Option("minilm-l6", "--model", help="Tokenizer to measure lengths with."),
    max_length: int = typer.Option(512, "--max-length", help="Token limit to measure truncation against."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    format: Optional[str] = FormatOpt, split: Optional[str] = SplitOpt, skip_invalid: bool = SkipOpt,
    max_label: float = MaxLabelOpt, corpus: Optional[str] = CorpusOpt, queries: Optional[str] = QueriesOpt,
):
    """Counts, label balance, positives per query, duplicates, label noise and token lengths."""
    ds = _load(path, format, split, skip_invalid, max_label, corpus, queries)
    report = inspect(ds, model=model, max_length=max_length)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    t = Table(title=escape(f"{report.source} ({report.format})"), show_header=False)
    t.add_row("pairs / queries / documents", f"{report.pairs} / {report.queries} / {report.documents}")
    t.add_row("labels", f"{report.label_scale}: " + ", ".join(f"{k}: {v}" for k, v in report.label_histogram.items()))
    ppq = report.positives_per_query
    t.add_row("positives per query", f"min {ppq['min']}, median {ppq['median']:g}, max {ppq['max']}")
    t.add_row("queries with no positive", str(report.queries_without_positive))
    t.add_row("duplicate pairs", str(report.duplicate_pairs))
    t.add_row("conflicting labels", str(report.conflicting_pairs))
    r = report.corpus_reuse
    t.add_row("relevant documents never negative", f"{r['never_negative']} of {r['positive_documents']} "
              f"({r['never_negative_share']:.0%}); {r['in_other_queries_rows']} appear in other queries' rows")
    if report.tokens:
        tk = report.tokens
        t.add_row("tokens (query+doc)", f"p50 {tk['p50']}, p95 {tk['p95']}, max {tk['max']}; "
                  f"{tk['truncated_share']:.1%} over max_length={tk['max_length']}")
    if report.skipped:
        t.add_row("skipped rows", escape(f"{report.skipped}: " + "; ".join(f"{r} ({n})" for r, n in
                                                                      report.skipped_reasons.items())))
    out.print(t)
    hist = report.label_histogram
    top = max(hist.values(), default=1)
    for k, v in hist.items():
        out.print(f"  label {k:>4} {'█' * max(1, round(30 * v / top))} {v}")
    for ex in report.conflict_examples:
        out.print(f"  [yellow]conflict[/] query {escape(ex['query_id'])} doc {escape(ex['doc_id'])}: labels "
                  f"{ex['labels']}", highlight=False)
    for w in report.warnings:
        out.print(f"[yellow]warning[/] {escape(w.message)}\n  remedy: {escape(w.remedy)}")


@data_app.command("split")
def data_split(
    path: str = typer.Argument(..., help="Pairs file (JSONL/CSV/TSV), BEIR folder, TREC qrels, or 'cranfield'."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for train.jsonl, val.jsonl, [test.jsonl], split-report.json."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of queries for validation."),
    test_fraction: float = typer.Option(0.0, "--test-fraction", help="Share of queries for a test side (0 = none)."),
    seed: int = typer.Option(42, "--seed", help="Random seed; the same seed gives the same split."),
    near_duplicate: float = typer.Option(0.9, "--near-duplicate", help="Token Jaccard at which two queries are one group (>1 = exact only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    format: Optional[str] = FormatOpt, split: Optional[str] = SplitOpt, skip_invalid: bool = SkipOpt,
    max_label: float = MaxLabelOpt, corpus: Optional[str] = CorpusOpt, queries: Optional[str] = QueriesOpt,
):
    """Split by query (never by row): duplicate and near-duplicate queries stay on one side; stratified by labels.

    A collection with an official split (scifact's qrels/train.tsv, qrels/test.tsv) can be used as it is:
    split only its train side for validation, e.g. --split train.
    """
    check_outputs(split_outputs(out_dir), [_input_path(path), corpus, queries], folders=[out_dir])  # before work
    ds = _load(path, format, split, skip_invalid, max_label, corpus, queries)
    result = split_dataset(ds, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           near_duplicate=near_duplicate)
    report = write_split(result, out_dir, inputs=[corpus, queries])
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        t = Table(title=escape(f"{report['source']}: {report['queries']} queries in {report['groups']} groups, "
                               f"seed {seed}"))
        for col in ("side", "queries", "pairs", "labels (share)", "positives/query (mean, median)"):
            t.add_column(col)
        for side, st in report["sides"].items():
            ppq = st["positives_per_query"]
            t.add_row(side, str(st["queries"]), str(st["pairs"]),
                      ", ".join(f"{k}: {v:.1%}" for k, v in st["label_share"].items()),
                      f"{ppq.get('mean', 0):.2f}, {ppq.get('median', 0):g}")
        out.print(t)
        groups = report["duplicate_groups"]
        out.print(f"merged {len(groups)} groups of duplicate queries (each kept on one side)")
        for g in groups[:10]:
            link = "; ".join(f"{lk['a']}~{lk['b']} ({lk['reason']}, {lk['jaccard']:g})" for lk in g["links"])
            out.print(f"  {escape(', '.join(g['query_ids']))}: {escape(link)}  e.g. {escape(g['queries'][0][:70])!r}",
                      highlight=False)
        if len(groups) > 10:
            out.print(f"  ... and {len(groups) - 10} more in split-report.json")
        files = ", ".join(str(Path(f).name) for f in report["files"].values())
        verdict = "[green]no leakage[/]" if report["leakage"]["ok"] else "[bold red]LEAKAGE[/]"
        out.print(f"wrote {files} and split-report.json to {escape(str(out_dir))}; check: {verdict}")
    if not report["leakage"]["ok"]:
        raise typer.Exit(1)


@data_app.command("check-leakage")
def data_check_leakage(
    a: str = typer.Argument(..., help="First pairs file (e.g. DIR/train.jsonl) or collection."),
    b: str = typer.Argument(..., help="Second pairs file (e.g. DIR/val.jsonl) or collection."),
    near_duplicate: float = typer.Option(0.9, "--near-duplicate", help="Token Jaccard at which two queries count as one."),
    examples: int = typer.Option(10, "--examples", help="How many shared queries and pairs to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    format: Optional[str] = FormatOpt, max_label: float = MaxLabelOpt,
):
    """Queries (exact or near-duplicate) and (query, document) pairs that A and B share. Exit 1 when any are."""
    rep = check_leakage(_load(a, format, max_label=max_label), _load(b, format, max_label=max_label),
                        near_duplicate=near_duplicate, max_examples=max(examples, 0))
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
    else:
        style = "green" if rep.ok else "bold red"
        out.print(f"[{style}]{escape(rep.summary())}[/]", highlight=False, soft_wrap=True)
        for s in rep.shared_queries[:examples]:
            out.print(f"  query {escape(s['a_id'])} in A and {escape(s['b_id'])} in B ({s['kind']}, "
                      f"jaccard {s['jaccard']:g}): {escape(s['b_query'][:100])!r}", highlight=False)
        if len(rep.shared_queries) > examples:
            out.print(f"  ... and {len(rep.shared_queries) - examples} more shared queries (--json lists all)")
        for p in rep.pair_examples[:examples]:
            out.print(f"  pair: query {escape(p['query_id'])}, document {escape(p['doc_id'])}", highlight=False)
        if rep.shared_ids_other_text:
            out.print(f"[yellow]note[/] {len(rep.shared_ids_other_text)} query ids occur in both with unrelated "
                      f"texts (not counted as leakage): {escape(', '.join(rep.shared_ids_other_text[:10]))}")
    if not rep.ok:
        raise typer.Exit(1)


def _collection(path, split, corpus, queries, max_label=4.0):
    return load_collection(path, split=split, corpus_path=corpus, queries_path=queries, max_label=max_label)


def _query_ids(coll, queries_from, max_label=4.0):
    if not queries_from:
        return None
    ids = query_ids_of(queries_from, coll, max_label)
    err.print(f"restricted to the {len(ids)} queries of {escape(str(queries_from))}", highlight=False)
    return ids


QueriesFromOpt = typer.Option(None, "--queries", help="Only the queries of this pairs file (e.g. DIR/val.jsonl from data split).")


@data_app.command("candidates")
def data_candidates(
    collection: str = typer.Argument(..., help="BEIR folder, TREC qrels (with --corpus/--queries-file), or 'cranfield'."),
    out_file: Path = typer.Option(..., "--out", help="Pairs JSONL (query, document, label, BM25 score), best first per query."),
    run_file: Optional[Path] = typer.Option(None, "--run", help="TREC run file (default: the --out path with the suffix .trec)."),
    top_k: int = typer.Option(100, "--top-k", help="Candidates per query."),
    retriever: str = typer.Option("bm25", "--retriever", help=f"{RETRIEVERS}: BM25, exact cosine of an embedding "
                                  "model (a tuned one: its run folder) over the whole corpus, or both z-scored "
                                  "(0.3 x BM25 + 0.7 x cosine)."),
    queries_from: Optional[str] = QueriesFromOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    split: Optional[str] = SplitOpt, corpus: Optional[str] = CorpusOpt, queries: Optional[str] = QueriesOpt,
    max_label: float = MaxLabelOpt,
):
    """BM25 (bm25s, English stemming and stop words) top-k for each query: writes the pairs JSONL (label = judged
    grade, 0 when unjudged; score = BM25) and a TREC run, and prints BM25's nDCG@10, RR@10 and R@100.

    --retriever dense:MODEL or hybrid:MODEL takes the lists and their order from that retriever instead (each
    pair's score stays BM25's). Dense search is exact, all embeddings in memory (N x 384 float32 for minilm-l6:
    about 460 MB for 300,000 documents)."""
    kind, _ = parse_retriever(retriever)
    inputs = [_input_path(collection), queries_from, corpus, queries]
    check_outputs([out_file, run_file or Path(out_file).with_suffix(".trec")], inputs)  # before any work
    coll = _collection(collection, split, corpus, queries, max_label)
    res = write_candidates(coll, out_file, run_file=run_file, top_k=top_k,
                           query_ids=_query_ids(coll, queries_from, max_label),
                           inputs=inputs,
                           show_progress=True,
                           retriever=None if kind == "bm25" else make_retriever(retriever, top_k=top_k,
                                                                                 show_progress=True),
                           tag=kind)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    who = "BM25" if kind == "bm25" else retriever
    out.print(f"{escape(who)} on {escape(coll.name)}: {res['queries']} queries, {res['pairs']} candidates "
              f"(top {top_k}); "
              + ", ".join(f"{m} {v:.4f}" for m, v in res["metrics"].items()), highlight=False)
    out.print(f"wrote {escape(res['pairs_file'])} and {escape(res['run_file'])}", highlight=False)


@data_app.command("mine")
def data_mine(
    collection: str = typer.Argument(..., help="BEIR folder, TREC qrels (with --corpus/--queries-file), or 'cranfield'."),
    out_file: Path = typer.Option(..., "--out", help="Training pairs JSONL: judged documents plus mined negatives (label 0)."),
    negatives: int = typer.Option(4, "--negatives", help="Negatives per query from the retriever's ranks."),
    cross_query: int = typer.Option(CROSS_QUERY_NEGATIVES, "--cross-query-negatives", help="More negatives per "
                                    "query drawn from other queries' positives, so that a model must read the query."),
    balanced: bool = typer.Option(BALANCED, "--balanced/--no-balanced", help="Every positive also a negative of "
                                  "another query, so that no document is mostly a positive (see benchmarks/README.md)."),
    ranks: str = typer.Option("3-50", "--ranks", help="Retriever ranks LO-HI (1-based, inclusive) to sample negatives from."),
    model: Optional[str] = typer.Option(None, "--model", help="Mine with this embedding model (e.g. minilm-l6) instead of BM25."),
    seed: int = typer.Option(42, "--seed", help="Random seed for sampling negatives."),
    listwise: Optional[Path] = typer.Option(None, "--listwise", help="Also write one JSON record per query (doc_ids, documents, labels)."),
    queries_from: Optional[str] = QueriesFromOpt,
    split: Optional[str] = SplitOpt, corpus: Optional[str] = CorpusOpt, queries: Optional[str] = QueriesOpt,
    max_label: float = MaxLabelOpt,
):
    """Training pairs for each query: its judged documents with their labels, plus hard negatives sampled from
    the retriever's ranks, never a document judged relevant for the query."""
    lo_hi = parse_ranks(ranks)
    check_outputs([out_file, listwise], [_input_path(collection), queries_from, corpus, queries])  # before work
    coll = _collection(collection, split, corpus, queries, max_label)
    pairs = mine(coll, query_ids=_query_ids(coll, queries_from, max_label), negatives=negatives, ranks=lo_hi,
                 model=model, seed=seed, show_progress=True, cross_query_negatives=cross_query, balanced=balanced)
    with written_together():  # both files or neither
        write_pairs(out_file, pairs)
        if listwise:
            write_jsonl(listwise, to_listwise(pairs))
    m = mined_counts(pairs, coll, negatives)
    out.print(f"{m['queries']} queries: {m['judged']} judged pairs + {m['mined']} mined negatives "
              f"(ranks {lo_hi[0]}-{lo_hi[1]}, {'BM25' if model is None else escape(model)}) + {m['cross_query']} "
              f"other queries' positives -> {escape(str(out_file))}", highlight=False)
    if m["short"]:
        err.print(f"[yellow]note[/] {m['short']} queries got fewer than {negatives} negatives (too few unjudged "
                  f"documents in ranks {lo_hi[0]}-{lo_hi[1]})")
    if listwise:
        out.print(f"listwise records -> {escape(str(listwise))}", highlight=False)


# ----------------------------------------------------------------------------------------------- train
@app.command()
def train(
    model: Optional[str] = typer.Option(None, "--model", help="Hub id, local folder, finerank run, or minilm-l6."),
    arch: Optional[str] = typer.Option(None, "--arch", help="cross-encoder (the reranker) or bi-encoder (the first "
                                       "stage, an embedding model); default cross-encoder."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Training pairs (from data split + data mine)."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation pairs; rows of a query are its candidates."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Run folder: checkpoint-N/, best/, finerank-run.json."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/TOML file with any of these options."),
    val_corpus: Optional[str] = typer.Option(None, "--val-corpus", help="Rerank BM25 top-k of this collection for each validation query."),
    val_top_k: Optional[int] = typer.Option(None, "--val-top-k", help="Candidates per validation query with --val-corpus [30]."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs [2]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate [3e-5]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Per-device batch [16]."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit of query+document [512]."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="Evaluate and checkpoint every N steps [100]."),
    loss: Optional[str] = typer.Option(None, "--loss", help="auto (graded -> lambda, binary -> bce), bce, lambda."),
    pos_weight: Optional[float] = typer.Option(None, "--pos-weight", help="BCE weight of positives [negatives/positives]."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience in evaluations [3]; 0 = off."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N steps (overrides epochs)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [42]."),
    max_label: Optional[float] = typer.Option(None, "--max-label", help="Highest label on the scale (labels are "
                                              "0..max) [4]; 1 = binary, any other label is an error."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in an --out that holds an earlier run "
                                   "(removes its checkpoints, best/ and record)."),
    require_improvement: bool = typer.Option(False, "--require-improvement", help="Exit 1 unless best beats base."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="auto: save a fusion with BM25 + bi-encoder scores "
                                         "when it wins on validation [auto]; off."),
    bi_encoder: Optional[str] = typer.Option(None, "--bi-encoder", help="The bi-encoder fusion uses; a tuned one: "
                                             "its run folder (default minilm-l6)."),
    report_to: Optional[str] = typer.Option(None, "--report-to", help="Experiment tracking: none (the default), "
                                            "tensorboard (events in OUT/runs/), mlflow or wandb; each needs its extra."),
    balance: Optional[bool] = typer.Option(None, "--balance/--no-balance", help="Add negatives so that each positive "
                                           "document is as often another query's negative [on]."),
    query_check: Optional[int] = typer.Option(None, "--query-check", help="Validation lists the kept model also "
                                              f"scores under another query's text [{CHECK_LISTS}]; 0 = off."),
):
    """Fine-tune a cross-encoder (CrossEncoderTrainer), or with --arch bi-encoder the embedding model of the first
    stage (SentenceTransformerTrainer): evaluation during training, best checkpoint kept."""
    cfg = TrainConfig.resolve(
        config, model=model, arch=arch, bi_encoder=bi_encoder, train=train_file, val=val, out=out_dir, val_corpus=val_corpus, val_top_k=val_top_k,
        epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, eval_steps=eval_steps, loss=loss,
        pos_weight=pos_weight, early_stopping_patience=patience, max_steps=max_steps, seed=seed, fusion=fusion,
        report_to=report_to,
        max_label=max_label,
        query_check=query_check, balance=balance,
        resume=resume or None, require_improvement=require_improvement or None, overwrite=overwrite or None)
    try:
        result = (train_bi_encoder if cfg.arch == "bi-encoder" else run_train)(
            cfg, on_warning=lambda m: err.print(f"[yellow]warning[/] {escape(m)}"))
    finally:
        finish_distributed()
    if not result.main_process:  # under torchrun / accelerate launch, rank 0 reports
        return
    if result.finished_before is not None:
        out.print(f"the run in {escape(result.out_dir)} had finished (step {result.finished_before}); nothing to "
                  f"resume. best model: {escape(result.best_dir)}; run record: {escape(result.record)}",
                  highlight=False)
        return
    s = summarize(result)
    if result.balancing_negatives:
        out.print(f"added {result.balancing_negatives} balancing negatives (positive documents as other queries' "
                  "negatives; --no-balance turns this off)")
    t = Table(title=f"validation: base vs best ({result.loss} loss, {result.train_pairs} pairs, "
                    f"{result.seconds:.0f}s, {result.pairs_per_second:.1f} pairs/s)")
    for col in ("metric", "base", "best", "delta", "relative"):
        t.add_column(col, justify="right")
    for r in s["rows"]:
        rel = "n/a" if r["relative"] is None else f"{r['relative']:+.1%}"
        t.add_row(r["metric"], f"{r['base']:.4f}", f"{r['best']:.4f}", f"{r['delta']:+.4f}", rel)
    out.print(t)
    fz = result.fusion or {}
    if "systems" in fz:
        v = {name: m["nDCG@10"] for name, m in fz["systems"].items()}
        w = ", ".join(f"{k} {x:.1f}" for k, x in fz["weights"]["fusion"].items())
        out.print(f"fusion on validation (nDCG@10): cross-encoder {v['cross-encoder']:.4f}, fused ({w}) "
                  f"{v['fusion']:.4f}, training-free hybrid {v['hybrid']:.4f} -> " +
                  ("fusion saved with the model" if result.fusion_saved else "not used"))
    for what, key in (("dense retrieval over --val-corpus", "retrieval"), ("hybrid with BM25 on validation", "hybrid")):
        if (got := getattr(result, key, None)) and got.get("base") and got.get("best"):
            out.print(f"{what}: base " + ", ".join(f"{m} {v:.4f}" for m, v in got["base"].items() if m != "weights")
                      + " -> tuned " + ", ".join(f"{m} {v:.4f}" for m, v in got["best"].items() if m != "weights"))
    if (dep := result.query_dependence) is not None:
        corr = "n/a" if dep["rank_correlation"] is None else f"{dep['rank_correlation']:.2f}"
        out.print(f"query dependence on validation ({dep['lists']} lists, each also under another query's text): "
                  f"nDCG@10 {dep['nDCG@10']:.4f}, under a wrong query {dep['nDCG@10_wrong_query']:.4f}, "
                  f"rank correlation {corr}")
        if ignores_query("the kept cross-encoder", dep) is not None:
            err.print("[bold red]The kept model barely reads the query[/] [red](it scores documents, not pairs: see "
                      "the warning above)[/]")
    if (msg := hybrid_warning(result)) is not None:
        err.print(f"[bold red]Not better than the hybrid:[/] [red]{msg}[/]")
    out.print(f"best model: {result.best_dir}  (checkpoint {result.best_checkpoint}); run record: {result.record}")
    if s["rows"] and not result.improved:
        err.print("[bold red]The fine-tuned model is NOT better than the base model on validation.[/] Likely causes:")
        for c in s["causes"]:
            err.print(f"[red]  - {c}[/]")
        if cfg.require_improvement:
            raise typer.Exit(1)


# -------------------------------------------------------------------------------------------- evaluate
@app.command()
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
                          tuned_bi_encoder=bi_encoder_tuned, log=lambda m: err.print(f"[dim]{escape(m)}[/]"))
    if as_json:
        d = report.to_dict()
        d.pop("per_query")
        print(json.dumps(d, indent=2))
        return
    print_report(report)


def print_report(report) -> None:
    primary = report.metrics[0]
    t = Table(title=f"{report.queries} queries, {report.pairs} candidate pairs: {report.dataset}")
    t.add_column("system")
    for m in report.metrics:
        t.add_column(m, justify="right")
    for col in (f"Δ {primary}", "rel.", "p (t-test)", "p (rand.)", "95% CI", "W/T/L", "wrong query", "rank corr."):
        t.add_column(col, justify="right")
    comp = {c.system: c for c in report.comparisons if c.metric == primary}
    for s in report.systems:
        vals = [f"{s.metrics[m]:.4f}" for m in report.metrics]
        dep = dependence_cells(s, primary)
        c = comp.get(s.name)
        if c is None:
            t.add_row(f"{s.name} [dim](baseline)[/]", *vals, "", "", "", "", "", "", *dep)
            continue
        color = "green" if c.delta > 0 else "red"
        rel = "n/a" if c.relative is None else f"{c.relative:+.1%}"
        pt = "n/a" if c.p_ttest is None else f"{c.p_ttest:.3g}"
        t.add_row(s.name, *vals, f"[{color}]{c.delta:+.4f}[/]", f"[{color}]{rel}[/]", pt, f"{c.p_randomization:.3g}",
                  f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]", f"{c.wins}/{c.ties}/{c.losses}", *dep)
    out.print(t)
    for s in report.systems:
        if s.query_dependence and (msg := ignores_query(s.name, s.query_dependence)) is not None:
            style = "bold red" if not s.baseline else "yellow"
            err.print(f"[{style}]{escape(msg)}[/]", highlight=False)
    models = {s.name for s in report.systems if not s.baseline}
    worse = [c for c in report.comparisons if c.metric == primary and c.delta < 0 and c.system in models]
    for c in worse:
        err.print(f"[bold red]{c.system} is WORSE than {c.baseline} on {primary} ({c.delta:+.4f}); do not ship it "
                  f"as an improvement.[/]")
    if report.out_dir:
        out.print(f"report: {Path(report.out_dir) / 'report.html'} (report.md, metrics.json, runs/, plots)")


# ---------------------------------------------------------------------------------- rerank, export, serve
LongDocsOpt = typer.Option("max", "--long-docs", help="Documents over max_length: max, first or mean of "
                           "sliding windows, or truncate.")
WindowOpt = typer.Option(None, "--window", help="Document tokens a window (default: all that fit).")
StrideOpt = typer.Option(None, "--stride", help="Tokens between window starts (default: half a window).")


@app.command()
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
):
    """Rerank candidate lists; write reranked JSONL and a TREC run (through the model's saved cascade, if any)."""
    check_top_k(top_k)
    rerank_outputs(model, input, output, trec=trec, collection=collection)  # refused before the model loads
    scorer = load_scorer(model, cascade=not no_cascade, max_length=max_length, long_docs=long_docs, window=window,
                         stride=stride, batch_size=batch_size, device=device)
    s = rerank_file(model, input, output, trec=trec, collection=collection, top_k=top_k, max_label=max_label,
                    max_chars=max_chars, reranker=scorer)
    if isinstance(scorer, Cascade):
        out.print(f"cascade ({escape(scorer.spec.label())}): the cross-encoder scored {scorer.stats['ce_pairs']} "
                  f"pairs, skipped {scorer.stats['skipped']}", highlight=False)
    out.print(f"reranked {s.pairs} pairs of {s.queries} queries in {s.seconds:.1f}s "
              f"({s.pairs / max(s.seconds, 1e-9):.1f} pairs/s); wrote {s.rows} rows"
              + (f" (the best {top_k} of each list)" if top_k is not None else "")
              + f": {s.output}, {s.trec}", highlight=False)
    if s.after is not None:
        out.print(f"nDCG@10 of the labeled input: {s.before['nDCG@10']:.4f} as given -> {s.after['nDCG@10']:.4f} "
                  "reranked", highlight=False)


@app.command()
def export(
    model: str = typer.Option(..., "--model", help="Model to export: run folder, model folder, hub id."),
    out_dir: str = typer.Option(..., "--out", help="Folder to write (replaced if it is an earlier export)."),
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
                     log=lambda m: err.print(f"[dim]{escape(m)}[/]"))
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


@app.command()
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
):
    """Serve POST /rerank, GET /health and GET /metrics over HTTP (FastAPI + uvicorn)."""
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning[/] serving on {host} without --api-key: anyone who can reach it can use it")
    run_serve(model, host=host, port=port, api_key=api_key, max_documents=max_documents, max_chars=max_chars,
              max_length=max_length, long_docs=long_docs, batch_size=batch_size, device=device,
              cascade=not no_cascade, max_pairs=max_pairs, docs=not no_docs)


# ------------------------------------------------------------------------------------------------ cascade
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
    hybrid_weight: float = typer.Option(0.3, "--hybrid-weight", help="BM25's weight in the hybrid cheap stage."),
    latency_queries: int = typer.Option(20, "--latency-queries", help="Lists timed per setting (a seeded sample)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Token limit (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Model inputs per forward pass (as served)."),
    save: bool = typer.Option(False, "--save", help="Write the chosen cascade into the model's finerank.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as one JSON object."),
):
    """Choose a cascade's cut-offs on validation lists: quality and real latency of each; the cheapest within
    the tolerance (and budget) of the full rerank."""
    res = tune_cascade(model, dataset, n1=_ints(n1, "--n1", allow_all=True), n2=_ints(n2, "--n2"),
                       cheap=[c.strip() for c in cheap.split(",") if c.strip()], tolerance=tolerance,
                       latency_budget_ms=latency_budget_ms, latency_queries=latency_queries, judgments=judgments,
                       split=split, out=out_dir, save=save, max_length=max_length, batch_size=batch_size,
                       bi_encoder=bi_encoder, hybrid_weight=hybrid_weight,
                       log=lambda m: err.print(f"[dim]{escape(m)}[/]"))
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


# ------------------------------------------------------------------------------------------------ demo
@app.command()
def demo(
    out_dir: str = typer.Option("demo-out", "--out", help="Where the data, model and report go."),
    model: str = typer.Option("minilm-l6", "--model", help="Base of the cross-encoder to fine-tune."),
    bi_model: str = typer.Option("minilm-l6", "--bi-model", help="The bi-encoder: its baseline, the hybrids, the "
                                 "fusion, and the one tuned."),
    epochs: float = typer.Option(1.0, "--epochs", help="Training epochs."),
    max_train_queries: Optional[int] = typer.Option(None, "--max-train-queries", help="Fewer queries: a faster run."),
    loss: str = typer.Option("bce", "--loss", help="Training loss: bce, lambda or auto."),
    bi_encoder: bool = typer.Option(True, "--bi-encoder/--no-bi-encoder",
                                    help="Also tune the bi-encoder on the same pairs (about 5 min on 2 CPU cores)."),
):
    """The whole job on the embedded Cranfield: inspect, split, mine, train, evaluate (about 25 min on 2 CPU cores)."""
    res = run_demo(DemoConfig(out=out_dir, model=model, epochs=epochs, max_train_queries=max_train_queries, loss=loss,
                              bi_encoder=bi_encoder, bi_model=bi_model),
                   log=lambda m: out.print(escape(m), highlight=False))
    print_report(res.report)
    m = res.report.metrics[0]
    top = max(res.report.systems, key=lambda s: s.metrics[m])
    out.print(f"best on the held-out queries: [bold]{escape(top.name)}[/] ({m} {top.metrics[m]:.4f})")
    out.print(f"demo finished in {res.seconds / 60:.1f} min; model: {res.train.best_dir}"
              + (f"; tuned bi-encoder: {res.bi_train.best_dir}" if res.bi_train else ""))


# ---------------------------------------------------------------------------------------------- doctor
@app.command()
def doctor(
    model: Optional[str] = typer.Option(None, "--model", help="Also resolve and load this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
):
    """Print the Python, package versions, devices, Hugging Face cache and whether --model loads."""
    r = run_doctor(model)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    t = Table(title="finerank doctor", show_header=False)
    t.add_row("python", f"{r.python} ({r.executable})")
    t.add_row("virtualenv", r.virtualenv or "none")
    t.add_row("platform", r.platform)
    for name, v in r.versions.items():
        t.add_row(name, v or "[dim]not installed[/]")
    d = r.devices
    gpus = ", ".join(d.get("gpus") or []) or "none"
    t.add_row("devices", f"CPU threads {d.get('cpu_threads')} (torch uses {d.get('torch_threads')}); "
              f"CUDA {d.get('cuda')} ({d.get('cuda_version')}), GPUs: {gpus}; MPS {d.get('mps')}")
    dd = r.distributed
    have = ", ".join(f"{b} {'yes' if ok else 'no'}" for b, ok in (dd.get("backends") or {}).items()) or "none"
    t.add_row("distributed", f"world size {dd.get('world_size')}, rank {dd.get('rank')} (local {dd.get('local_rank')}), "
              f"launcher {dd.get('launcher') or 'none'}" + (f", master {dd['master']}" if dd.get("master") else "")
              + f"; backends: {have}; a run would use {dd.get('backend') or 'none'}")
    t.add_row("HF cache", r.hf_cache)
    t.add_row("HF offline", str(r.hf_offline))
    if r.model:
        m = r.model
        status = (f"[green]loads[/] on {m['device']}, max_length {m['max_length']}, activation {m['activation']}, "
                  f"test score {m['test_score']:.4f}") if m["loads"] else "[red]does not load[/]"
        t.add_row("model", f"{m['name']} -> {m.get('resolves_to', '?')}\n{status}")
    out.print(t)
    for w in r.warnings:
        out.print(f"[yellow]warning[/] {escape(w)}")
    if r.model and not r.model["loads"]:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------ entry
def _click_exceptions() -> tuple[tuple, tuple, tuple]:
    """(Exit, ClickException, Abort) classes of every click in play: typer >= 0.2x runs on its own vendored copy
    (``typer._click``), whose exceptions are not ``click``'s; older typer, and commands that raise ``click``
    errors, use ``click``'s."""
    import typer

    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(__import__(name, fromlist=["ClickException"]))
        except ImportError:
            pass
    exits = {typer.Exit, *(m.Exit for m in mods if hasattr(m, "Exit"))}
    aborts = {typer.Abort, *(m.Abort for m in mods if hasattr(m, "Abort"))}
    return tuple(exits), tuple(m.ClickException for m in mods), tuple(aborts)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; a FinerankError is printed without a traceback and exits 2, a usage error and an OSError too;
    any other exception is a bug, reported in one line (exit 1; ``FINERANK_TRACEBACK=1`` raises it)."""
    exits, click_errors, aborts = _click_exceptions()
    try:
        rv = app(args=argv, prog_name="finerank", standalone_mode=False)
    except exits as e:
        sys.exit(e.exit_code)
    except click_errors as e:
        e.show()
        sys.exit(e.exit_code)
    except aborts:
        err.print("aborted")
        sys.exit(130)
    except FinerankError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as e:  # the system's answer (a full disk, a permission): the user can act on it
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a bug: one line, not a traceback; FINERANK_TRACEBACK=1 shows it
        if os.environ.get("FINERANK_TRACEBACK"):
            raise
        err.print(f"[bold red]internal error:[/] {escape(type(e).__name__)}: {escape(str(e)[:300])}\n  this is a "
                  "bug in finerank, please report it; FINERANK_TRACEBACK=1 shows where it happened",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
