"""``finerank train --arch bi-encoder``: fine-tune the first stage, an embedding model, on the same pairs.

sentence-transformers' ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` on (query, relevant
document, hard negative) triplets made from the training pairs: every pair with a label above 0 is a positive, the
query's label-0 pairs (mined by ``finerank data mine``) its hard negatives, used in turn; a query without one gets
a label-0 document of another query that is not judged for it. Every other document of a batch is an in-batch
negative, so batches are made by :class:`finerank.training.callbacks.QueryBatchSampler`: a query once per batch, and no
document judged relevant for another query of the batch (no false negatives).

The same run folder, rules and record as the cross-encoder's (:mod:`finerank.training.cross_encoder`: ``OUT/.lock``,
``--resume``/``--overwrite``, ``checkpoint-N/``, ``best/``, ``finerank-run.json``, ``finerank-config.yaml``): the
best checkpoint by validation nDCG@10 is kept in ``OUT/best``, a SentenceTransformer folder that every
``--bi-encoder``/``dense:``/``hybrid:`` option takes (or the run folder itself). Validation reranks the same lists
the cross-encoder's does (BM25 top ``val_top_k`` over ``--val-corpus``, or the validation file's rows) by the
cosine of :class:`finerank.retrieval.dense.BiEncoder`. With ``--val-corpus`` the record also holds, for the base model and
the kept one, dense retrieval over the whole corpus (R@100, nDCG@10) and the training-free hybrid with BM25 (its
weight tuned on the same lists).

The recipe's options are :class:`finerank.training.cross_encoder.TrainConfig`'s (learning rate 2e-5..5e-5, 1-3 epochs); ``loss``,
``pos_weight``, ``fusion`` and ``query_check`` do not apply. ``max_length`` caps the model's own
``max_seq_length`` (all-MiniLM-L6-v2: 256), it never raises it. One process: no DDP.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.candidates import Candidates
from ..report.card import write_card
from ..core.environment import CORE_PACKAGES, distributed_env, versions
from ..core.errors import FinerankError
from ..scorers.fused import tune as tune_weights
from ..io.formats import RUN_CONFIG, RUN_RECORD, file_sha256, load_collection, write_json
from ..core.metrics import aggregate
from ..io.models import BEST, load_bi_encoder, quiet_transformers
from ..core.records import Dataset, Pair
from ..retrieval.bm25 import run_metrics
from ..retrieval.dense import BiEncoder
from .cross_encoder import (PRIMARY, TrainConfig, TrainResult, _dump_config, eval_history, guardrails, kept_metrics,
                    load_data, open_run_folder, resume_checkpoint, save_atomically, tracking, validation_lists)

ARCH = "bi-encoder"
LOSS = "mnrl"  # MultipleNegativesRankingLoss, in the record's "loss"
DENSE_MEASURES = ("R@100", "nDCG@10")


@dataclass
class BiTrainResult(TrainResult):
    """:class:`TrainResult` of a bi-encoder run; with ``--val-corpus``, dense retrieval and the hybrid too."""

    retrieval: dict | None = None   # {"base": {R@100, nDCG@10}, "best": {...}, "queries", "documents"}
    hybrid: dict | None = None      # {"base": {nDCG@10, weights}, "best": {...}}: BM25 + this bi-encoder


# ------------------------------------------------------------------------------------------------ data
def triplets(pairs: list[Pair], seed: int = 42) -> tuple[dict[str, list[str]], list[tuple], dict[str, int]]:
    """The training rows: one (anchor, positive, negative) a positive pair, and for each row the keys
    :class:`finerank.training.callbacks.QueryBatchSampler` needs (the query, the row's documents, the query's relevant
    documents: all by text). Returns (columns, row keys, counts)."""
    by_q: dict[str, list[Pair]] = {}
    for p in pairs:
        by_q.setdefault(p.query_id, []).append(p)
    judged = {q: {p.document for p in ps} for q, ps in by_q.items()}
    all_negatives = list(dict.fromkeys(p.document for p in pairs if p.label <= 0))
    cols: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    keys: list[tuple] = []
    counts = {"queries": 0, "rows": 0, "queries_without_positive": 0, "borrowed_negatives": 0}
    for qid, ps in by_q.items():
        pos = [p.document for p in sorted(ps, key=lambda p: -p.label) if p.label > 0]
        if not pos:
            counts["queries_without_positive"] += 1
            continue
        rng = random.Random(f"{seed}:{qid}")
        negs = list(dict.fromkeys(p.document for p in ps if p.label <= 0))
        rng.shuffle(negs)
        if not negs:
            negs = [d for d in rng.sample(all_negatives, min(50, len(all_negatives))) if d not in judged[qid]][:1]
            counts["borrowed_negatives"] += bool(negs)
        relevant = frozenset(pos)
        counts["queries"] += 1
        for i, doc in enumerate(dict.fromkeys(pos)):
            neg = negs[i % len(negs)] if negs else None
            cols["anchor"].append(ps[0].query)
            cols["positive"].append(doc)
            cols["negative"].append(neg)
            keys.append((ps[0].query, (doc,) if neg is None else (doc, neg), relevant))
    if not cols["anchor"]:
        raise FinerankError("no training pair has a label above 0: a bi-encoder learns from positives",
                            hint="give pairs with relevant documents (label > 0), e.g. from finerank data mine")
    if any(n is None for n in cols["negative"]):  # no label-0 pair at all: in-batch negatives only
        cols.pop("negative")
        keys = [(q, ds[:1], rel) for q, ds, rel in keys]
    counts["rows"] = len(cols["anchor"])
    return cols, keys, counts


# ------------------------------------------------------------------------------------------- validation
def dense_metrics(bi: BiEncoder, cands: Candidates, corpus) -> dict[str, float]:
    """Dense retrieval of the validation queries over the whole corpus: R@100 and nDCG@10 (all judgments of the
    lists count)."""
    run = bi.search(cands.queries, corpus, 100)
    return run_metrics(run, cands.qrels, DENSE_MEASURES)


def hybrid_metrics(bi_run, cands: Candidates) -> dict | None:
    """The training-free hybrid with a bi-encoder's run on the validation lists: nDCG@10 and BM25's weight, tuned
    there."""
    if not cands.scored:
        return None
    runs = {"bm25": cands.first_stage_run(), "bi": bi_run}
    weights, value = tune_weights(runs, cands.qrels, ["bm25", "bi"], metric=PRIMARY)
    return {PRIMARY: value, "weights": weights}


def base_results(evaluator, model, cands, corpus, out: Path, resume: bool) -> dict:
    """The untrained model on validation (reranking, and with a corpus dense retrieval and the hybrid), kept in
    ``OUT/base-metrics.json`` so that a resumed run reuses them."""
    path = out / "base-metrics.json"
    if resume and path.exists():
        data = json.loads(path.read_text())
        if "rerank" in data:
            return data
    data = {"rerank": {}}
    if cands is not None:
        bi = BiEncoder(model, cache_documents=True)  # the lists' documents and the corpus encoded once
        run = bi.score_candidates(cands)  # what BiEncoderEvaluator scores
        data["rerank"] = aggregate(cands.qrels, run, evaluator.metrics)
        data["hybrid"] = hybrid_metrics(run, cands)
        data["retrieval"] = dense_metrics(bi, cands, corpus) if corpus is not None else None
    write_json(path, data)
    return data


# ------------------------------------------------------------------------------------------------ train
def train_bi_encoder(cfg: TrainConfig | None = None, *, progress: bool = True, on_warning=None,
                     **options) -> BiTrainResult:
    """Fine-tune the bi-encoder ``cfg.model`` on ``cfg.train`` (see the module's docstring); the run folder's rules
    are :func:`finerank.training.cross_encoder.open_run_folder`'s."""
    cfg = cfg or TrainConfig(**options)
    cfg = dataclasses.replace(cfg, arch=ARCH).validate()
    if distributed_env()["world_size"] > 1:
        raise FinerankError("train --arch bi-encoder runs in one process, not under torchrun / accelerate launch",
                            hint="start it with python -m finerank train --arch bi-encoder ...")
    lock = open_run_folder(cfg, True, on_warning)
    if isinstance(lock, TrainResult):  # --resume of a run that had finished: its recorded result
        rec = json.loads(Path(lock.record).read_text())
        return BiTrainResult(**{f.name: getattr(lock, f.name) for f in dataclasses.fields(TrainResult)},
                             retrieval=rec.get("retrieval"), hybrid=rec.get("hybrid"))
    try:
        return _train(cfg, progress=progress, on_warning=on_warning)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, *, progress: bool, on_warning) -> BiTrainResult:
    quiet_transformers()
    import torch
    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from transformers import EarlyStoppingCallback

    from .callbacks import BiEncoderEvaluator, MarkComplete, QueryBatchSampler  # the trainer stack: only now

    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        if on_warning:
            on_warning(msg)

    t0 = time.time()
    train_ds, val_ds = load_data(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = load_bi_encoder(cfg.model)
    model.max_seq_length = min(cfg.max_length, model.max_seq_length or cfg.max_length)
    for msg in guardrails(dataclasses.replace(cfg, loss="bce"), train_ds, val_ds):  # no loss choice here
        warn(msg)
    cands = validation_lists(cfg, val_ds, warn)
    corpus = load_collection(cfg.val_corpus, split=cfg.split, max_label=None).corpus if cfg.val_corpus else None
    cols, keys, counts = triplets(train_ds.pairs, cfg.seed)
    if counts["queries_without_positive"]:
        warn(f"{counts['queries_without_positive']} training queries have no positive (label > 0) and are left out")
    dataset = HFDataset.from_dict(cols)
    use_eval = cands is not None
    evaluator = BiEncoderEvaluator(cands, batch_size=64) if use_eval else None
    base = base_results(evaluator, model, cands, corpus, out, cfg.resume)
    resume_from = resume_checkpoint(out) if cfg.resume else None
    cuda = torch.cuda.is_available()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        eval_strategy="steps" if use_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.eval_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=use_eval, metric_for_best_model=f"eval_val_{PRIMARY}" if use_eval else None,
        greater_is_better=True, logging_steps=max(1, min(50, cfg.eval_steps)), seed=cfg.seed, data_seed=cfg.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(), report_to=tracking(cfg.report_to), disable_tqdm=not progress,
        dataloader_num_workers=0, dataloader_pin_memory=cuda,
        batch_sampler=functools.partial(QueryBatchSampler, rows=keys),
    )
    callbacks = [MarkComplete(use_eval)]
    if use_eval and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=losses.MultipleNegativesRankingLoss(model), evaluator=evaluator,
                                         callbacks=callbacks)
    t_train = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - t_train
    state = trainer.state
    model = trainer.model  # the best checkpoint, loaded by the Trainer at the end
    pairs_per_second = state.global_step * cfg.batch_size / train_seconds if train_seconds > 0 else 0.0
    result = BiTrainResult(str(out), str(out / BEST), state.best_model_checkpoint, base["rerank"], {}, False, [],
                           warnings, len(train_ds.pairs), round(train_seconds, 1), round(pairs_per_second, 2), LOSS,
                           record=str(out / RUN_RECORD))
    result.history = eval_history(state.log_history, evaluator)
    result.best_metrics = kept_metrics(result.history, result.best_checkpoint) if use_eval else {}
    save_atomically(model, out / BEST)
    if cands is not None:
        bi = BiEncoder(model, cache_documents=True)
        if base.get("hybrid"):
            result.hybrid = {"base": base["hybrid"], "best": hybrid_metrics(bi.score_candidates(cands), cands)}
        if corpus is not None:
            result.retrieval = {"queries": len(cands.queries), "documents": len(corpus),
                                "base": base.get("retrieval"), "best": dense_metrics(bi, cands, corpus)}
    result.improved = bool(result.best_metrics) and result.best_metrics[PRIMARY] > result.base_metrics.get(
        PRIMARY, float("-inf"))
    _dump_config(cfg, out / RUN_CONFIG)
    seconds = {"total_seconds": round(time.time() - t0, 1), "train_seconds": round(train_seconds, 1)}
    record = run_record(cfg, train_ds, val_ds, cands, counts, model, state, resume_from, seconds, result)
    write_json(out / RUN_RECORD, record)
    write_card(out / BEST, record)  # over sentence-transformers' generic card; evaluate adds its results
    return result


