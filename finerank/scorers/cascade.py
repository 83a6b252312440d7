"""Cascade reranking: spend the cross-encoder only on the head of each list.

Stages: the first stage's order (the candidates' order, BM25's in ``data candidates``) -> keep its top ``n1`` ->
a cheap scorer (``bm25``: the first stage's own order, no model; ``bi``: the bi-encoder; ``hybrid``: ``w`` x
z-scored first-stage score + (1-w) x z-scored bi-encoder cosine, :func:`finerank.scorers.fused.fuse`) -> keep its top
``n2`` -> the cross-encoder (:meth:`Reranker.score_candidates`, with the model's saved fusion, if any).

:meth:`Cascade.score_candidates` returns a run over every candidate it was given and scores no other document:
the ``n2`` kept documents carry the cross-encoder's scores; below them, strictly, come the documents the cheap
stage cut (in its order), then those the first stage cut (in its order); their scores are placeholders that only
fix that order (``lowest kept score - 1 - position``).

A cascade is saved beside the model in ``finerank.json`` (key ``cascade``, next to ``fusion``);
:func:`load_scorer` is what ``rerank``, ``evaluate`` and ``serve`` call to get the model's scorer: a
:class:`Cascade` when one is saved (and not turned off), else the plain :class:`Reranker`.
:func:`tune_cascade` chooses the cut-offs on validation lists: nDCG@10 of every setting of a grid and its real
latency per query (one list a call, as served), and the cheapest setting within a tolerance of the full rerank.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.candidates import Candidates
from ..core.errors import FinerankError
from .fused import SPEC_FILE, fuse
from ..io.formats import atomic_write, write_json
from ..core.metrics import parse_metric, per_query
from ..io.models import model_ref
from ..core.records import Run
from .cross_encoder import Ranked, Reranker, _ranked
from ..retrieval.dense import BiEncoder

CHEAP = ("bm25", "bi", "hybrid")
N1_GRID = (None, 50, 30)
N2_GRID = (5, 10, 15, 20, 30, 50)
log_ = logging.getLogger("finerank")


# ------------------------------------------------------------------------------------------------ the spec
@dataclass
class CascadeSpec:
    """The cut-offs: ``n1`` documents of the first stage go to the cheap scorer (None = all), its best ``n2`` to the
    cross-encoder (None = all: the full rerank). ``cheap``: bm25, bi or hybrid (``hybrid_weight`` on the first
    stage). ``tuned_on``: what chose it (queries, tolerance, the measured setting)."""

    n2: int | None
    n1: int | None = None
    cheap: str = "bm25"
    bi_encoder: str = "minilm-l6"
    hybrid_weight: float = 0.3
    tolerance: float | None = None
    tuned_on: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.cheap not in CHEAP:
            raise FinerankError(f"unknown cheap scorer '{self.cheap}'", hint=f"choose one of: {', '.join(CHEAP)}")
        for name in ("n1", "n2"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise FinerankError(f"cascade {name} must be a positive integer or None, got {v!r}")
        if self.cheap == "bm25":
            self.n1 = None  # no model in the cheap stage: nothing to cut before it
        if self.n1 is not None and self.n2 is not None and self.n2 > self.n1:
            raise FinerankError(f"cascade n2 ({self.n2}) is larger than n1 ({self.n1})",
                                hint="the cross-encoder sees at most what the cheap stage kept")
        if not 0.0 <= self.hybrid_weight <= 1.0:
            raise FinerankError(f"hybrid_weight must be in [0, 1], got {self.hybrid_weight}")

    @property
    def full(self) -> bool:
        return self.n2 is None

    def label(self) -> str:
        if self.full:
            return "full rerank"
        return f"{self.cheap}" + (f" top {self.n1}" if self.n1 else "") + f" -> cross-encoder top {self.n2}"

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, model_dir: str | Path) -> Path:
        """Write the spec into ``model_dir/finerank.json`` (key ``cascade``), atomically, keeping every other key."""
        path = Path(model_dir) / SPEC_FILE
        data = _read_spec_file(path) if path.exists() else {}
        data["cascade"] = self.to_dict()
        write_json(path, data)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "CascadeSpec | None":
        path = Path(model_dir) / SPEC_FILE
        if not path.exists():
            return None
        data = _read_spec_file(path).get("cascade")
        if not data:
            return None
        try:
            return cls(**data)
        except TypeError as e:
            raise FinerankError(f"{path}: the 'cascade' entry is not a cascade spec ({e})",
                                hint="tune it again with finerank cascade tune --save") from None

    @staticmethod
    def remove(model_dir: str | Path) -> bool:
        """Take the cascade out of ``model_dir/finerank.json`` (other keys stay); whether there was one."""
        path = Path(model_dir) / SPEC_FILE
        if not path.exists():
            return False
        data = _read_spec_file(path)
        if data.pop("cascade", None) is None:
            return False
        write_json(path, data)
        return True


def _read_spec_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FinerankError(f"{path}: not readable JSON ({e})", hint="restore the file or delete it") from None
    if not isinstance(data, dict):
        raise FinerankError(f"{path}: expected a JSON object")
    return data


# ------------------------------------------------------------------------------------------------ the cascade
class Cascade:
    """A reranker that runs ``spec``'s stages: cheap scorer on the first stage's top ``n1``, cross-encoder on the
    cheap scorer's top ``n2``. ``reranker``: a :class:`Reranker` (its fusion applies to the kept documents);
    ``bi``: the bi-encoder of the cheap stage (default: ``spec.bi_encoder``, loaded on first use).

    ``stats`` counts ``ce_pairs`` (documents the cross-encoder scored), ``skipped`` (documents it did not) and
    ``cheap_docs`` (documents the bi-encoder scored)."""

    def __init__(self, spec: CascadeSpec, reranker: Reranker, bi: BiEncoder | None = None):
        self.spec = spec
        self.reranker = reranker
        self._bi = bi
        self._warned = False
        self.stats = {"ce_pairs": 0, "skipped": 0, "cheap_docs": 0}

    @property
    def bi(self) -> BiEncoder:
        if self._bi is None:
            self._bi = BiEncoder(self.spec.bi_encoder)
        return self._bi

    # the Reranker's face, so that serve and rerank_file take either
    @property
    def backend(self):
        return self.reranker.backend

    @property
    def kind(self) -> str:
        return self.reranker.kind

    @property
    def model_dir(self):
        return self.reranker.model_dir

    def describe(self) -> dict:
        return {**self.reranker.describe(), "cascade": {k: v for k, v in self.spec.to_dict().items()
                                                        if k != "tuned_on"}}

    def ce_pairs(self, n: int) -> int:
        """Documents of a list of ``n`` that the cross-encoder scores."""
        return min(n, *(v for v in (self.spec.n1, self.spec.n2) if v is not None)) if not self.spec.full else n

    # ------------------------------------------------------------------------------------------- scoring
    def _cheap_run(self, stage1: Candidates) -> Run:
        spec = self.spec
        if spec.cheap == "bm25":
            return stage1.first_stage_run()
        bi = self.bi.score_candidates(stage1)
        if spec.cheap == "bi":
            return bi
        if not stage1.scored and not self._warned:
            self._warned = True
            log_.warning("the cascade's hybrid stage has no first-stage scores with these candidates: it uses "
                         "their order (rank) in their place")
        return fuse({"bm25": stage1.first_stage_run(), "bi": bi},
                    {"bm25": spec.hybrid_weight, "bi": 1.0 - spec.hybrid_weight})

    def score_candidates(self, cands: Candidates, *, progress: bool = False, desc: str = "reranking") -> Run:
        """Every candidate of every list scored (query id -> doc id -> score); the cross-encoder scores only each
        list's ``n2`` kept documents, which rank above the rest."""
        spec = self.spec
        if spec.full:
            run = self.reranker.score_candidates(cands, progress=progress, desc=desc)
            self.stats["ce_pairs"] += cands.n_pairs
            return run
        stage1 = cands.top(spec.n1) if spec.n1 else cands
        long = stage1.subset([q for q, ds in stage1.docs.items() if len(ds) > spec.n2])  # the lists to cut
        cheap = self._cheap_run(long) if long.docs else {}
        kept_docs: dict[str, list[tuple[str, str]]] = {}
        below: dict[str, list[str]] = {}
        for q, ds in stage1.docs.items():
            if q not in cheap:
                order = [d for d, _ in ds]
            else:
                pos = {d: i for i, (d, _) in enumerate(ds)}
                order = sorted(pos, key=lambda d: (-cheap[q][d], pos[d]))
            keep = set(order[: spec.n2])
            kept_docs[q] = [(d, t) for d, t in ds if d in keep]
            below[q] = order[spec.n2:] + [d for d, _ in cands.docs[q][len(ds):]]
        ids = {q: {d for d, _ in ds} for q, ds in kept_docs.items()}
        kept = Candidates(cands.queries, kept_docs,
                          {q: {d: s for d, s in sc.items() if d in ids[q]}
                           for q, sc in cands.first_stage.items() if q in ids},
                          cands.qrels, cands.source)
        ce_run = self.reranker.score_candidates(kept, progress=progress, desc=desc)
        run: Run = {}
        for q in cands.docs:
            scores = dict(ce_run.get(q, {}))
            floor = min(scores.values()) if scores else 0.0
            for i, d in enumerate(below[q]):
                scores[d] = floor - 1.0 - i
            run[q] = scores
        n_kept = kept.n_pairs
        self.stats["ce_pairs"] += n_kept
        self.stats["skipped"] += cands.n_pairs - n_kept
        if spec.cheap != "bm25":
            self.stats["cheap_docs"] += long.n_pairs
        return run

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None,
               first_stage: Sequence[float | None] | None = None) -> list[Ranked]:
        """The documents' indices and scores, best first, the top ``top_k`` when given (as :meth:`Reranker.rerank`);
        the documents' order is the first stage's."""
        if not isinstance(query, str):
            raise FinerankError(f"query must be a string, got {type(query).__name__}")
        ids = [str(i) for i in range(len(documents))]
        first = ({"q": {i: float(s) for i, s in zip(ids, first_stage) if s is not None}}
                 if first_stage is not None else {})
        cands = Candidates({"q": query}, {"q": list(zip(ids, documents))}, first, {}, "request")
        run = self.score_candidates(cands)
        scores = np.array([run["q"][i] for i in ids], dtype=np.float32)
        return _ranked(scores, top_k)


