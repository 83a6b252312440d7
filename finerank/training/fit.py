"""What is fitted on validation lists after training: a fusion's weights and a cascade's cut-offs.

:func:`fit` tunes the weights of (cross-encoder, BM25, bi-encoder) (:func:`finerank.retrieval.hybrid.tune`: the
hybrid's first, then the cross-encoder's against it) and keeps a :class:`~finerank.scorers.fused.FusionSpec` only
when it beats the cross-encoder alone. :func:`tune_cascade`
measures every cascade setting of a grid, quality and real latency per query, and chooses the cheapest within a
tolerance of the full rerank.
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import FinerankError
from ..core.metrics import aggregate, parse_metric, per_query
from ..core.records import Run
from ..data.candidates import Candidates
from ..evaluation.significance import paired_tests
from ..io.models import model_ref, resolve_model
from ..io.outputs import check_output_file, check_outputs, write_json
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import HYBRID_WEIGHT, fuse, tune
from ..report.plots import plot_tuning
from ..scorers.base import Scorer
from ..scorers.cascade import Cascade, CascadeSpec
from ..scorers.cross_encoder import Reranker
from ..scorers.fused import FusedScorer, FusionSpec
from ..scorers.load import load_scorer
from ..scorers.spec import SPEC_FILE

N1_GRID = (None, 50, 30)
N2_GRID = (5, 10, 15, 20, 30, 50)


# ------------------------------------------------------------------------------------------------ fusion
def fit(cands: Candidates, ce_run: Run, *, bi_encoder: str | BiEncoder = "minilm-l6", metric: str = "nDCG@10",
        step: float = 0.1) -> tuple[FusionSpec | None, dict]:
    """Tune a fusion of (ce, bm25, bi) on validation candidate lists that carry first-stage scores.

    Two one-dimensional searches, not one over the whole simplex (which overfits a few selection queries: on the
    demo's 22 it chose bm25 0.5 and lost 0.017 nDCG@10 on held-out queries): first the hybrid's BM25 weight
    (bm25 + bi, no training), then the cross-encoder's weight ``a`` on the line ``a * ce + (1 - a) * hybrid``.
    Returns the spec when the fusion beats the cross-encoder alone on these queries (else None), and what was
    measured: ``{"queries", "systems": {"cross-encoder" | "fusion" | "hybrid": {metric: value}}, "weights":
    {"fusion" | "hybrid": {signal: weight}}, "vs_hybrid": {"delta", "p", "wins", "losses"}}`` (the shipped model,
    the fusion or the cross-encoder alone, against the hybrid on the same queries: a paired randomization test)."""
    if not cands.scored:
        return None, {"skipped": "the validation candidates carry no first-stage scores"}
    bi = bi_encoder if isinstance(bi_encoder, BiEncoder) else BiEncoder(bi_encoder)
    runs = {"ce": ce_run, "bm25": cands.first_stage_run(), "bi": bi.score_candidates(cands)}
    alone = aggregate(cands.qrels, ce_run, [metric])[metric]
    hybrid_w, hybrid = tune(runs, cands.qrels, ["bm25", "bi"], metric=metric, step=step)
    weights, fused = None, -1.0
    for i in range(1, round(1 / step) + 1):  # the cross-encoder's weight a, from step to 1 (a = 0 is the hybrid)
        a = min(1.0, i * step)
        w = {"ce": round(a, 4), **{k: round((1 - a) * v, 4) for k, v in hybrid_w.items()}}
        value = aggregate(cands.qrels, fuse(runs, w), [metric])[metric]
        if value > fused + 1e-9:
            weights, fused = w, value
    ships = fused > alone + 1e-9
    info = {"queries": len(cands.qrels),
            "systems": {"cross-encoder": {metric: alone}, "fusion": {metric: fused}, "hybrid": {metric: hybrid}},
            "weights": {"fusion": weights, "hybrid": hybrid_w},
            "vs_hybrid": _versus(cands.qrels, fuse(runs, weights) if ships else ce_run, fuse(runs, hybrid_w), metric)}
    if not ships:
        return None, info
    return FusionSpec(weights, bi.name if weights.get("bi") else None, tuned_on=info), info


def _versus(qrels, run: Run, baseline: Run, metric: str) -> dict:
    """``run`` against ``baseline`` over the same queries: the mean difference, a paired randomization test's p."""
    qids = sorted(qrels)
    a, b = per_query(qrels, run, [metric])[metric], per_query(qrels, baseline, [metric])[metric]
    x = np.array([a.get(q, 0.0) for q in qids])
    y = np.array([b.get(q, 0.0) for q in qids])
    t = paired_tests(x, y)
    return {"delta": float(x.mean() - y.mean()) if qids else 0.0, "p": t["p_randomization"], "wins": t["wins"],
            "losses": t["losses"]}


# ------------------------------------------------------------------------------------------------ cascade
class _MemoBackend:
    """A backend that scores each distinct (query, text) input once: the quality sweep re-scores the same heads."""

    def __init__(self, backend):
        self.inner = backend
        self.kind = backend.kind
        self.tokenizer = backend.tokenizer
        self.model_max_length = backend.model_max_length
        self.source = backend.source
        self.activation = backend.activation
        self.memo: dict[tuple[str, str], float] = {}

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        need = list(dict.fromkeys(p for p in pairs if p not in self.memo))
        if need:
            self.memo.update(zip(need, (float(s) for s in self.inner(need))))
        return np.fromiter((self.memo[p] for p in pairs), dtype=np.float32, count=len(pairs))


def _memoised(scorer: Scorer) -> Scorer:
    """A copy of ``scorer`` whose cross-encoder scores each distinct input once (others as they are)."""
    if isinstance(scorer, Reranker):
        memo = copy.copy(scorer)
        memo.backend = _MemoBackend(scorer.backend)
        memo.stats = dict(scorer.stats)
        return memo
    if isinstance(scorer, FusedScorer):
        memo = copy.copy(scorer)
        memo.ce = _memoised(scorer.ce)
        return memo
    return scorer


@dataclass
class CascadeTuning:
    """What :func:`tune_cascade` measured: one row a setting (the full rerank first), the chosen spec (None when no
    setting met the tolerance and the budget) and the one-line verdict."""

    rows: list[dict]
    chosen: CascadeSpec | None
    line: str
    metric: str
    tolerance: float
    latency_budget_ms: float | None
    queries: int
    latency_queries: int
    model: str
    files: dict = field(default_factory=dict)

    @property
    def full(self) -> dict:
        return self.rows[0]

    @property
    def chosen_row(self) -> dict | None:
        return next((r for r in self.rows if r["chosen"]), None)

    def to_dict(self) -> dict:
        return {"model": self.model, "metric": self.metric, "tolerance": self.tolerance,
                "latency_budget_ms": self.latency_budget_ms, "queries": self.queries,
                "latency_queries": self.latency_queries, "full": self.full, "chosen": self.chosen_row,
                "choice": self.line, "settings": self.rows}


def grid(n1: Sequence[int | None] = N1_GRID, n2: Sequence[int] = N2_GRID, cheap: Sequence[str] = ("bm25", "hybrid"),
         *, bi_encoder: str = "minilm-l6", hybrid_weight: float = HYBRID_WEIGHT) -> list[CascadeSpec]:
    """Every valid (cheap, n1, n2) setting, the full rerank first; ``bm25`` has no n1 (no model to spare)."""
    specs = [CascadeSpec(None)]
    seen = set()
    for c in cheap:
        for a in ([None] if c == "bm25" else n1):
            for b in n2:
                if a is not None and b >= a:
                    continue
                key = (c, a, b)
                if key not in seen:
                    seen.add(key)
                    specs.append(CascadeSpec(b, a, c, model_ref(bi_encoder), hybrid_weight))
    return specs


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _validation_lists(val_candidates, judgments: str | None, split: str | None) -> Candidates:
    cands = val_candidates if isinstance(val_candidates, Candidates) else Candidates.from_file(val_candidates)
    if judgments:
        cands.with_judgments(judgments, split)
    if not cands.qrels:
        raise FinerankError(f"{cands.source}: the validation lists carry no labels, so quality cannot be measured",
                            hint="give labeled candidates (finerank data candidates), or --judgments COLLECTION")
    if not any(g > 0 for docs in cands.qrels.values() for g in docs.values()):
        raise FinerankError(f"{cands.source}: no list holds a relevant document (every label is 0), so every "
                            "setting scores 0 and none can be chosen",
                            hint="give lists with relevant documents (labels > 0), or --judgments COLLECTION")
    return cands


def _quality(specs: list[CascadeSpec], expensive: Scorer, bi: BiEncoder, cands: Candidates, metric: str) -> list[dict]:
    """One row a setting: ``metric`` over every list and the models' work a query (the scores memoised)."""
    memo = _memoised(expensive)
    n = max(1, len(cands.docs))
    rows = []
    for spec in specs:
        casc = Cascade(spec, memo, spec.cheap_scorer(bi))
        pq = per_query(cands.qrels, casc.score_candidates(cands), [metric])[metric]
        rows.append({"setting": spec.label(), "cheap": None if spec.full else spec.cheap, "n1": spec.n1,
                     "n2": spec.n2, metric: float(np.mean(list(pq.values()))) if pq else 0.0,
                     "ce_pairs": casc.stats["ce_pairs"] / n, "cheap_docs": casc.stats["cheap_docs"] / n})
    return rows


def _latency(specs: list[CascadeSpec], expensive: Scorer, bi: BiEncoder, cands: Candidates, rows: list[dict],
             latency_queries: int, seed: int, log) -> int:
    """p50 and p95 latency of each setting into its row: real calls, one list a call, uncached scorers sharing the
    loaded models, settings interleaved query by query; returns the number of lists timed."""
    qids = sorted(cands.docs)
    sample = sorted(random.Random(seed).sample(qids, min(latency_queries, len(qids))))
    lists = {q: cands.subset([q]) for q in sample}
    live_bi = BiEncoder(bi.model) if any(s.cheap in ("bi", "hybrid") for s in specs) else None
    live = [Cascade(spec, expensive, spec.cheap_scorer(live_bi)) for spec in specs]
    live[0].score_candidates(lists[sample[0]])  # warm-up: first calls allocate
    for c in live[1:]:
        if c.spec.cheap != "bm25":
            c.score_candidates(lists[sample[0]])
            break
    times: list[list[float]] = [[] for _ in specs]
    log(f"timing {len(specs)} settings on {len(sample)} lists, one list a call")
    for q in sample:
        for i, c in enumerate(live):
            t0 = time.perf_counter()
            c.score_candidates(lists[q])
            times[i].append((time.perf_counter() - t0) * 1000.0)
    for row, ts in zip(rows, times):
        row["p50_ms"] = round(_percentile(ts, 50), 2)
        row["p95_ms"] = round(_percentile(ts, 95), 2)
    return len(sample)


CHOICES = ("latency", "pairs")  # what tune_cascade minimises among the settings within tolerance and budget


def _choose(rows: list[dict], metric: str, tolerance: float, budget: float | None,
            choose: str = "latency") -> int | None:
    """Mark each row's standing; the row chosen among those within tolerance and budget: the lowest p50 (ties:
    fewer cross-encoder pairs), or with ``choose="pairs"`` the fewest cross-encoder pairs a query (ties: lower
    p50), which does not depend on the machine's speed; None when no row qualifies."""
    full = rows[0]
    floor = (1.0 - tolerance) * full[metric]
    for row in rows:
        row["retained"] = row[metric] / full[metric] if full[metric] else None
        row["within_tolerance"] = bool(row[metric] >= floor - 1e-12)
        row["under_budget"] = budget is None or row["p50_ms"] <= budget
        row["chosen"] = False
    eligible = [i for i, r in enumerate(rows) if r["within_tolerance"] and r["under_budget"]]
    if not eligible:
        return None
    order = ("p50_ms", "ce_pairs") if choose == "latency" else ("ce_pairs", "p50_ms")
    best = min(eligible, key=lambda i: (rows[i][order[0]], rows[i][order[1]], i))
    rows[best]["chosen"] = True
    return best


def _verdict(rows: list[dict], chosen: CascadeSpec | None, metric: str, tolerance: float,
             budget: float | None) -> str:
    full = rows[0]
    if chosen is None:
        return (f"cascade: no setting is within {tolerance:.1%} of the full rerank's {metric} "
                f"({full[metric]:.4f})" + (f" and under {budget:g} ms p50" if budget else ""))
    if chosen.full:
        return (f"cascade: no cheaper setting is within {tolerance:.1%} of the full rerank's {metric} "
                f"({full[metric]:.4f}): keep the full rerank")
    r = next(r for r in rows if r["chosen"])
    return (f"cascade: {chosen.label()}: {metric} {r[metric]:.4f} ({r['retained']:.1%} of the full rerank's "
            f"{full[metric]:.4f}), {r['ce_pairs']:.1f} cross-encoder pairs a query instead of "
            f"{full['ce_pairs']:.1f}, p50 {r['p50_ms']:.0f} ms instead of {full['p50_ms']:.0f} ms")


def _chosen_spec(spec: CascadeSpec, rows: list[dict], best: int, cands: Candidates, metric: str, tolerance: float,
                 timed: int, budget: float | None) -> CascadeSpec:
    chosen = copy.deepcopy(spec)
    chosen.tolerance = tolerance
    keys = (metric, "ce_pairs", "p50_ms", "p95_ms")
    chosen.tuned_on = {"queries": len(cands.docs), "source": cands.source, "metric": metric,
                       "latency_queries": timed, "latency_budget_ms": budget,
                       "full": {k: rows[0][k] for k in keys}, "chosen": {k: rows[best][k] for k in keys}}
    return chosen


TUNING_FILES = ("cascade-tuning.json", "cascade-tuning.png")


def _check_outputs(out, save: bool, model, val_candidates, judgments) -> None:
    """Before any work: ``out``'s table and plot can be written and are no input (not the dataset, the judgments or
    a file of the model), and with ``save`` the model's finerank.json can be written. OutputError (exit 2) naming
    the path otherwise."""
    local = None
    if isinstance(model, (str, os.PathLike)) and Path(str(model)).exists():
        try:
            local = Path(resolve_model(str(model)))  # a run folder: its model
        except Exception:  # noqa: BLE001 - not a model folder: load_scorer says so
            local = Path(str(model))
    if out is not None:
        inputs = [None if isinstance(val_candidates, Candidates) else val_candidates, judgments, local]
        check_outputs([Path(out) / f for f in TUNING_FILES], inputs, folders=[out])
    if save and local is not None and local.is_dir():
        check_output_file(local / SPEC_FILE)


def _keep(result: CascadeTuning, expensive: Scorer, out, save: bool) -> None:
    """Write the table and the plot into ``out``; with ``save``, the chosen spec into the model's finerank.json."""
    if out is not None:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / TUNING_FILES[0], result.to_dict())
        plot_tuning(result, d / TUNING_FILES[1])
        result.files = {"table": str(d / TUNING_FILES[0]), "plot": str(d / TUNING_FILES[1])}
    if not save:
        return
    if result.chosen is None:
        raise FinerankError(result.line + ": nothing to save", hint="raise --tolerance or --latency-budget-ms")
    model_dir = getattr(expensive, "model_dir", None)
    if model_dir is None or not Path(model_dir).is_dir():
        raise FinerankError(f"{expensive.name}: not a model folder, so the cascade cannot be saved with it",
                            hint="tune a local model folder (a run, best/ or an export)")
    result.files["spec"] = str(result.chosen.save(model_dir))


