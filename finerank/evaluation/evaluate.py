"""``finerank evaluate``: score held-out candidate lists with each system and compare them side by side.

Every system is a Scorer (:mod:`finerank.scorers.base`) and scores the same candidate lists; ir-measures scores
them (unjudged = not relevant, ties broken by doc id); each system is compared with the first baseline per query
(:mod:`finerank.evaluation.significance`) and its query dependence checked
(:func:`finerank.evaluation.dependence.check`). ``--out DIR`` writes ``metrics.json``, ``report.md``,
``report.html``, one TREC run per system and PNG plots (:mod:`finerank.report.files`). The results also go into the
card (``README.md``) of each local finerank model evaluated (:func:`finerank.report.card.update_cards`).

A system is a Scorer, or a spec string :func:`finerank.scorers.load.load_scorer` builds one from: ``bm25`` (the
first stage's own order, from the scores the candidates carry), ``hybrid[:W][@MODEL]`` (W x z-scored BM25 + (1-W) x
z-scored bi-encoder cosine; W by default ``HYBRID_WEIGHT``, MODEL ``bi_encoder``; no training), ``bi:NAME`` (a
sentence-transformers embedding model, cosine of query and document), ``cross:NAME`` (a cross-encoder; a fresh head
on an encoder), ``raw:NAME`` (a model saved with a fusion, its cross-encoder alone), or a plain NAME: a bi-encoder
when the folder is a sentence-transformers embedding model (``minilm-l6`` is one), else a cross-encoder.
``LABEL=SPEC`` names a system for the tables; a Scorer's label is its name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.environment import CORE_PACKAGES, versions
from ..core.errors import FinerankError
from ..core.metrics import DEFAULT_METRICS, parse_metric, per_query
from ..core.records import Run
from ..data.candidates import Candidates
from ..io.files import DEFAULT_MAX_LABEL
from ..io.outputs import written_together
from ..report.card import update_cards
from ..report.files import _safe as run_file, report_outputs, write_report
from ..scorers.base import Scorer
from ..scorers.calibration import ece, probability, reliability
from ..scorers.load import calibration_of, check_scorer, load_scorer
from .dependence import CHECK_LISTS, check, ignores_query
from .significance import Comparison, compare


@dataclass
class SystemResult:
    name: str
    kind: str                 # the Scorer's kind: bm25, bi-encoder, hybrid, cross-encoder, fused, cascade
    model: str | None         # the model it names (describe()'s "model"), None for BM25
    metrics: dict[str, float]
    seconds: float
    pairs_per_second: float | None
    run: Run = field(repr=False, default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    baseline: bool = False
    query_dependence: dict | None = None  # finerank.core.metrics.query_dependence on the checked lists
    scorer: dict = field(default_factory=dict)  # the Scorer's describe(): its kind and parts
    scale: str | None = None                    # the Scorer's scale (finerank.scorers.base.SCALES)
    query_warning: str | None = None            # finerank.evaluation.dependence.ignores_query's message, if any
    calibration: dict | None = None             # a calibrated model's ECE on these lists, before and after its map


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
                                 "pairs_per_second": s.pairs_per_second, "query_dependence": s.query_dependence,
                                 "scorer": s.scorer, "scale": s.scale,
                                 **({"calibration": s.calibration} if s.calibration else {})}
                        for s in self.systems},
            "comparisons": [asdict(c) for c in self.comparisons],
            "per_query": {s.name: s.per_query for s in self.systems},
            "versions": self.versions,
        }


# ----------------------------------------------------------------------------------------------- systems
def system_label(name: str) -> tuple[str, str]:
    """``LABEL=SPEC`` names a system for the tables (``fine-tuned=runs/x/best``); else the spec is the label."""
    label, eq, spec = name.partition("=")
    if eq and label and not any(c in label for c in "/:\\"):
        return label, spec
    return name, name


def _spec(system) -> str | Scorer:
    return system_label(system)[1] if isinstance(system, str) else system


def _is_bm25(system) -> bool:
    s = _spec(system)
    return s == "bm25" if isinstance(s, str) else getattr(s, "scale", None) == "bm25"


def systems_to_score(models: list, baselines, cands: Candidates) -> tuple[list, int]:
    """The systems in order (baselines first, BM25's own order among them when the candidates carry scores and no
    baseline is BM25, then the models not already there) and how many are baselines."""
    systems = list(baselines)
    if cands.scored and not any(_is_bm25(s) for s in systems):
        systems.append("bm25")
    n_baselines = len(systems)
    systems += [m for m in models if m not in systems]
    if not systems:
        raise FinerankError("nothing to evaluate", hint="pass --model")
    labels = [system_label(s)[0] if isinstance(s, str) else s.name for s in systems]
    for s, label in zip(systems, labels):  # "bm25" names the first stage's own order, whatever else is scored
        if label.casefold() == "bm25" and not _is_bm25(s):
            raise FinerankError(f"system '{s}': the name '{label}' is reserved for the BM25 baseline",
                                hint="give the model another label: LABEL=SPEC")
    files = [run_file(n).casefold() for n in labels]  # names that would share a runs/NAME.trec file collide too
    if twice := sorted({n for n, f in zip(labels, files) if files.count(f) > 1}):
        raise FinerankError(f"two systems are named '{twice[0]}'"
                            + ("" if labels.count(twice[0]) > 1 else " (or names that differ only in case or "
                               "punctuation, which share a file in the report's runs/)"),
                            hint="name each one: LABEL=SPEC")
    return systems, n_baselines


def _inputs(system) -> str | None:
    """What a system reads from disk, for the report's output check: a spec, or a Scorer's model."""
    spec = _spec(system)
    return spec if isinstance(spec, str) else spec.describe().get("model")


def _load(system, options: dict, seed: int) -> tuple[str, Scorer]:
    """(its label, the Scorer) of a system: a Scorer (its name the label), a spec or ``LABEL=SPEC`` (loaded by
    :func:`finerank.scorers.load.load_scorer`)."""
    if not isinstance(system, str):
        return system.name, system
    label, spec = system_label(system)
    import torch

    torch.manual_seed(seed)  # a fresh head is random: the same one every run
    scorer = load_scorer(spec, **options)
    check_scorer(scorer, label)  # every part scores a probe pair with a finite number, or exit 2
    return label, scorer


def load_candidates(dataset: str | Candidates, *, candidates_run: str | None = None, split: str | None = None,
                    top_k: int | None = None, judgments: str | None = None,
                    max_label: float = DEFAULT_MAX_LABEL) -> Candidates:
    """The labeled candidate lists an evaluation scores (see :func:`evaluate`)."""
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
    return cands


def score_system(name: str, scorer: Scorer, cands: Candidates, measures, *, query_check: int = CHECK_LISTS,
                 seed: int = 0, baseline: bool = False, log=print) -> SystemResult:
    """One system's row: its run on ``cands``, metrics per query and mean, time (and pairs a second, when it runs
    a model), and its query dependence (:func:`finerank.evaluation.dependence.check`)."""
    about = scorer.describe()
    model = about.get("model")
    if model:
        log(f"scoring {cands.n_pairs} pairs with {name}: {scorer.name} ({about.get('kind')}, scale {scorer.scale})")
    t = time.time()
    run = scorer.score_candidates(cands, progress=True)
    secs = time.time() - t
    pq = per_query(cands.qrels, run, measures)
    agg = {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in pq.items()}
    dep = check(scorer, cands, n=query_check, seed=seed, run=run)
    return SystemResult(name, about.get("kind", type(scorer).__name__), model, agg, secs,
                        round(cands.n_pairs / max(secs, 1e-9), 1) if model else None, run, pq, baseline=baseline,
                        query_dependence=dep, scorer=about, scale=scorer.scale,
                        query_warning=ignores_query(name, dep) if dep else None,
                        calibration=calibration_check(scorer, cands, run))


def calibration_check(scorer: Scorer, cands: Candidates, run: Run) -> dict | None:
    """For a scorer with a saved calibration: the ECE on these judged lists (relevant: label >= the map's threshold)
    of the uncalibrated map and of the saved one, with their reliability bins; None without a calibration."""
    cal = calibration_of(scorer)
    if cal is None:
        return None
    pairs = [(run[q][d], cands.qrels[q].get(d, 0) >= cal.threshold) for q, docs in cands.docs.items()
             if q in cands.qrels for d, _ in docs]
    scores, relevant = [s for s, _ in pairs], [r for _, r in pairs]
    before, after = probability(scores, None, scorer.scale), cal.apply(scores)
    return {"pairs": len(pairs), "ece_before": round(ece(before, relevant), 6),
            "ece_after": round(ece(after, relevant), 6), "reliability": {"before": reliability(before, relevant),
                                                                         "after": reliability(after, relevant)}}


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(models: str | Scorer | list, dataset: str | Candidates, *, baselines: list | tuple = (),
             metrics=DEFAULT_METRICS, candidates_run: str | None = None, split: str | None = None,
             top_k: int | None = None, judgments: str | None = None, out: str | None = None,
             max_length: int | None = None, batch_size: int = 32, seed: int = 0, query_check: int = CHECK_LISTS,
             max_label: float = DEFAULT_MAX_LABEL, card: bool = True, cascade: bool = True,
             bi_encoder: str = "minilm-l6", tuned_bi_encoder: str | None = None, log=print) -> EvaluationReport:
    """Score the candidate lists of ``dataset`` with each baseline and model (Scorers or spec strings, see the
    module); compare each with the first baseline.

    ``query_check`` lists (a seeded sample; 0 turns it off) are also scored under other queries' texts by every
    system (:func:`finerank.evaluation.dependence.check`), which puts each system's query dependence in the report.

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
    models = [models] if isinstance(models, (str, Scorer)) else list(models)
    if tuned_bi_encoder:
        models += [f"bi-encoder (tuned)=bi:{tuned_bi_encoder}", f"hybrid (tuned)=hybrid@{tuned_bi_encoder}"]
    inputs = [None if isinstance(dataset, Candidates) else dataset, candidates_run, judgments, *map(_inputs, models),
              tuned_bi_encoder]
    if out:  # before any work: the report's files are never an input, and can be written
        report_outputs(out, inputs)
    cands = load_candidates(dataset, candidates_run=candidates_run, split=split, top_k=top_k, judgments=judgments,
                            max_label=max_label)
    measures = [parse_metric(m) if isinstance(m, str) else m for m in metrics]
    systems, n_baselines = systems_to_score(models, baselines, cands)
    if out:  # and its runs/NAME.trec, now that the names are known: before any model is loaded
        report_outputs(out, inputs, [system_label(s)[0] if isinstance(s, str) else s.name for s in systems])
    options = {"max_length": max_length, "batch_size": batch_size, "bi_encoder": bi_encoder, "cascade": cascade,
               "encoders": {}}  # one BiEncoder a model: documents encoded once, for the hybrid and the check too
    results: list[SystemResult] = []
    for i, system in enumerate(systems):
        name, scorer = _load(system, options, seed)
        results.append(score_system(name, scorer, cands, measures, query_check=query_check, seed=seed,
                                    baseline=i < n_baselines, log=log))
    names = [str(m) for m in measures]
    report = EvaluationReport(cands.source, len(cands.qrels), cands.n_pairs, names, results[0].name, results,
                              compare(results[0], results[1:], names, sorted(cands.qrels), seed=seed),
                              versions(CORE_PACKAGES), candidates=cands)
    if out:
        with written_together():  # every file of the report, or none
            write_report(report, out)
    if card:  # the results go into the card (README.md) of each local finerank model evaluated
        update_cards(report, log=log)
    return report