def load_scorer(model, *, cascade: bool = True, **reranker_options) -> Reranker | Cascade:
    """The scorer ``rerank``, ``evaluate`` and ``serve`` use for ``model``: its :class:`Cascade` when one is saved
    with it (``finerank.json``) and ``cascade`` is true, else the :class:`Reranker`. ``model`` may be a Reranker or a
    Cascade already."""
    if isinstance(model, Cascade):
        return model if cascade else model.reranker
    rr = model if isinstance(model, Reranker) else Reranker(model, **reranker_options)
    if not cascade or rr.model_dir is None or not rr.model_dir.is_dir():
        return rr
    spec = CascadeSpec.load(rr.model_dir)
    return Cascade(spec, rr) if spec is not None and not spec.full else rr


def ce_pairs(scorer, n: int) -> int:
    """Documents of an ``n``-document list that ``scorer`` (a Reranker or a Cascade) runs the cross-encoder on."""
    return scorer.ce_pairs(n) if isinstance(scorer, Cascade) else n


# ------------------------------------------------------------------------------------------------ tuning
class _MemoBackend:
    """A backend that scores each distinct (query, text) input once: the quality sweep re-scores the same heads."""

    def __init__(self, backend):
        self.inner = backend
        self.kind = backend.kind
        self.tokenizer = backend.tokenizer
        self.model_max_length = backend.model_max_length
        self.source = backend.source
        self.memo: dict[tuple[str, str], float] = {}

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        need = list(dict.fromkeys(p for p in pairs if p not in self.memo))
        if need:
            self.memo.update(zip(need, (float(s) for s in self.inner(need))))
        return np.fromiter((self.memo[p] for p in pairs), dtype=np.float32, count=len(pairs))


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
         *, bi_encoder: str = "minilm-l6", hybrid_weight: float = 0.3) -> list[CascadeSpec]:
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