def run_record(cfg: TrainConfig, train_ds: Dataset, val_ds: Dataset | None, cands: Candidates | None,
               counts: dict, model, state, resume_from, seconds: dict, result: BiTrainResult) -> dict:
    """``finerank-run.json`` of a bi-encoder run: the cross-encoder record's keys that apply, plus the training
    rows, dense retrieval and the hybrid."""
    return {
        "finerank_version": versions(CORE_PACKAGES).get("finerank"),
        "arch": ARCH,
        "config": asdict(cfg),
        "loss": LOSS,
        "max_seq_length": model.max_seq_length,
        "data": {
            "train": {"path": str(cfg.train), "sha256": file_sha256(train_ds.source), "pairs": len(train_ds.pairs),
                      "queries": len(train_ds.by_query()), "training_examples": counts["rows"], "triplets": counts},
            "val": None if val_ds is None else {
                "path": str(cfg.val), "sha256": file_sha256(val_ds.source), "pairs": len(val_ds.pairs),
                "queries": len(val_ds.by_query()), "candidate_pairs": cands.n_pairs if cands else 0,
                "candidates": f"BM25 top {cfg.val_top_k} over {cfg.val_corpus}" if cfg.val_corpus else "the rows given"},
        },
        "versions": versions(CORE_PACKAGES),
        "python": platform.python_version(),
        "device": str(model.device),
        "world_size": 1,
        "per_device_batch": cfg.batch_size,
        "global_batch": cfg.batch_size,
        "batch_unit": "triplets",
        "batch_sampler": "finerank.training.callbacks.QueryBatchSampler (a query once, no document relevant to another "
                         "query of the batch)",
        "seed": cfg.seed,
        "resumed_from": resume_from,
        "global_step": state.global_step,
        "timings": seconds,
        "train_pairs_per_second": result.pairs_per_second,
        "base": result.base_metrics,
        "best": result.best_metrics,
        "best_checkpoint": result.best_checkpoint,
        "improved": result.improved,
        "eval_history": result.history,
        "retrieval": result.retrieval,
        "hybrid": result.hybrid,
        "fusion": None,
        "fusion_saved": False,
        "log_history": state.log_history,
        "warnings": result.warnings,
    }
