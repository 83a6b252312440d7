"""``finerank calibrate``: fit the map of a model's shipped score (fused or not, cascaded or not) to P(relevant) on
judged validation lists, measure it on held-out folds of queries, and save it with the model.

The expected calibration error (ECE) is measured before (the uncalibrated map: the logistic of the raw score, see
:func:`finerank.scorers.calibration.probability`) and after, each query scored by a map fitted on the other folds'
queries; the map saved is then fitted on every list. ``serve`` answers ``relevance_score`` through it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import DataError, FinerankError, ModelError
from ..core.records import Run
from ..data.candidates import Candidates
from ..io.files import DEFAULT_MAX_LABEL
from ..io.models import resolve_model
from ..io.outputs import check_outputs, write_json, written_together
from ..report.plots import plot_reliability
from ..scorers.base import Scorer
from ..scorers.calibration import Calibration, ece, fit_platt, probability, reliability
from ..scorers.load import load_scorer
from ..scorers.spec import save_part

FOLDS = 5


@dataclass
class CalibrationResult:
    calibration: Calibration
    saved: str | None = None          # the finerank.json written, when saved
    files: list[str] = field(default_factory=list)   # calibration.json and calibration.png under ``out``
    reliability: dict[str, list[dict]] = field(default_factory=dict)  # "before" / "after": held-out bins

    def to_dict(self) -> dict:
        return {"calibration": self.calibration.to_dict(), "saved": self.saved, "files": self.files,
                "reliability": self.reliability}


def _labelled(cands: Candidates, run: Run, threshold: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """qid -> (scores, relevant) of every candidate of a judged list (an unjudged candidate is not relevant)."""
    out = {}
    for qid, docs in cands.docs.items():
        if qid not in cands.qrels:
            continue
        judged = cands.qrels[qid]
        out[qid] = (np.array([run[qid][d] for d, _ in docs], dtype=np.float64),
                    np.array([judged.get(d, 0) >= threshold for d, _ in docs], dtype=bool))
    return out


def calibrate_run(cands: Candidates, run: Run, scorer: Scorer, *, threshold: float = 1.0, folds: int = FOLDS,
                  seed: int = 0, data: str | None = None) -> tuple[Calibration, dict[str, list[dict]]]:
    """The Platt map of ``scorer``'s scores ``run`` of ``cands`` (judged lists) to relevance (label >=
    ``threshold``), with ECE before and after on held-out folds of queries (in-sample with fewer than 2 queries or
    ``folds`` < 2); also the held-out reliability bins, before and after."""
    lists = _labelled(cands, run, threshold)
    if not lists:
        raise DataError(cands.source, None, "label", None, "judged candidate lists (a label on some rows)",
                        hint="calibration fits on labeled validation lists, e.g. finerank data candidates output")
    qids = sorted(lists)
    scores = np.concatenate([lists[q][0] for q in qids])
    relevant = np.concatenate([lists[q][1] for q in qids])
    a, b = fit_platt(scores, relevant)  # refuses lists without both classes
    k = min(folds, len(qids)) if folds >= 2 else 0
    k = k if k >= 2 else 0
    order = qids[:]
    random.Random(seed).shuffle(order)
    held_p, held_y, raw_p = [], [], []
    for f in range(k):
        test = set(order[f::k])
        fit_s = np.concatenate([lists[q][0] for q in qids if q not in test])
        fit_y = np.concatenate([lists[q][1] for q in qids if q not in test])
        try:
            fa, fb = fit_platt(fit_s, fit_y)
        except FinerankError:  # a fold's rest without a relevant document: the base rate
            fa, fb = 0.0, float(np.log((fit_y.mean() + 1e-6) / (1 - fit_y.mean() + 1e-6)))
        t_s = np.concatenate([lists[q][0] for q in sorted(test)])
        held_p.append(Calibration(fa, fb, "", "").apply(t_s))
        held_y.append(np.concatenate([lists[q][1] for q in sorted(test)]))
        raw_p.append(probability(t_s, None, scorer.scale))
    if k:
        after_p, ys, before_p = np.concatenate(held_p), np.concatenate(held_y), np.concatenate(raw_p)
    else:
        after_p, ys = Calibration(a, b, "", "").apply(scores), relevant
        before_p = probability(scores, None, scorer.scale)
    cal = Calibration(a, b, scorer.describe()["kind"], scorer.scale, threshold=float(threshold), queries=len(qids),
                      pairs=int(len(scores)), positives=int(relevant.sum()), folds=k,
                      ece_before=round(ece(before_p, ys), 6), ece_after=round(ece(after_p, ys), 6), data=data)
    return cal, {"before": reliability(before_p, ys), "after": reliability(after_p, ys)}


def model_folder(model) -> Path:
    """The local folder a calibration is saved in (a ModelError for a hub id)."""
    path = Path(resolve_model(str(model)))
    if not path.is_dir():
        raise ModelError(f"{model}: not a local model folder, so the calibration cannot be saved with it",
                         hint="pass --no-save to measure it only, or save the model locally first")
    return path


def calibrate(model, data, *, collection=None, threshold: float = 1.0, folds: int = FOLDS, out=None,
              save: bool = True, max_label: float = DEFAULT_MAX_LABEL, cascade: bool = True, scorer=None,
              progress: bool = False, **options) -> CalibrationResult:
    """Fit and measure the calibration of ``model``'s shipped score on the judged lists in ``data`` (a pairs file
    with labels, or a TREC run over ``collection``); with ``save``, write it into the model's ``finerank.json``;
    with ``out``, write ``calibration.json`` and the reliability plot ``calibration.png`` there. ``scorer``: the
    Scorer to calibrate (default: :func:`load_scorer` of ``model`` with its fusion and cascade)."""
    folder = model_folder(model) if save else None
    files = [Path(out) / "calibration.json", Path(out) / "calibration.png"] if out else []
    check_outputs(files + ([folder / "finerank.json"] if folder else []), [data, collection],
                  folders=[out] if out else [])
    if isinstance(threshold, bool) or not (threshold > 0):
        raise FinerankError(f"threshold must be a label above 0, got {threshold!r}",
                            hint="a judged label >= threshold counts as relevant (default 1)")
    cands = Candidates.from_file(data, collection=collection, max_label=max_label)
    scorer = scorer or load_scorer(model, cascade=cascade, **options)
    run = scorer.score_candidates(cands, progress=progress)
    cal, bins = calibrate_run(cands, run, scorer, threshold=threshold, folds=folds, data=Path(str(data)).name)
    result = CalibrationResult(cal, reliability=bins)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with written_together():
            write_json(files[0], result.to_dict())
            plot_reliability({f"uncalibrated (ECE {cal.ece_before:.3f})": bins["before"],
                              f"Platt (ECE {cal.ece_after:.3f})": bins["after"]}, files[1],
                             title=f"{cal.queries} queries, {cal.pairs} documents"
                                   + (f", {cal.folds} held-out folds" if cal.folds else ", in-sample"))
        result.files = [str(f) for f in files]
    if folder is not None:
        result.saved = str(save_part(folder, "calibration", cal.to_dict())[0])
    return result

