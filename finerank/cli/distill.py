"""``finerank distill``: a teacher's ranking of unlabeled queries' lists taught to a student cross-encoder, then the
validation table and where the student is (``train --model`` takes it, for the labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..training.distill import DistillConfig, distill as run_distill
from ..training.train import summarize
from .common import (BatchOpt, ConfigOpt, EpochsOpt, EvalStepsOpt, LrOpt, MaxLengthOpt, MaxStepsOpt, OverwriteOpt,
                     PrecisionOpt, RayAddressOpt, RayOpt, RayWorkersOpt, SeedOpt, ValCorpusOpt, out, warn)
from .train import print_validation, print_verdicts


def distill(
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Any scorer: a cross-encoder (hub id or folder), "
                                          "a finerank model (its saved fusion too), hybrid, hybrid:W or "
                                          "hybrid:W@BI_ENCODER (default: hybrid)."),
    student: Optional[str] = typer.Option(None, "--student", help="The model to teach (default: minilm-l6)."),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Collection the lists come from (BEIR folder or "
                                         "cranfield)."),
    queries: Optional[str] = typer.Option(None, "--queries", help="Unlabeled queries: a text file (one a line) or "
                                          "JSONL with 'query' (a query log; never held-out queries)."),
    pseudo_queries: Optional[int] = typer.Option(None, "--pseudo-queries", help="Queries made from the corpus [0]."),
    pseudo_kind: Optional[str] = typer.Option(None, "--pseudo-kind", help="auto (a title, else a sentence), title or "
                                              "sentence (taken out of its document's text); default auto."),
    held_out: Optional[str] = typer.Option(None, "--held-out", help="Pairs file of held-out queries: none of them "
                                           "reaches the student, even if --queries holds it."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="BM25 candidates a list [10]."),
    loss: Optional[str] = typer.Option(None, "--loss", help="mse (auto: the z-scored teacher score a pair), listnet "
                                       "or margin-mse."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="listnet: teacher z-scores / T [1]."),
    val: Optional[str] = typer.Option(None, "--val", help="Labeled validation pairs: they choose the checkpoint."),
    val_corpus: Optional[str] = ValCorpusOpt,
    out_dir: Optional[str] = typer.Option(None, "--out", help="Run folder: teacher-scores.jsonl, checkpoint-N/, best/."),
    config: Optional[Path] = ConfigOpt,
    epochs: Optional[float] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = BatchOpt,
    max_length: Optional[int] = MaxLengthOpt,
    eval_steps: Optional[int] = EvalStepsOpt,
    max_steps: Optional[int] = MaxStepsOpt,
    precision: Optional[str] = PrecisionOpt,
    bi_encoder: Optional[str] = typer.Option(None, "--bi-encoder", help="The hybrid teacher's embedding model when "
                                             "its spec names none (default: minilm-l6)."),
    seed: Optional[int] = SeedOpt,
    ray: bool = RayOpt,
    ray_workers: Optional[int] = RayWorkersOpt,
    ray_address: Optional[str] = RayAddressOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run: cached teacher scores and the "
                                "newest complete checkpoint."),
    overwrite: bool = OverwriteOpt,
):
    """Distill a teacher (any scorer) into a student cross-encoder on unlabeled queries' BM25 lists; fine-tune the
    student on labels afterwards with finerank train --model OUT."""
    cfg = DistillConfig.resolve(
        config, teacher=teacher, model=student, corpus=corpus, queries=queries, pseudo_queries=pseudo_queries,
        pseudo_kind=pseudo_kind, held_out=held_out, top_k=top_k, loss=loss, temperature=temperature, val=val,
        val_corpus=val_corpus, out=out_dir, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        eval_steps=eval_steps, max_steps=max_steps, precision=precision, bi_encoder=bi_encoder, seed=seed,
        ray=ray or None, ray_workers=ray_workers, ray_address=ray_address, resume=resume or None, overwrite=overwrite or None)
    result = run_distill(cfg, on_warning=warn)
    if result.finished_before is not None:
        out.print(f"the run in {escape(result.out_dir)} had finished; student: {escape(result.best_dir)}")
        return
    t = result.teacher
    out.print(f"distilled on {t['queries']} lists ({t['log']} logged queries, {t['pseudo']} pseudo-queries; "
              f"{t['held_out_dropped']} held-out dropped; {t['cached_lists']} teacher lists from the cache); teacher "
              f"{escape(t['name'])} ({t['scale']})" + (f", validation nDCG@10 {t['val_nDCG@10']:.4f}"
                                                        if "val_nDCG@10" in t else ""))
    s = summarize(result)
    print_validation(result, s)
    print_verdicts(result, s)
