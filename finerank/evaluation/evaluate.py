"""``finerank evaluate``: rerank held-out candidate lists with each model and compare them side by side.

Every system reranks the same candidate lists; ir-measures scores them (unjudged = not relevant, ties broken by doc
id); each system is compared with the first baseline per query: paired t-test, paired randomization test, a
bootstrap 95% confidence interval of the mean difference, and wins/ties/losses. ``--out DIR`` writes
``metrics.json``, ``report.md``, ``report.html`` (self-contained, per-query drill-down: :mod:`finerank.report.html`),
one TREC run per system and PNG plots. The results also go into the card (``README.md``) of each local finerank model
evaluated (:mod:`finerank.report.card`).

Systems are named by what they are: ``bm25`` (the first stage's own order, from the scores the candidates carry),
``hybrid[:W][@MODEL]`` (W x z-scored BM25 + (1-W) x z-scored bi-encoder cosine; W=0.3 by default; MODEL the
embedding model, by default ``bi_encoder``, i.e. minilm-l6; no training),
``bi:NAME`` (a sentence-transformers embedding model, cosine of query and document), ``cross:NAME`` (a
cross-encoder; a fresh head on an encoder), ``raw:NAME`` (a model saved with a fusion, its cross-encoder alone),
or a plain NAME, which is a bi-encoder when the folder is a
sentence-transformers embedding model (``minilm-l6`` is one) and a cross-encoder otherwise.

Every cross-encoder scores through :meth:`finerank.scorers.cross_encoder.Reranker.score_candidates` and every bi-encoder through
:class:`finerank.retrieval.dense.BiEncoder`; the hybrid is :func:`finerank.scorers.fused.fuse`: the same functions that ship.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.candidates import Candidates
from ..scorers.cascade import load_scorer
from ..report.card import update_cards
from ..report.html import render_html
from ..core.environment import CORE_PACKAGES, versions
from ..core.errors import FinerankError, OutputError
from ..scorers.fused import fuse
from ..io.formats import (DEFAULT_MAX_LABEL, atomic_write, check_outputs, file_sha256, write_json, write_trec_run,
                 written_together)
from .dependence import CHECK_LISTS, ignores_query, wrong_query_lists
from ..core.metrics import DEFAULT_METRICS, parse_metric, per_query, query_dependence
from ..io.models import resolve_model
from ..core.records import Run
from ..scorers.cross_encoder import Reranker
from ..retrieval.dense import BiEncoder


@dataclass
class SystemResult:
    name: str
    kind: str                 # bm25 | bi-encoder | cross-encoder
    model: str | None
    metrics: dict[str, float]
    seconds: float
    pairs_per_second: float | None
    run: Run = field(repr=False, default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    baseline: bool = False
    query_dependence: dict | None = None  # finerank.core.metrics.query_dependence on the checked lists


@dataclass
class Comparison:
    system: str
    baseline: str
    metric: str
    value: float
    baseline_value: float
    delta: float
    relative: float | None
    p_ttest: float | None
    p_randomization: float
    ci95: tuple[float, float]
    wins: int
    ties: int
    losses: int


@dataclass
class EvaluationReport:
    dataset: str
    queries: int
    pairs: int
    metrics: list[str]
    baseline: str
    systems: list[SystemResult]
    comparisons: list[Comparison]
    versions: dict = field(default_factory=dict)
    out_dir: str | None = None
    candidates: Candidates | None = field(default=None, repr=False)  # the lists scored: texts, judgments (report.html)

    def system(self, name: str) -> SystemResult:
        return next(s for s in self.systems if s.name == name)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "queries": self.queries, "pairs": self.pairs, "metrics": self.metrics,
            "baseline": self.baseline,
            "systems": {s.name: {"kind": s.kind, "model": s.model, **s.metrics, "seconds": round(s.seconds, 2),
                                 "pairs_per_second": s.pairs_per_second, "query_dependence": s.query_dependence}
                        for s in self.systems},
            "comparisons": [asdict(c) for c in self.comparisons],
            "per_query": {s.name: s.per_query for s in self.systems},
            "versions": self.versions,
        }


# ----------------------------------------------------------------------------------------------- scoring
def _is_bi_encoder(path: str) -> bool:
    p = Path(path)
    if not p.is_dir():
        return False
    modules = p / "modules.json"
    if modules.exists():
        return "Pooling" in modules.read_text()
    return False


def system_label(name: str) -> tuple[str, str]:
    """``LABEL=SPEC`` names a system for the tables (``fine-tuned=runs/x/best``); else the spec is the label."""
    label, eq, spec = name.partition("=")
    if eq and label and not any(c in label for c in "/:\\"):
        return label, spec
    return name, name


def system_kind(name: str) -> tuple[str, str]:
    """(kind, model) for a system spec: bm25, bi:NAME, cross:NAME, or NAME (kind from the folder)."""
    if name == "bm25":
        return "bm25", ""
    if name == "hybrid" or name.startswith(("hybrid:", "hybrid@")):
        w, at, bi = name[len("hybrid"):].removeprefix(":").partition("@")
        try:
            float(w or "0.3")
        except ValueError:
            raise FinerankError(f"system '{name}': the hybrid's weight must be a number",
                                hint="hybrid, hybrid:0.3 or hybrid:0.3@MODEL") from None
        return "hybrid", (w or "0.3") + (f"@{bi}" if at else "")
    if name.startswith("bi:"):
        return "bi-encoder", name[3:]
    if name.startswith("cross:"):
        return "cross-encoder", name[6:]
    if name.startswith("raw:"):  # a model saved with a fusion, scored by its cross-encoder alone
        return "cross-encoder (no fusion)", name[4:]
    return ("bi-encoder" if _is_bi_encoder(resolve_model(name)) else "cross-encoder"), name


def hybrid_parts(model: str, default_bi: str = "minilm-l6") -> tuple[float, str]:
    """(BM25's weight, the bi-encoder) of a hybrid system's ``W[@MODEL]``."""
    w, at, bi = model.partition("@")
    return float(w), bi if at else default_bi


# ------------------------------------------------------------------------------------------ significance
def paired_tests(a: np.ndarray, b: np.ndarray, *, seed: int = 0, rounds: int = 10000) -> dict:
    """System a vs baseline b over the same queries: t-test, randomization test, bootstrap CI, W/T/L."""
    from scipy import stats

    diff = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    if n == 0:
        return {"p_ttest": None, "p_randomization": 1.0, "ci95": (0.0, 0.0), "wins": 0, "ties": 0, "losses": 0}
    p_t = None if np.allclose(diff, diff[0]) else float(stats.ttest_rel(a, b).pvalue)
    signs = rng.choice([-1.0, 1.0], size=(rounds, n))
    observed = abs(diff.mean())
    p_rand = float((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum() + 1) / (rounds + 1)
    boots = diff[rng.integers(0, n, size=(rounds, n))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    eps = 1e-9
    return {"p_ttest": p_t, "p_randomization": p_rand, "ci95": (float(lo), float(hi)),
            "wins": int((diff > eps).sum()), "ties": int((np.abs(diff) <= eps).sum()), "losses": int((diff < -eps).sum())}


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(models: str | list[str], dataset: str | Candidates, *, baselines: list[str] | tuple = (),
             metrics=DEFAULT_METRICS, candidates_run: str | None = None, split: str | None = None,
             top_k: int | None = None, judgments: str | None = None, out: str | None = None,
             max_length: int | None = None, batch_size: int = 32, seed: int = 0, query_check: int = CHECK_LISTS,
             max_label: float = DEFAULT_MAX_LABEL, card: bool = True, cascade: bool = True,
             bi_encoder: str = "minilm-l6", tuned_bi_encoder: str | None = None, log=print) -> EvaluationReport:
    """Rerank the candidate lists of ``dataset`` with each baseline and model; compare each with the first baseline.

    ``query_check`` lists (a seeded sample; 0 turns it off) are also scored under other queries' texts by every
    system (:func:`wrong_query_lists`), which puts each system's query dependence in the report.

    A model saved with a cascade (:mod:`finerank.scorers.cascade`) is scored through it unless ``cascade`` is false (a
    ``raw:`` system never is).

    BM25's own order joins the baselines (first, unless baselines are named) when the candidates carry scores.
    ``judgments`` (a collection) supplies all judgments of the queries, so that nDCG's ideal ranking counts relevant
    documents that the candidates miss; without it only the labels in the candidates file are known. Every label
    and judgment must be in 0..``max_label``.

    ``bi_encoder`` is the embedding model of ``hybrid`` systems that name none. ``tuned_bi_encoder`` (a run folder
    of ``train --arch bi-encoder``, or any embedding model) adds two systems beside the models: ``bi-encoder
    (tuned)`` and ``hybrid (tuned)``, the hybrid at the default weight with that model.
    """
    models = [models] if isinstance(models, str) else list(models)
    if tuned_bi_encoder:
        models += [f"bi-encoder (tuned)=bi:{tuned_bi_encoder}", f"hybrid (tuned)=hybrid@{tuned_bi_encoder}"]
    if out:  # before any work: the report's files are never an input, and can be written
        report_outputs(out, [None if isinstance(dataset, Candidates) else dataset, candidates_run, judgments, *models,
                             tuned_bi_encoder])
    if isinstance(dataset, Candidates):
        cands = dataset.top(top_k) if top_k is not None else dataset
    elif candidates_run:
        cands = Candidates.from_file(candidates_run, collection=dataset, split=split, top_k=top_k, skip_unknown=True,
                                     max_label=max_label)
    else:
        cands = Candidates.from_file(dataset, top_k=top_k, max_label=max_label)
    if not cands.qrels:
        raise FinerankError(f"{cands.source}: the candidates carry no labels, so there is nothing to score",
                            hint="give labeled candidates, or the collection with all judgments (--judgments)")
    if judgments:
        cands.with_judgments(judgments, split, max_label=max_label)
    measures = [parse_metric(m) if isinstance(m, str) else m for m in metrics]
    names = [str(m) for m in measures]
    systems: list[str] = list(baselines)
    if cands.scored and not any(system_label(s)[1] == "bm25" for s in systems):
        systems.append("bm25")
    n_baselines = len(systems)
    systems += [m for m in models if m not in systems]
    if not systems:
        raise FinerankError("nothing to evaluate", hint="pass --model")
    results: list[SystemResult] = []
    encoders: dict[str, BiEncoder] = {}  # one a model: documents encoded once, for the hybrid and the check too
    runs: dict[tuple[str, int], Run] = {}
    wrong = wrong_query_lists(cands, query_check, seed) if query_check else None

    def bi_run(model: str, c: Candidates) -> Run:
        if (model, id(c)) not in runs:
            enc = encoders.setdefault(model, BiEncoder(model, batch_size=batch_size, cache_documents=True))
            runs[(model, id(c))] = enc.score_candidates(c, progress=c is cands)
        return runs[(model, id(c))]

    def score(kind: str, model: str, c: Candidates, reranker: Reranker | None) -> Run:
        if kind in ("bm25", "hybrid") and not c.scored:
            raise FinerankError(f"'{kind}' needs first-stage (BM25) scores with the candidates",
                                hint="make the candidates with finerank data candidates (it writes BM25 scores)")
        if kind == "bm25":
            return c.first_stage_run()
        if kind == "hybrid":
            w, bi = hybrid_parts(model, bi_encoder)
            return fuse({"bm25": c.first_stage_run(), "bi": bi_run(bi, c)}, {"bm25": w, "bi": 1 - w})
        if kind == "bi-encoder":
            return bi_run(model, c)
        return reranker.score_candidates(c, progress=c is cands)

    for spec in systems:
        name, spec = system_label(spec)
        kind, model = system_kind(spec)
        t = time.time()
        reranker = None
        if kind == "hybrid":
            w, bi = hybrid_parts(model, bi_encoder)
            log(f"scoring {cands.n_pairs} pairs with hybrid: {w:g} x BM25 + {1 - w:g} x bi-encoder {bi} (z-scored)")
        elif kind == "bi-encoder":
            log(f"scoring {cands.n_pairs} pairs with bi-encoder {model}")
        elif kind != "bm25":
            log(f"reranking {cands.n_pairs} pairs with cross-encoder {model}")
            import torch

            torch.manual_seed(seed)  # a fresh head is random: the same one every run
            reranker = load_scorer(model, cascade=cascade and kind == "cross-encoder", max_length=max_length,
                                   batch_size=batch_size, fuse=kind == "cross-encoder")
        run = score(kind, model, cands, reranker)
        secs = time.time() - t
        pq = per_query(cands.qrels, run, measures)
        agg = {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in pq.items()}
        dependence = None
        if wrong is not None:
            dependence = query_dependence(run, score(kind, model, wrong, reranker), cands.qrels)
        results.append(SystemResult(name, kind, model or None, agg, secs,
                                    None if kind in ("bm25", "hybrid") else round(cands.n_pairs / max(secs, 1e-9), 1),
                                    run, pq, baseline=len(results) < n_baselines, query_dependence=dependence))
    base = results[0]
    qids = sorted(cands.qrels)
    comparisons = []
    for s in results[1:]:
        for m in names:
            a = np.array([s.per_query[m][q] for q in qids])
            b = np.array([base.per_query[m][q] for q in qids])
            tests = paired_tests(a, b, seed=seed)
            bv, sv = base.metrics[m], s.metrics[m]
            comparisons.append(Comparison(s.name, base.name, m, sv, bv, sv - bv, (sv - bv) / bv if bv else None,
                                          **tests))
    report = EvaluationReport(cands.source, len(cands.qrels), cands.n_pairs, names, base.name, results, comparisons,
                              versions(CORE_PACKAGES))
    report.candidates = cands
    if out:
        with written_together():  # every file of the report, or none
            write_report(report, out)
    if card:  # the results go into the card (README.md) of each local finerank model evaluated
        update_cards(report, render_markdown_table(report), report_notes(report), log=log)
    return report


# ------------------------------------------------------------------------------------------------- files
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "system"


def report_outputs(out, inputs) -> None:
    """The report's fixed files in ``out`` checked as outputs (:func:`finerank.io.formats.check_outputs`) against
    ``inputs``: data files and folders, and models (a local model protects the folder it resolves to)."""
    protect = []
    for i in inputs:
        p = Path(str(i)) if isinstance(i, (str, os.PathLike)) else None
        if p is None or not p.exists():
            continue  # a hub id, a baseline name, an embedded collection
        model = p.is_dir() and ((p / "config.json").exists() or (p / "best" / "config.json").exists())
        protect.append(resolve_model(str(p)) if model else p)  # a run folder: its model, not its eval/
    d = Path(out)
    check_outputs([d / "metrics.json", d / "report.md", d / "report.html"], protect, folders=[d])
    runs = d / "runs"
    for i in protect:
        real = Path(os.path.realpath(str(i)))
        if real == Path(os.path.realpath(runs)) or Path(os.path.realpath(runs)) in real.parents:
            raise OutputError(out, f"holds the input {i} in its runs/ folder, which the report rewrites",
                              hint="give the report another --out")


def write_report(report: EvaluationReport, out: str) -> None:
    """metrics.json, report.md, report.html (self-contained: the plots embedded, a per-query drill-down),
    runs/<system>.trec and plots (PNG) in ``out``, each written atomically."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(d)
    for s in report.systems:
        write_trec_run(d / "runs" / f"{_safe(s.name)}.trec", s.run, tag=_safe(s.name))
    write_json(d / "metrics.json", report.to_dict())
    plots = plot_report(report, d)
    src = report.dataset.split(" + ")[0]
    digest = file_sha256(src)[:16] if Path(src).exists() else "n/a"
    lines = ["# finerank evaluation", "",
             f"Dataset: `{report.dataset}` (sha256 {digest}), {report.queries} queries, {report.pairs} candidate pairs. "
             f"Each system reranks the same candidate lists; ir-measures scores them (unjudged = not relevant).", "",
             render_markdown_table(report), "", *report_notes(report), "",
             "Browse it per query: [report.html](report.html).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Systems", ""]
    lines += [f"- `{s.name}`: {s.kind}" + (f", model `{s.model}`" if s.model else "") +
              (f", {s.pairs_per_second} pairs/s" if s.pairs_per_second else "") for s in report.systems]
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in report.versions.items() if v]
    with atomic_write(d / "report.md") as f:
        f.write("\n".join(lines) + "\n")
    head, rows = summary_table(report)
    with atomic_write(d / "report.html") as f:
        f.write(render_html(report, head, rows, report_notes(report), plots))


