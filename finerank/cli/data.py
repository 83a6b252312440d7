"""``finerank data``: load, inspect, split, check for leakage, retrieve candidates and mine training pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.inspect import inspect
from ..data.split import check_leakage, split_dataset, split_outputs, write_split
from ..io.outputs import check_outputs, write_jsonl, write_pairs, written_together
from ..retrieval.hybrid import HYBRID_WEIGHT, RETRIEVERS, parse_retriever, retriever as make_retriever
from ..retrieval.mine import (BALANCED, CROSS_QUERY_NEGATIVES, mine, mined_counts, parse_ranks, query_ids_of,
                              to_listwise, write_candidates)
from .common import (CorpusOpt, FormatOpt, MaxLabelOpt, QueriesOpt, SkipOpt, SplitOpt, err, input_path, load_input,
                     open_collection, out)

data_app = typer.Typer(help="Load, inspect, split and mine labeled (query, document, label) data.",
                       no_args_is_help=True)
QueriesFromOpt = typer.Option(None, "--queries", help="Only the queries of this pairs file (e.g. DIR/val.jsonl from data split).")


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
    ds = load_input(path, format, split, skip_invalid, max_label, corpus, queries, one_grade=False)  # noise reported
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
    check_outputs(split_outputs(out_dir), [input_path(path), corpus, queries], folders=[out_dir])  # before work
    ds = load_input(path, format, split, skip_invalid, max_label, corpus, queries)
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
    rep = check_leakage(load_input(a, format, max_label=max_label), load_input(b, format, max_label=max_label),
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


def _query_ids(coll, queries_from, max_label=4.0):
    if not queries_from:
        return None
    ids = query_ids_of(queries_from, coll, max_label)
    err.print(f"restricted to the {len(ids)} queries of {escape(str(queries_from))}", highlight=False)
    return ids


@data_app.command("candidates")
def data_candidates(
    collection: str = typer.Argument(..., help="BEIR folder, TREC qrels (with --corpus/--queries-file), or 'cranfield'."),
    out_file: Path = typer.Option(..., "--out", help="Pairs JSONL (query, document, label, BM25 score), best first per query."),
    run_file: Optional[Path] = typer.Option(None, "--run", help="TREC run file (default: the --out path with the suffix .trec)."),
    top_k: int = typer.Option(100, "--top-k", help="Candidates per query."),
    retriever: str = typer.Option("bm25", "--retriever", help=f"{RETRIEVERS}: BM25, exact cosine of an embedding "
                                  "model (a tuned one: its run folder) over the whole corpus, or both z-scored "
                                  f"({HYBRID_WEIGHT:g} x BM25 + {1 - HYBRID_WEIGHT:g} x cosine)."),
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
    inputs = [input_path(collection), queries_from, corpus, queries]
    check_outputs([out_file, run_file or Path(out_file).with_suffix(".trec")], inputs)  # before any work
    coll = open_collection(collection, split, corpus, queries, max_label)
    res = write_candidates(coll, out_file, run_file=run_file, top_k=top_k,
                           query_ids=_query_ids(coll, queries_from, max_label), inputs=inputs, show_progress=True,
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
    check_outputs([out_file, listwise], [input_path(collection), queries_from, corpus, queries])  # before work
    coll = open_collection(collection, split, corpus, queries, max_label)
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