def tune_cascade(model, val_candidates: Candidates | str, *, n1: Sequence[int | None] = N1_GRID,
                 n2: Sequence[int] = N2_GRID, cheap: Sequence[str] = ("bm25", "hybrid"),
                 bi_encoder: str = "minilm-l6", hybrid_weight: float = 0.3, tolerance: float = 0.01,
                 latency_budget_ms: float | None = None, latency_queries: int = 20, metric: str = "nDCG@10",
                 judgments: str | None = None, split: str | None = None, out: str | Path | None = None,
                 save: bool = False, seed: int = 0, log=print, **reranker_options) -> CascadeTuning:
    """Choose a cascade's cut-offs on validation candidate lists.

    Every setting of the grid (:func:`grid`; the full rerank is the reference) is scored on all lists for
    ``metric`` (the cross-encoder's score of an input is computed once and reused across settings), and timed per
    query on ``latency_queries`` lists (a seeded sample; each list one call, as ``serve`` scores a request;
    tokenization, the bi-encoder and the cross-encoder included; settings interleaved query by query so that a
    busy CPU hits them alike; one warm-up call first). The choice: the lowest p50 latency among the settings whose
    ``metric`` is at least ``(1 - tolerance)`` x the full rerank's and, with ``latency_budget_ms``, whose p50 is
    within it (ties: fewer cross-encoder pairs). ``out`` gets ``cascade-tuning.json`` and ``cascade-tuning.png``;
    ``save`` writes the chosen spec into the model's ``finerank.json``.
    """
    if not 0.0 <= tolerance < 1.0:
        raise FinerankError(f"tolerance must be in [0, 1), got {tolerance}", hint="0.01 = within 1% of the full rerank")
    if latency_queries < 1:
        raise FinerankError(f"latency_queries must be at least 1, got {latency_queries}")
    if isinstance(val_candidates, Candidates):
        cands = val_candidates
    else:
        cands = Candidates.from_file(val_candidates)
    if judgments:
        cands.with_judgments(judgments, split)
    if not cands.qrels:
        raise FinerankError(f"{cands.source}: the validation lists carry no labels, so quality cannot be measured",
                            hint="give labeled candidates (finerank data candidates), or --judgments COLLECTION")
    metric = str(parse_metric(metric))
    reranker = model.reranker if isinstance(model, Cascade) else (
        model if isinstance(model, Reranker) else Reranker(model, **reranker_options))
    specs = grid(n1, n2, cheap, bi_encoder=bi_encoder, hybrid_weight=hybrid_weight)
    if any(s.cheap == "hybrid" for s in specs) and not cands.scored:
        raise FinerankError(f"{cands.source}: the hybrid cheap stage needs first-stage (BM25) scores",
                            hint="make the lists with finerank data candidates, or use --cheap bm25,bi")

    # quality: one code path (Cascade.score_candidates), the cross-encoder's and bi-encoder's scores memoised
    memo_rr = copy.copy(reranker)
    memo_rr.backend = _MemoBackend(reranker.backend)
    memo_rr.stats = dict(reranker.stats)
    bi_memo = BiEncoder(bi_encoder, cache_documents=True)
    lens = [len(ds) for ds in cands.docs.values()]
    rows = []
    log(f"cascade tuning: {len(specs)} settings on {len(cands.docs)} validation lists ({cands.n_pairs} pairs)")
    for spec in specs:
        casc = Cascade(spec, memo_rr, bi_memo)
        run = casc.score_candidates(cands)
        pq = per_query(cands.qrels, run, [metric])[metric]
        rows.append({"setting": spec.label(), "cheap": None if spec.full else spec.cheap, "n1": spec.n1,
                     "n2": spec.n2, metric: float(np.mean(list(pq.values()))) if pq else 0.0,
                     "ce_pairs": casc.stats["ce_pairs"] / max(1, len(lens)),
                     "cheap_docs": casc.stats["cheap_docs"] / max(1, len(lens)), "_pq": pq})

    # latency: real calls, one list a call, uncached scorers sharing the loaded models
    qids = sorted(cands.docs)
    import random

    sample = sorted(random.Random(seed).sample(qids, min(latency_queries, len(qids))))
    lists = {q: cands.subset([q]) for q in sample}
    bi_live = BiEncoder(bi_memo.model) if any(s.cheap in ("bi", "hybrid") for s in specs) else None
    live = [Cascade(spec, reranker, bi_live) for spec in specs]
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

    full = rows[0]
    floor = (1.0 - tolerance) * full[metric]
    for row in rows:
        row["retained"] = row[metric] / full[metric] if full[metric] else None
        row["within_tolerance"] = bool(row[metric] >= floor - 1e-12)
        row["under_budget"] = latency_budget_ms is None or row["p50_ms"] <= latency_budget_ms
        row["chosen"] = False
        row.pop("_pq")
    eligible = [i for i, r in enumerate(rows) if r["within_tolerance"] and r["under_budget"]]
    chosen = None
    if eligible:
        best = min(eligible, key=lambda i: (rows[i]["p50_ms"], rows[i]["ce_pairs"], i))
        rows[best]["chosen"] = True
        chosen = copy.deepcopy(specs[best])
        chosen.tolerance = tolerance
        chosen.tuned_on = {"queries": len(cands.docs), "source": cands.source, "metric": metric,
                           "latency_queries": len(sample), "latency_budget_ms": latency_budget_ms,
                           "full": {k: full[k] for k in (metric, "ce_pairs", "p50_ms", "p95_ms")},
                           "chosen": {k: rows[best][k] for k in (metric, "ce_pairs", "p50_ms", "p95_ms")}}
        r = rows[best]
        line = (f"cascade: no cheaper setting is within {tolerance:.1%} of the full rerank's {metric} "
                f"({full[metric]:.4f}): keep the full rerank") if chosen.full else (f"cascade: {chosen.label()}: {metric} {r[metric]:.4f} ({r['retained']:.1%} of the full rerank's "
                f"{full[metric]:.4f}), {r['ce_pairs']:.1f} cross-encoder pairs a query instead of "
                f"{full['ce_pairs']:.1f}, p50 {r['p50_ms']:.0f} ms instead of {full['p50_ms']:.0f} ms")
    else:
        line = (f"cascade: no setting is within {tolerance:.1%} of the full rerank's {metric} "
                f"({full[metric]:.4f})" + (f" and under {latency_budget_ms:g} ms p50" if latency_budget_ms else ""))
    result = CascadeTuning(rows, chosen, line, metric, tolerance, latency_budget_ms, len(cands.docs), len(sample),
                           str(reranker.backend.source))
    if out is not None:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "cascade-tuning.json", result.to_dict())
        plot_tuning(result, d / "cascade-tuning.png")
        result.files = {"table": str(d / "cascade-tuning.json"), "plot": str(d / "cascade-tuning.png")}
    if save:
        if chosen is None:
            raise FinerankError(line + ": nothing to save", hint="raise --tolerance or --latency-budget-ms")
        if reranker.model_dir is None or not reranker.model_dir.is_dir():
            raise FinerankError(f"{reranker.backend.source}: not a model folder, so the cascade cannot be saved "
                                "with it", hint="tune a local model folder (a run, best/ or an export)")
        result.files["spec"] = str(chosen.save(reranker.model_dir))
    return result