def dependence_cells(s: SystemResult, metric: str) -> tuple[str, str]:
    """(wrong-query metric, rank correlation) of a system, as table cells."""
    d = s.query_dependence
    if not d:
        return "", ""
    corr = "n/a" if d["rank_correlation"] is None else f"{d['rank_correlation']:.2f}"
    return f"{d[f'{metric}_wrong_query']:.4f}", corr


def primary_check(report: EvaluationReport) -> str:
    n = next((s.query_dependence["lists"] for s in report.systems if s.query_dependence), 0)
    if not n:
        return "not checked."
    return (f"{n} lists scored again, each under another list's query text (BM25 rescored over the lists' documents); "
            f"'wrong query' is {report.metrics[0]} then, 'rank corr.' the median per-list Spearman correlation of "
            "the scores under the true and the wrong query (1: the query changes nothing).")


def summary_table(report: EvaluationReport) -> tuple[list[str], list[list[str]]]:
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


def render_markdown_table(report: EvaluationReport) -> str:
    head, rows = summary_table(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def report_notes(report: EvaluationReport) -> list[str]:
    """What the table's columns mean, and the loud query-dependence messages (markdown)."""
    notes = [f"Against `{report.baseline}`: paired t-test and randomization test (10,000 rounds) over queries; "
             "95% CI of the mean difference by bootstrap; W/T/L = queries won, tied, lost. Query dependence: "
             f"{primary_check(report)}"]
    return notes + [f"**{m}**" for s in report.systems if s.query_dependence
                    and (m := ignores_query(s.name, s.query_dependence)) is not None]


def plot_report(report: EvaluationReport, d: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [s.name for s in report.systems]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.8 / len(report.metrics)
    x = np.arange(len(names))
    for i, m in enumerate(report.metrics):
        vals = [s.metrics[m] for s in report.systems]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("mean over queries")
    ax.set_ylim(0, max([s.metrics[m] for s in report.systems for m in report.metrics] + [1e-9]) * 1.15)
    ax.set_title(f"{report.queries} held-out queries")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # beside the axes, clear of the bars
    fig.tight_layout()
    paths.append(_save_fig(fig, d / "metrics.png"))

    primary = report.metrics[0]
    comps = [c for c in report.comparisons if c.metric == primary]
    if comps:  # one chart: each system's per-query differences from the baseline, sorted, one line a system
        fig, ax = plt.subplots(figsize=(9, 4.5))
        base = report.system(report.baseline)
        qids = sorted(base.per_query[primary])
        for c in comps:
            s = report.system(c.system)
            diff = np.sort([s.per_query[primary][q] - base.per_query[primary][q] for q in qids])[::-1]
            ax.step(np.arange(1, len(diff) + 1), diff, where="mid", marker=".", lw=1.4,
                    label=f"{c.system}: mean {c.delta:+.3f}, W/T/L {c.wins}/{c.ties}/{c.losses}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(f"queries, each system's sorted from its largest gain to its largest loss ({len(qids)})")
        ax.set_ylabel(f"Δ {primary} vs {report.baseline}")
        ax.set_title(f"Per-query change against {report.baseline}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        fig.tight_layout()
        paths.append(_save_fig(fig, d / "per-query-delta.png"))
    return paths


def _save_fig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
