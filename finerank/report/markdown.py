"""An evaluation as markdown: the comparison table (``report.md``, the model card, report.html's rows), its notes,
and ``report.md`` itself. Every function takes an evaluation's report object
(:class:`finerank.evaluation.evaluate.EvaluationReport`)."""

from __future__ import annotations

import re
from pathlib import Path

from ..io.files import file_sha256

# What a name (a file, a run folder, a model id, a system) must not do in markdown: start emphasis, a link, an image,
# a code span, a table cell, a heading or strike-through (backslash-escaped), or HTML, a comment or an entity (as
# entities); a line break or other control character is shown as its Python escape (\n), so that a name never
# starts a line of its own and no line that holds one can equal a marker (an HTML comment on a line of its own).
_MD_PUNCT = re.compile(r"([\\`*_\[\]|#!~])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _visible(text) -> str:
    """``text`` on one line: every non-printable character (newline, tab, escape, U+2028...) as its Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def md_escape(text) -> str:
    """``text`` as inline markdown that shows it literally (and holds no HTML): for names in a card or report."""
    out = _MD_PUNCT.sub(r"\\\1", _visible(text))
    return re.sub("[&<>]", lambda m: _ENTITIES[m.group()], out)


def md_code(text) -> str:
    """``text`` as inline code shown literally: a code span when that is safe (no backtick, ``|``, ``<``, ``>`` or
    ``&``, no outer spaces), else a ``<code>`` element holding :func:`md_escape` of it."""
    shown = _visible(text)
    if shown and shown == shown.strip() and not any(c in shown for c in "`|<>&"):
        return f"`{shown}`"
    return f"<code>{md_escape(text)}</code>"


def dependence_cells(s, metric: str) -> tuple[str, str]:
    """(wrong-query metric, rank correlation) of a system, as table cells."""
    d = s.query_dependence
    if not d:
        return "", ""
    corr = "n/a" if d["rank_correlation"] is None else f"{d['rank_correlation']:.2f}"
    return f"{d[f'{metric}_wrong_query']:.4f}", corr


def primary_check(report) -> str:
    n = next((s.query_dependence["lists"] for s in report.systems if s.query_dependence), 0)
    if not n:
        return "not checked."
    return (f"{n} lists scored again, each under another list's query text (BM25 rescored over the lists' documents); "
            f"'wrong query' is {report.metrics[0]} then, 'rank corr.' the median per-list Spearman correlation of "
            "the scores under the true and the wrong query (1: the query changes nothing).")


def summary_table(report) -> tuple[list[str], list[list[str]]]:
    """The comparison table's header and rows (formatted cells): report.md, report.html and the model card."""
    primary = report.metrics[0]
    head = ["system", *report.metrics, f"Δ {primary}", "rel.", "p (t)", "p (rand.)", "95% CI", "W/T/L",
            f"{primary} wrong query", "rank corr."]
    rows = []
    comp = {c.system: c for c in report.comparisons if c.metric == primary}
    for s in report.systems:
        vals = [f"{s.metrics[m]:.4f}" for m in report.metrics]
        dep = list(dependence_cells(s, primary))
        c = comp.get(s.name)
        if c is None:
            rows.append([f"{s.name} (baseline)", *vals, "", "", "", "", "", "", *dep])
        else:
            rel = "n/a" if c.relative is None else f"{c.relative:+.1%}"
            pt = "n/a" if c.p_ttest is None else f"{c.p_ttest:.3g}"
            rows.append([s.name, *vals, f"{c.delta:+.4f}", rel, pt, f"{c.p_randomization:.3g}",
                         f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]", f"{c.wins}/{c.ties}/{c.losses}", *dep])
    return head, rows


def render_markdown_table(report) -> str:
    head, rows = summary_table(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join([md_escape(r[0]), *r[1:]]) + " |" for r in rows])


def report_notes(report) -> list[str]:
    """What the table's columns mean, and the loud query-dependence messages (markdown): each system's
    ``query_warning`` (:func:`finerank.evaluation.dependence.ignores_query`)."""
    notes = [f"Against {md_code(report.baseline)}: paired t-test and randomization test (10,000 rounds) over queries; "
             "95% CI of the mean difference by bootstrap; W/T/L = queries won, tied, lost. Query dependence: "
             f"{primary_check(report)}"]
    notes += [f"Calibration of {md_code(s.name)}'s relevance_score on these lists ({s.calibration['pairs']} documents): "
              f"ECE {s.calibration['ece_before']:.4f} uncalibrated -> {s.calibration['ece_after']:.4f} with its "
              "saved map (calibration.png)." for s in report.systems if getattr(s, "calibration", None)]
    return notes + [f"**{md_escape(s.query_warning)}**" for s in report.systems if s.query_warning]


def render_report_md(report, plots: list[Path]) -> str:
    """``report.md``: the dataset, the table and its notes, the ``plots``, the systems and the versions."""
    src = report.dataset.split(" + ")[0]
    read = getattr(report.candidates, "sha256", None)  # the bytes evaluated, hashed as they were read
    digest = read[:16] if read else file_sha256(src)[:16] if Path(src).exists() else "n/a"
    lines = ["# finerank evaluation", "",
             f"Dataset: {md_code(report.dataset)} (sha256 {digest}), {report.queries} queries, {report.pairs} candidate pairs. "
             f"Each system reranks the same candidate lists; ir-measures scores them (unjudged = not relevant).", "",
             render_markdown_table(report), "", *report_notes(report), "",
             "Browse it per query: [report.html](report.html).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Systems", ""]
    lines += [f"- {md_code(s.name)}: {md_escape(s.kind)}" + (f", model {md_code(s.model)}" if s.model else "") +
              (f", {s.pairs_per_second} pairs/s" if s.pairs_per_second else "") for s in report.systems]
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in report.versions.items() if v]
    return "\n".join(lines) + "\n"
