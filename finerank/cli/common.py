"""What every command of the ``finerank`` command line shares: the two consoles, the options several commands take,
loading an input with its skipped rows reported, and the evaluation table (``evaluate`` and ``demo`` print it)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.errors import FinerankError
from ..evaluation.dependence import ignores_query
from ..io.collection import load, load_collection
from ..io.files import resolve_path
from ..report.markdown import dependence_cells

out = Console(width=None if sys.stdout.isatty() else 160)  # tables stay readable in logs and pipes
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

FormatOpt = typer.Option(None, "--format", help="Force a format: jsonl, csv, tsv, beir, trec.")
SplitOpt = typer.Option(None, "--split", help="BEIR qrels split (qrels/<split>.tsv), e.g. train or test.")
SkipOpt = typer.Option(False, "--skip-invalid", help="Skip bad rows (and report them) instead of stopping.")
MaxLabelOpt = typer.Option(4.0, "--max-label", help="Highest label on the scale (labels are 0..max).")
CorpusOpt = typer.Option(None, "--corpus", help="corpus.jsonl for TREC qrels (default: beside them).")
QueriesOpt = typer.Option(None, "--queries-file", help="queries.jsonl for TREC qrels (default: beside them).")
NoCascadeOpt = typer.Option(False, "--no-cascade", help="Run the cross-encoder on every candidate, even if the model "
                            "is saved with a cascade.")
LongDocsOpt = typer.Option("max", "--long-docs", help="Documents over max_length: max, first or mean of "
                           "sliding windows, or truncate.")

# options that train and distill share (one definition each)
ConfigOpt = typer.Option(None, "--config", help="YAML/TOML file with any of these options.")
ValCorpusOpt = typer.Option(None, "--val-corpus", help="Rerank BM25 top-k of this collection for each validation query.")
EpochsOpt = typer.Option(None, "--epochs", help="Epochs [2].")
LrOpt = typer.Option(None, "--lr", help="Learning rate [3e-5].")
BatchOpt = typer.Option(None, "--batch-size", help="Per-device batch, in pairs [16].")
MaxLengthOpt = typer.Option(None, "--max-length", help="Token limit of query+document [512].")
EvalStepsOpt = typer.Option(None, "--eval-steps", help="Evaluate and checkpoint every N steps [100].")
MaxStepsOpt = typer.Option(None, "--max-steps", help="Stop after N steps (overrides epochs).")
SeedOpt = typer.Option(None, "--seed", help="Random seed [42].")
PrecisionOpt = typer.Option(None, "--precision", help="auto (bf16 on a GPU that has it), bf16 (on a CPU with bf16 "
                            "units too: about 2x faster) or fp32; default auto.")
RayOpt = typer.Option(False, "--ray", help="Score the lists on Ray actors, one model each (pip install "
                      "'finerank\\[ray]').")
RayWorkersOpt = typer.Option(None, "--ray-workers", help="Ray actors with --ray [2].")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster with --ray (ray://HOST:10001 or auto; default: "
                             "a local Ray, or RAY_ADDRESS).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Start afresh in an --out that holds an earlier run (removes its "
                            "checkpoints, best/ and record).")


def log_dim(message: str) -> None:
    """A library's progress line, dimmed on stderr."""
    err.print(f"[dim]{escape(message)}[/]")


def warn(message: str) -> None:
    err.print(f"[yellow]warning[/] {escape(message)}")


def input_path(path):
    """The file or folder an input argument names (an embedded collection's folder for its name), or None."""
    try:
        return resolve_path(path)
    except FinerankError:
        return None


def load_input(path, format=None, split=None, skip_invalid=False, max_label=4.0, corpus=None, queries=None,
               one_grade: bool = True):
    """:func:`finerank.io.collection.load`, its skipped rows (with ``--skip-invalid``) reported on stderr."""
    ds = load(path, format, split=split, corpus=corpus, queries=queries, max_label=max_label,
              skip_invalid=skip_invalid, one_grade=one_grade)
    if ds.skipped:
        why = "; ".join(f"{r} ({n})" for r, n in ds.skipped_reasons().items())
        first = ds.skipped[0]
        err.print(f"[yellow]skipped {len(ds.skipped)} invalid rows[/]: {escape(why)} (first: {escape(first.path)}:"
                  f"{first.line})", highlight=False)
    return ds


def open_collection(path, split, corpus, queries, max_label=4.0):
    return load_collection(path, split=split, corpus_path=corpus, queries_path=queries, max_label=max_label)


def print_report(report) -> None:
    """An EvaluationReport as a table (the first metric's deltas, significance and query dependence), then the
    systems that ignore the query and the models worse than their baseline, on stderr."""
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
