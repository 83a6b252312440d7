"""The pieces finerank hands sentence-transformers' CrossEncoderTrainer: the validation evaluator and the callback
that marks finished checkpoints. Importing this module imports sentence-transformers and transformers, so
:mod:`finerank.train` imports it only when a training run starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from sentence_transformers.evaluation import SentenceEvaluator
from transformers import TrainerCallback

from .candidates import Candidates
from .io import COMPLETE
from .metrics import DEFAULT_METRICS, aggregate
from .rerank import Reranker

PRIMARY = DEFAULT_METRICS[0]      # nDCG@10: the metric that picks the best checkpoint


class RerankingEvaluator(SentenceEvaluator):
    """Reranks each validation list through :meth:`Reranker.score_candidates` (the path ``evaluate`` and ``serve``
    take: windows over long documents, the model's own score scale) and scores it with ir-measures. Positives are
    not forced into the lists: a relevant document the first stage missed counts as missed.

    Metric keys are ir-measures names (``nDCG@10``, ``RR@10``), prefixed with ``name_`` as the Trainer expects."""

    def __init__(self, cands: Candidates, name: str = "val", *, batch_size: int = 32, metrics=DEFAULT_METRICS):
        super().__init__()
        self.cands, self.name, self.batch_size, self.metrics = cands, name, batch_size, list(metrics)
        self.primary_metric = PRIMARY
        self.greater_is_better = True
        self.history: list[dict] = []

    def scores(self, model) -> dict[str, float]:
        """The metrics of ``model`` (a CrossEncoder) on the validation lists, no side effects."""
        run = Reranker(model, batch_size=self.batch_size, fuse=False).score_candidates(self.cands)
        return aggregate(self.cands.qrels, run, self.metrics)

    def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
        t = time.time()
        metrics = self.scores(model)
        self.history.append({"step": steps, "epoch": epoch, **metrics, "seconds": round(time.time() - t, 2)})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class MarkComplete(TrainerCallback):
    """Evaluate (when there is an evaluator) and save at the last step too; mark a checkpoint complete once the
    Trainer has written it, so that ``--resume`` never starts from a half-written one."""

    def __init__(self, evaluate: bool):
        self.evaluate = evaluate

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= state.max_steps:
            control.should_evaluate = self.evaluate
            control.should_save = True

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / COMPLETE).write_text(str(time.time()))
