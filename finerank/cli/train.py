"""``finerank train``: fine-tune a cross-encoder (or with --arch bi-encoder the first stage's embedding model), then
print validation's base-vs-best table and the verdicts: fusion, query dependence, the hybrid, improvement."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..evaluation.dependence import CHECK_LISTS, ignores_query
from ..training.config import TrainConfig
from ..training.cross_encoder import hybrid_warning
from ..training.run import finish_distributed
from ..training.train import summarize, train as run_train
from .common import (BatchOpt, ConfigOpt, EpochsOpt, EvalStepsOpt, LrOpt, MaxLengthOpt, MaxStepsOpt, OverwriteOpt,
                     PrecisionOpt, SeedOpt, ValCorpusOpt, err, out, warn)


def train(
    model: Optional[str] = typer.Option(None, "--model", help="Hub id, local folder, finerank run, or minilm-l6."),
    arch: Optional[str] = typer.Option(None, "--arch", help="cross-encoder (the reranker) or bi-encoder (the first "
                                       "stage, an embedding model); default cross-encoder."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Training pairs (from data split + data mine)."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation pairs; rows of a query are its candidates."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Run folder: checkpoint-N/, best/, finerank-run.json."),
    config: Optional[Path] = ConfigOpt,
    val_corpus: Optional[str] = ValCorpusOpt,
    val_top_k: Optional[int] = typer.Option(None, "--val-top-k", help="Candidates per validation query with --val-corpus [30]."),
    epochs: Optional[float] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = BatchOpt,
    max_length: Optional[int] = MaxLengthOpt,
    eval_steps: Optional[int] = EvalStepsOpt,
    loss: Optional[str] = typer.Option(None, "--loss", help="auto (graded -> lambda, binary -> bce), bce, lambda."),
    pos_weight: Optional[float] = typer.Option(None, "--pos-weight", help="BCE weight of positives [negatives/positives]."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience in evaluations [3]; 0 = off."),
    max_steps: Optional[int] = MaxStepsOpt,
    seed: Optional[int] = SeedOpt,
    max_label: Optional[float] = typer.Option(None, "--max-label", help="Highest label on the scale (labels are "
                                              "0..max) [4]; 1 = binary, any other label is an error."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in --out."),
    overwrite: bool = OverwriteOpt,
    require_improvement: bool = typer.Option(False, "--require-improvement", help="Exit 1 unless best beats base."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="auto: save a fusion with BM25 + bi-encoder scores "
                                         "when it wins on validation [auto]; off."),
    bi_encoder: Optional[str] = typer.Option(None, "--bi-encoder", help="The bi-encoder fusion uses; a tuned one: "
                                             "its run folder (default minilm-l6)."),
    report_to: Optional[str] = typer.Option(None, "--report-to", help="Experiment tracking: none (the default), "
                                            "tensorboard (events in OUT/runs/), mlflow or wandb; each needs its extra."),
    balance: Optional[bool] = typer.Option(None, "--balance/--no-balance", help="Add negatives so that each positive "
                                           "document is as often another query's negative [on]."),
    length_buckets: Optional[bool] = typer.Option(None, "--length-buckets/--no-length-buckets", help="Batch pairs "
                                                  "of similar token length together (less padding) [off]."),
    query_check: Optional[int] = typer.Option(None, "--query-check", help="Validation lists the kept model also "
                                              f"scores under another query's text [{CHECK_LISTS}]; 0 = off."),
    precision: Optional[str] = PrecisionOpt,
):
    """Fine-tune a cross-encoder (CrossEncoderTrainer), or with --arch bi-encoder the embedding model of the first
    stage (SentenceTransformerTrainer): evaluation during training, best checkpoint kept."""
    cfg = TrainConfig.resolve(
        config, model=model, arch=arch, bi_encoder=bi_encoder, train=train_file, val=val, out=out_dir,
        val_corpus=val_corpus, val_top_k=val_top_k, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        eval_steps=eval_steps, loss=loss, pos_weight=pos_weight, early_stopping_patience=patience, max_steps=max_steps,
        seed=seed, fusion=fusion, report_to=report_to, max_label=max_label, query_check=query_check, balance=balance,
        precision=precision, length_buckets=length_buckets,
        resume=resume or None, require_improvement=require_improvement or None, overwrite=overwrite or None)
    try:
        result = run_train(cfg, on_warning=warn)  # the trainer cfg.arch names
    finally:
        finish_distributed()
    if not result.main_process:  # under torchrun / accelerate launch, rank 0 reports
        return
    if result.finished_before is not None:
        out.print(f"the run in {escape(result.out_dir)} had finished (step {result.finished_before}); nothing to "
                  f"resume. best model: {escape(result.best_dir)}; run record: {escape(result.record)}",
                  highlight=False)
        return
    s = summarize(result)
    print_validation(result, s)
    if not print_verdicts(result, s) and cfg.require_improvement:
        raise typer.Exit(1)


def print_validation(result, s: dict) -> None:
    """The balancing negatives added, validation's base-vs-best table, the fusion, and the tuned bi-encoder's
    retrieval and hybrid metrics."""
    if result.balancing_negatives:
        out.print(f"added {result.balancing_negatives} balancing negatives (positive documents as other queries' "
                  "negatives; --no-balance turns this off)")
    t = Table(title=f"validation: base vs best ({result.loss} loss, {result.train_pairs} pairs, "
                    f"{result.seconds:.0f}s, {result.pairs_per_second:.1f} pairs/s)")
    for col in ("metric", "base", "best", "delta", "relative"):
        t.add_column(col, justify="right")
    for r in s["rows"]:
        rel = "n/a" if r["relative"] is None else f"{r['relative']:+.1%}"
        t.add_row(r["metric"], f"{r['base']:.4f}", f"{r['best']:.4f}", f"{r['delta']:+.4f}", rel)
    out.print(t)
    fz = result.fusion or {}
    if "systems" in fz:
        v = {name: m["nDCG@10"] for name, m in fz["systems"].items()}
        w = ", ".join(f"{k} {x:.1f}" for k, x in fz["weights"]["fusion"].items())
        out.print(f"fusion on validation (nDCG@10): cross-encoder {v['cross-encoder']:.4f}, fused ({w}) "
                  f"{v['fusion']:.4f}, training-free hybrid {v['hybrid']:.4f} -> " +
                  ("fusion saved with the model" if result.fusion_saved else "not used"))
    if cal := getattr(result, "calibration", None):
        out.print(f"calibration of relevance_score on validation (ECE, {cal['folds']} held-out folds): "
                  f"{cal['ece_before']:.4f} uncalibrated -> {cal['ece_after']:.4f}, saved with the model")
    for what, key in (("dense retrieval over --val-corpus", "retrieval"), ("hybrid with BM25 on validation", "hybrid")):
        if (got := getattr(result, key, None)) and got.get("base") and got.get("best"):
            out.print(f"{what}: base " + ", ".join(f"{m} {v:.4f}" for m, v in got["base"].items() if m != "weights")
                      + " -> tuned " + ", ".join(f"{m} {v:.4f}" for m, v in got["best"].items() if m != "weights"))


def print_verdicts(result, s: dict) -> bool:
    """Query dependence, the hybrid's verdict, where the best model is, and whether it beat the base model (False
    when it did not, with the likely causes)."""
    if (dep := result.query_dependence) is not None:
        corr = "n/a" if dep["rank_correlation"] is None else f"{dep['rank_correlation']:.2f}"
        out.print(f"query dependence on validation ({dep['lists']} lists, each also under another query's text): "
                  f"nDCG@10 {dep['nDCG@10']:.4f}, under a wrong query {dep['nDCG@10_wrong_query']:.4f}, "
                  f"rank correlation {corr}")
        if ignores_query("the kept cross-encoder", dep) is not None:
            err.print("[bold red]The kept model barely reads the query[/] [red](it scores documents, not pairs: see "
                      "the warning above)[/]")
    if (msg := hybrid_warning(result)) is not None:
        err.print(f"[bold red]Not better than the hybrid:[/] [red]{msg}[/]")
    out.print(f"best model: {result.best_dir}  (checkpoint {result.best_checkpoint}); run record: {result.record}")
    if s["rows"] and not result.improved:
        err.print("[bold red]The fine-tuned model is NOT better than the base model on validation.[/] Likely causes:")
        for c in s["causes"]:
            err.print(f"[red]  - {c}[/]")
        return False
    return True
