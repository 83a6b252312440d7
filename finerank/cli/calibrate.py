"""``finerank calibrate``: fit the map of a model's score to P(relevant) on validation lists and save it."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ..evaluation.calibrate import FOLDS
from ..evaluation.calibrate import calibrate as run_calibrate
from .common import MaxLabelOpt, NoCascadeOpt, out


def calibrate(
    model: str = typer.Option(..., "--model", help="Model: run folder or model folder (its fusion and cascade apply)."),
    data: str = typer.Option(..., "--data", help="Judged validation lists: pairs JSONL with labels, or a TREC run "
                             "with --collection."),
    collection: Optional[str] = typer.Option(None, "--collection", help="The collection of a TREC run's texts and "
                                             "judgments."),
    threshold: float = typer.Option(1.0, "--threshold", help="A label >= this counts as relevant."),
    folds: int = typer.Option(FOLDS, "--folds", help="Folds of queries for the held-out ECE (below 2: in-sample)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Write calibration.json and calibration.png here."),
    no_save: bool = typer.Option(False, "--no-save", help="Measure only; leave the model's finerank.json alone."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    max_label: float = MaxLabelOpt,
    no_cascade: bool = NoCascadeOpt,
):
    """Calibrate relevance_score: a Platt map of the shipped score to P(relevant), ECE before and after."""
    result = run_calibrate(model, data, collection=collection, threshold=threshold, folds=folds, out=out_dir,
                           save=not no_save, max_label=max_label, cascade=not no_cascade)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    c = result.calibration
    where = f"{c.folds} held-out folds of queries" if c.folds else "in-sample"
    sign = "-" if c.b < 0 else "+"
    out.print(f"calibrated the {c.scorer} score ({c.scale}) on {c.queries} queries, {c.pairs} documents, "
              f"{c.positives} relevant (label >= {c.threshold:g}): "
              f"P = 1 / (1 + exp(-({c.a:.4g} x score {sign} {abs(c.b):.4g})))")
    out.print(f"ECE ({where}): {c.ece_before:.4f} uncalibrated -> {c.ece_after:.4f} calibrated")
    for f in result.files:
        out.print(f"wrote {f}")
    out.print(f"saved in {result.saved}" if result.saved else "not saved (--no-save)")