def tune_cascade(model, val_candidates: Candidates | str, *, n1: Sequence[int | None] = N1_GRID,
                 n2: Sequence[int] = N2_GRID, cheap: Sequence[str] = ("bm25", "hybrid"),
                 bi_encoder: str = "minilm-l6", hybrid_weight: float = HYBRID_WEIGHT, tolerance: float = 0.01,
                 latency_budget_ms: float | None = None, latency_queries: int = 20, metric: str = "nDCG@10",
                 judgments: str | None = None, split: str | None = None, out: str | Path | None = None,
                 save: bool = False, seed: int = 0, choose: str = "latency", log=print,
                 **reranker_options) -> CascadeTuning:
    """Choose a cascade's cut-offs on validation candidate lists. ``model``: the expensive Scorer, or what
    :func:`finerank.scorers.load.load_scorer` takes (its saved cascade left out).

    Every setting of the grid (:func:`grid`; the full rerank is the reference) is scored on all lists for
    ``metric`` (the cross-encoder's score of an input is computed once and reused across settings), and timed per
    query on ``latency_queries`` lists (a seeded sample; each list one call, as ``serve`` scores a request;
    tokenization, the bi-encoder and the cross-encoder included; settings interleaved query by query so that a
    busy CPU hits them alike; one warm-up call first). The choice: the lowest p50 latency among the settings whose
    ``metric`` is at least ``(1 - tolerance)`` x the full rerank's and, with ``latency_budget_ms``, whose p50 is
    within it (ties: fewer cross-encoder pairs); ``choose="pairs"``: the fewest cross-encoder pairs instead (the same
    choice on any machine). ``out`` gets ``cascade-tuning.json`` and ``cascade-tuning.png``;
    ``save`` writes the chosen spec into the model's ``finerank.json``; both are checked before any work.
    """
    if not 0.0 <= tolerance < 1.0:
        raise FinerankError(f"tolerance must be in [0, 1), got {tolerance}", hint="0.01 = within 1% of the full rerank")
    if latency_queries < 1:
        raise FinerankError(f"latency_queries must be at least 1, got {latency_queries}")
    if choose not in CHOICES:
        raise FinerankError(f"unknown choice {choose!r}", hint=f"choose one of: {', '.join(CHOICES)}")
    _check_outputs(out, save, model, val_candidates, judgments)
    cands = _validation_lists(val_candidates, judgments, split)
    metric = str(parse_metric(metric))
    expensive = load_scorer(model, cascade=False, **reranker_options)
    specs = grid(n1, n2, cheap, bi_encoder=bi_encoder, hybrid_weight=hybrid_weight)
    if any(s.cheap == "hybrid" for s in specs) and not cands.scored:
        raise FinerankError(f"{cands.source}: the hybrid cheap stage needs first-stage (BM25) scores",
                            hint="make the lists with finerank data candidates, or use --cheap bm25,bi")
    log(f"cascade tuning: {len(specs)} settings on {len(cands.docs)} validation lists ({cands.n_pairs} pairs)")
    bi = BiEncoder(bi_encoder, cache_documents=True)
    rows = _quality(specs, expensive, bi, cands, metric)
    timed = _latency(specs, expensive, bi, cands, rows, latency_queries, seed, log)
    best = _choose(rows, metric, tolerance, latency_budget_ms, choose)
    chosen = None if best is None else _chosen_spec(specs[best], rows, best, cands, metric, tolerance, timed,
                                                    latency_budget_ms)
    result = CascadeTuning(rows, chosen, _verdict(rows, chosen, metric, tolerance, latency_budget_ms), metric,
                           tolerance, latency_budget_ms, len(cands.docs), timed, expensive.name)
    _keep(result, expensive, out, save)
    return result
