"""An evaluation's report folder: ``metrics.json``, ``report.md``, ``report.html`` (self-contained: the plots
embedded, a per-query drill-down), ``runs/<system>.trec`` and PNG plots, checked as outputs before any work and
written atomically. Takes an evaluation's report object (:class:`finerank.evaluation.evaluate.EvaluationReport`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import OutputError
from ..io.outputs import atomic_write, check_outputs, write_json
from ..io.runs import write_trec_run
from ..io.models import resolve_model
from .html import render_html
from .markdown import render_report_md, report_notes, summary_table
from .plots import plot_report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "system"


def report_outputs(out, inputs, names=()) -> None:
    """Every file of the report in ``out`` checked as an output (:func:`finerank.io.outputs.check_outputs`) against
    ``inputs`` (data files and folders, and models: a local model protects the folder it resolves to), before any
    work: its fixed files and plots, and with the systems' ``names`` their ``runs/NAME.trec``."""
    protect = []
    for i in inputs:
        p = Path(str(i)) if isinstance(i, (str, os.PathLike)) else None
        if p is None or not p.exists():
            continue  # a hub id, a baseline name, an embedded collection, a Scorer
        model = p.is_dir() and ((p / "config.json").exists() or (p / "best" / "config.json").exists())
        protect.append(resolve_model(str(p)) if model else p)  # a run folder: its model, not its eval/
    d = Path(out)
    plots = [d / "metrics.png"] + ([d / "per-query-delta.png"] if len(names) > 1 else [])
    check_outputs([d / "metrics.json", d / "report.md", d / "report.html", *plots,
                   *(d / "runs" / f"{_safe(n)}.trec" for n in names)], protect, folders=[d])
    runs = d / "runs"
    for i in protect:
        real = Path(os.path.realpath(str(i)))
        if real == Path(os.path.realpath(runs)) or Path(os.path.realpath(runs)) in real.parents:
            raise OutputError(out, f"holds the input {i} in its runs/ folder, which the report rewrites",
                              hint="give the report another --out")


def write_report(report, out: str) -> None:
    """metrics.json, report.md, report.html (self-contained: the plots embedded, a per-query drill-down),
    runs/<system>.trec and plots (PNG) in ``out``, each written atomically; ``report.out_dir`` becomes ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(d)
    for s in report.systems:
        write_trec_run(d / "runs" / f"{_safe(s.name)}.trec", s.run, tag=_safe(s.name))
    write_json(d / "metrics.json", report.to_dict())
    plots = plot_report(report, d)
    with atomic_write(d / "report.md") as f:
        f.write(render_report_md(report, plots))
    head, rows = summary_table(report)
    with atomic_write(d / "report.html") as f:
        f.write(render_html(report, head, rows, report_notes(report), plots))
