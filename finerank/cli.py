"""The ``finerank`` command line: a thin shell over the public functions. Parse, call one function, print.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so ``--help`` and the
data commands start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import FinerankError

app = typer.Typer(help="Fine-tune cross-encoder rerankers on your own data, prove it on held-out queries, ship it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Load, inspect, split and mine labeled (query, document, label) data.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)

FormatOpt = typer.Option(None, "--format", help="Force a format: jsonl, csv, tsv, beir, trec.")
SplitOpt = typer.Option(None, "--split", help="BEIR qrels split (qrels/<split>.tsv), e.g. train or test.")
SkipOpt = typer.Option(False, "--skip-invalid", help="Skip bad rows (and report them) instead of stopping.")
MaxLabelOpt = typer.Option(4.0, "--max-label", help="Highest label on the scale (labels are 0..max).")
CorpusOpt = typer.Option(None, "--corpus", help="corpus.jsonl for TREC qrels (default: beside them).")
QueriesOpt = typer.Option(None, "--queries-file", help="queries.jsonl for TREC qrels (default: beside them).")


def _load(path, format=None, split=None, skip_invalid=False, max_label=4.0, corpus=None, queries=None):
    from .io import load

    ds = load(path, format, split=split, corpus=corpus, queries=queries, max_label=max_label,
              skip_invalid=skip_invalid)
    if ds.skipped:
        err.print(f"[yellow]skipped {len(ds.skipped)} invalid rows[/] (first: {ds.skipped[0].path}:"
                  f"{ds.skipped[0].line}: {ds.skipped[0].reason})")
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
    from .inspect import inspect

    ds = _load(path, format, split, skip_invalid, max_label, corpus, queries)
    report = inspect(ds, model=model, max_length=max_length)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    t = Table(title=f"{report.source} ({report.format})", show_header=False)
    t.add_row("pairs / queries / documents", f"{report.pairs} / {report.queries} / {report.documents}")
    t.add_row("labels", f"{report.label_scale}: " + ", ".join(f"{k}: {v}" for k, v in report.label_histogram.items()))
    ppq = report.positives_per_query
    t.add_row("positives per query", f"min {ppq['min']}, median {ppq['median']:g}, max {ppq['max']}")
    t.add_row("queries with no positive", str(report.queries_without_positive))
    t.add_row("duplicate pairs", str(report.duplicate_pairs))
    t.add_row("conflicting labels", str(report.conflicting_pairs))
    if report.tokens:
        tk = report.tokens
        t.add_row("tokens (query+doc)", f"p50 {tk['p50']}, p95 {tk['p95']}, max {tk['max']}; "
                  f"{tk['truncated_share']:.1%} over max_length={tk['max_length']}")
    if report.skipped:
        t.add_row("skipped rows", f"{report.skipped}: " + "; ".join(f"{r} ({n})" for r, n in report.skipped_reasons.items()))
    out.print(t)
    hist = report.label_histogram
    top = max(hist.values())
    for k, v in hist.items():
        out.print(f"  label {k:>4} {'█' * max(1, round(30 * v / top))} {v}")
    for ex in report.conflict_examples:
        out.print(f"  [yellow]conflict[/] query {ex['query_id']} doc {ex['doc_id']}: labels {ex['labels']}")
    for w in report.warnings:
        out.print(f"[yellow]warning[/] {w.message}\n  remedy: {w.remedy}")


# ---------------------------------------------------------------------------------------------- doctor
@app.command()
def doctor(
    model: Optional[str] = typer.Option(None, "--model", help="Also resolve and load this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
):
    """Print the Python, package versions, devices, Hugging Face cache and whether --model loads."""
    from .doctor import doctor as run_doctor

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
    t.add_row("HF cache", r.hf_cache)
    t.add_row("HF offline", str(r.hf_offline))
    if r.model:
        m = r.model
        status = (f"[green]loads[/] on {m['device']}, max_length {m['max_length']}, activation {m['activation']}, "
                  f"test score {m['test_score']:.4f}") if m["loads"] else f"[red]does not load[/]"
        t.add_row("model", f"{m['name']} -> {m.get('resolves_to', '?')}\n{status}")
    out.print(t)
    for w in r.warnings:
        out.print(f"[yellow]warning[/] {w}")


# ------------------------------------------------------------------------------------------------ entry
def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; a FinerankError is printed without a traceback and exits 2."""
    import click

    try:
        rv = app(args=argv, prog_name="finerank", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except FinerankError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
