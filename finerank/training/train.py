"""``finerank.train(cfg)``: the trainer ``cfg.arch`` names (:data:`RECIPES`), run by the one skeleton
(:func:`finerank.training.skeleton.run_recipe`); :func:`summarize`, what a run did for printing."""

from __future__ import annotations

import statistics

from ..core.metrics import DEFAULT_METRICS
from .bi_encoder import BiEncoderRecipe
from .config import TrainConfig
from .cross_encoder import CrossEncoderRecipe
from .distill import DistillRecipe
from .run import TrainResult
from .skeleton import run_recipe

RECIPES = {"cross-encoder": CrossEncoderRecipe, "bi-encoder": BiEncoderRecipe,  # TrainConfig.arch -> its recipe
           "distill": DistillRecipe}  # a DistillConfig (finerank.training.distill)


def train(cfg: TrainConfig | None = None, *, progress: bool = True, on_warning=None, **options) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``, validating on ``cfg.val``; returns what happened (a BiTrainResult
    for ``arch="bi-encoder"``, a DistillResult for a DistillConfig).

    Options may be given as a TrainConfig or as keyword arguments (``train(model=..., train=..., val=..., out=...)``).
    The run folder is locked (``OUT/.lock``) while the run writes it; a fresh run into a non-empty folder needs
    ``overwrite`` (or ``resume``); ``resume`` of a run that finished does nothing and returns its recorded result
    (``finished_before`` set). See :func:`finerank.training.run.open_run_folder`.
    """
    cfg = (cfg or TrainConfig(**options)).validate()
    return run_recipe(RECIPES[cfg.arch](), cfg, progress=progress, on_warning=on_warning)


LIKELY_CAUSES = (
    "learning rate too high (forgetting) or too low (no movement): stay within 2e-5..5e-5",
    "too few training pairs, or no hard negatives: finerank data mine",
    "leakage or near-duplicate queries between train and validation: finerank data check-leakage",
    "label noise: conflicting labels for the same pair (finerank data inspect)",
)


def summarize(result: TrainResult) -> dict:
    """Base vs best on validation, absolute and relative, for printing."""
    rows = []
    for m in DEFAULT_METRICS:
        b, f = result.base_metrics.get(m), result.best_metrics.get(m)
        if b is None or f is None:
            continue
        rows.append({"metric": m, "base": b, "best": f, "delta": f - b, "relative": (f - b) / b if b else None})
    secs = [h["seconds"] for h in result.history if h["seconds"]]
    return {"rows": rows, "improved": result.improved, "causes": [] if result.improved else list(LIKELY_CAUSES),
            "median_eval_seconds": statistics.median(secs) if secs else None}