def plot_tuning(result: CascadeTuning, path: Path) -> Path:
    """Quality vs p50 latency, one point a setting, the full rerank and the chosen setting marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result.metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"bm25": "tab:blue", "bi": "tab:orange", "hybrid": "tab:green"}
    for cheap, color in colors.items():
        pts = [r for r in result.rows if r["cheap"] == cheap]
        if pts:
            ax.scatter([r["p50_ms"] for r in pts], [r[m] for r in pts], color=color, label=f"{cheap} -> CE top n2",
                       s=28)
            for r in pts:
                ax.annotate(f"{r['n2']}" + (f"/{r['n1']}" if r["n1"] else ""), (r["p50_ms"], r[m]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    full = result.full
    ax.scatter([full["p50_ms"]], [full[m]], color="black", marker="s", s=40, label="full rerank")
    ax.axhline((1 - result.tolerance) * full[m], color="gray", ls="--", lw=0.8,
               label=f"{1 - result.tolerance:.0%} of full")
    if result.latency_budget_ms:
        ax.axvline(result.latency_budget_ms, color="tab:red", ls=":", lw=0.8, label="latency budget")
    c = result.chosen_row
    if c is not None:
        ax.scatter([c["p50_ms"]], [c[m]], marker="*", s=260, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label="chosen")
    ax.set_xlabel("p50 latency per query (ms, one list a call)")
    ax.set_ylabel(m)
    ax.set_title(f"cascade settings on {result.queries} validation queries", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
