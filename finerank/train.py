"""``finerank train``: fine-tune a cross-encoder with sentence-transformers' CrossEncoderTrainer.

The recipe (the guide's defaults): learning rate 3e-5, batch 16, 2 epochs, warmup 10%, weight decay 0.01,
``max_length`` 512, evaluation and a checkpoint every 100 steps and at the end, the best checkpoint by validation
nDCG@10 kept (``DIR/best``) and loaded at the end, early stopping, a fixed seed.

Loss, when ``loss="auto"``: binary labels train with binary cross-entropy (a pointwise loss is what the MS MARCO
cross-encoders were trained with and needs no grouping); graded labels (three or more levels) train with LambdaLoss,
a listwise loss that optimises nDCG directly and so uses the grades instead of flattening them to 0/1. With
LambdaLoss a step takes whole queries, as many as fit in ``batch_size`` pairs, which bounds memory the same way.

Multi-GPU and multi-node: run the same command under ``torchrun --nproc_per_node N -m finerank train ...`` or
``accelerate launch -m finerank train ...``; the Trainer picks up the distributed environment, and only the main
process writes ``best/`` and the run record.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import FinerankError
from .io import file_sha256, load, write_json
from .metrics import aggregate
from .records import Dataset, Pair

COMPLETE = ".finerank-complete"
RECORD = "finerank-run.json"
CONFIG_OUT = "finerank-config.yaml"
LR_RANGE = (2e-5, 5e-5)
MAX_EPOCHS = 3
MIN_PAIRS = 500
TRUNCATION_WARN = 0.10


@dataclass
class TrainConfig:
    """Every option of ``finerank train``; a YAML/TOML config file may set any of them."""

    model: str = "minilm-l6"
    train: str = ""
    val: str | None = None
    out: str = "runs/finerank"
    val_corpus: str | None = None      # BM25 top-k over this collection for each validation query
    val_top_k: int = 30
    epochs: float = 2.0
    lr: float = 3e-5
    batch_size: int = 16
    max_length: int = 512
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_steps: int = 100
    loss: str = "auto"                 # auto | bce | lambda
    pos_weight: float | None = None    # BCE: weight of positives; None = negatives/positives when > 1
    max_label: float | None = None     # graded labels are scaled by this for BCE; None = the data's maximum
    early_stopping_patience: int = 3
    save_total_limit: int = 2
    seed: int = 42
    max_steps: int = -1
    resume: bool = False
    require_improvement: bool = False
    fusion: str = "auto"               # auto: fuse with BM25 + bi-encoder when that wins on validation; off
    bi_encoder: str = "minilm-l6"      # the second model fusion may use
    format: str | None = None
    split: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """Options from a YAML or TOML file (keys as the option names, dashes or underscores)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise FinerankError(f"{path}: a config file holds a mapping of option names to values")
        names = {f.name for f in fields(cls)}
        out = {}
        for key, value in data.items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise FinerankError(f"{path}: unknown option '{key}'", hint=f"options: {', '.join(sorted(names))}")
            out[k] = value
        return out


@dataclass
class TrainResult:
    out_dir: str
    best_dir: str
    best_checkpoint: str | None
    base_metrics: dict[str, float]
    best_metrics: dict[str, float]
    improved: bool
    history: list[dict]
    warnings: list[str]
    train_pairs: int
    seconds: float
    pairs_per_second: float
    loss: str
    fusion: dict | None = None

    def delta(self, metric: str = "nDCG@10") -> tuple[float, float]:
        base, best = self.base_metrics.get(metric, 0.0), self.best_metrics.get(metric, 0.0)
        return best - base, ((best - base) / base if base else float("inf"))


# ------------------------------------------------------------------------------------------- validation
def score_lists(model, lists, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Rerank every candidate list with a CrossEncoder (plain truncation: fast): query id -> doc id -> score."""
    flat = lists.flat()
    scores = model.predict([(qt, dt) for _, _, qt, dt in flat], batch_size=batch_size, show_progress_bar=False,
                           convert_to_numpy=True)
    run: dict[str, dict[str, float]] = {}
    for (q, d, _, _), s in zip(flat, scores):
        run.setdefault(q, {})[d] = float(s)
    return run


def make_evaluator(lists, name: str = "val"):
    """A sentence-transformers evaluator that reranks each list and scores it with ir-measures (graded nDCG@10,
    RR@10). Positives are not forced into the lists: a relevant document the first stage missed counts as missed."""
    from sentence_transformers.evaluation import SentenceEvaluator

    class RerankingEvaluator(SentenceEvaluator):
        def __init__(self):
            super().__init__()
            self.name = name
            self.primary_metric = "ndcg@10"
            self.greater_is_better = True
            self.history: list[dict] = []

        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
            t = time.time()
            values = aggregate(lists.qrels, score_lists(model, lists))
            metrics = {"ndcg@10": values["nDCG@10"], "mrr@10": values["RR@10"]}
            self.history.append({"step": steps, "epoch": epoch, **metrics, "seconds": round(time.time() - t, 2)})
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return RerankingEvaluator()


# ------------------------------------------------------------------------------------------- guardrails
def guardrails(cfg: TrainConfig, train: Dataset, val: Dataset | None, tokenizer=None) -> list[str]:
    """The guide's warnings, each with its reason, checked before training starts."""
    w: list[str] = []
    lo, hi = LR_RANGE
    if not lo <= cfg.lr <= hi:
        w.append(f"learning rate {cfg.lr:g} is outside {lo:g}..{hi:g}: higher rates make a pretrained cross-encoder "
                 "forget what it knew (catastrophic forgetting), lower ones barely move it")
    if cfg.epochs > MAX_EPOCHS:
        w.append(f"{cfg.epochs:g} epochs: more than {MAX_EPOCHS} invites overfitting to the training queries")
    if len(train.pairs) < MIN_PAIRS:
        w.append(f"only {len(train.pairs)} training pairs (fewer than {MIN_PAIRS}): expect overfitting or no gain; "
                 "mine negatives (finerank data mine) or label more")
    if val is not None:
        from .split import check_leakage

        leak = check_leakage(train, val)
        if not leak.ok:
            w.append(f"leakage: {leak.summary()} -- validation scores will be inflated; split with finerank data split")
    labels: dict[tuple[str, str], set] = {}
    for p in train.pairs:
        labels.setdefault((p.query.casefold().strip(), p.document), set()).add(p.label)
    conflicts = sum(1 for v in labels.values() if len(v) > 1)
    if conflicts:
        w.append(f"{conflicts} (query, document) pairs carry conflicting labels in the training data (label noise)")
    if tokenizer is not None:
        import random

        sample = random.Random(0).sample(train.pairs, min(2000, len(train.pairs)))
        enc = tokenizer([p.query for p in sample], [p.document for p in sample], truncation=False, verbose=False)
        share = sum(len(ids) > cfg.max_length for ids in enc["input_ids"]) / max(1, len(sample))
        if share > TRUNCATION_WARN:
            w.append(f"{share:.0%} of training pairs exceed max_length={cfg.max_length} tokens and are truncated: "
                     "raise --max-length, or expect the model to miss what documents say late")
    return w


# ---------------------------------------------------------------------------------------------- helpers
def choose_loss(pairs: list[Pair], loss: str) -> str:
    if loss not in ("auto", "bce", "lambda"):
        raise FinerankError(f"unknown loss '{loss}'", hint="choose auto, bce or lambda")
    if loss != "auto":
        return loss
    levels = {p.label for p in pairs}
    return "lambda" if len(levels) >= 3 else "bce"


def _train_dataset(pairs: list[Pair], loss: str, max_label: float):
    from datasets import Dataset as HFDataset

    if loss == "bce":
        return HFDataset.from_dict({
            "query": [p.query for p in pairs],
            "document": [p.document for p in pairs],
            "label": [min(1.0, p.label / max_label) for p in pairs],
        })
    groups: dict[str, dict] = {}
    for p in pairs:
        g = groups.setdefault(p.query_id, {"query": p.query, "docs": [], "labels": []})
        g["docs"].append(p.document)
        g["labels"].append(float(p.label))
    rows = [g for g in groups.values() if len(g["docs"]) > 1]
    return HFDataset.from_dict({k: [r[k] for r in rows] for k in ("query", "docs", "labels")})


def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoints whose save finished (marked by finerank after the Trainer wrote them), oldest first."""
    found = [p for p in out.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _remove_incomplete(out: Path) -> list[str]:
    gone = []
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and not (p / COMPLETE).exists():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


def save_atomically(model, target: Path) -> None:
    """Save to a temp folder beside ``target`` and swap it in: a kill leaves the old ``target`` or the new one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str | None]:
    from .doctor import PACKAGES, _version

    return {p: _version(p) for p in PACKAGES[:8]}


def _dump_config(cfg: TrainConfig, path: Path) -> None:
    import yaml

    from .io import atomic_write

    with atomic_write(path) as f:
        f.write("# the effective configuration of this run; reuse it with: finerank train --config THIS_FILE\n")
        yaml.safe_dump(asdict(cfg), f, sort_keys=False)


# ------------------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig | None = None, *, progress: bool = True, on_warning=None, **options) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``, validating on ``cfg.val``; returns what happened.

    Options may be given as a TrainConfig or as keyword arguments (``train(model=..., train=..., val=..., out=...)``).
    """
    cfg = cfg or TrainConfig(**options)
    from .models import load_cross_encoder, quiet_transformers

    quiet_transformers()
    import torch
    from sentence_transformers.cross_encoder import (CrossEncoderTrainer, CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder import losses as ce_losses
    from transformers import EarlyStoppingCallback, TrainerCallback

    if not cfg.train:
        raise FinerankError("no training data", hint="pass --train FILE (pairs from finerank data split / data mine)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_ds = load(cfg.train, cfg.format, split=cfg.split, max_label=None)
    val_ds = load(cfg.val, cfg.format, split=cfg.split, max_label=None) if cfg.val else None
    loss_name = choose_loss(train_ds.pairs, cfg.loss)
    max_label = cfg.max_label or max(1.0, max(p.label for p in train_ds.pairs))

    model = load_cross_encoder(cfg.model, max_length=cfg.max_length, seed=cfg.seed)
    warnings = guardrails(cfg, train_ds, val_ds, model.tokenizer)
    for msg in warnings:
        if on_warning:
            on_warning(msg)

    lists = None
    evaluator = None
    if val_ds is not None:
        from .candidates import Candidates

        if cfg.val_corpus:
            lists = Candidates.from_bm25(val_ds.pairs, cfg.val_corpus, cfg.val_top_k)
        else:
            lists = Candidates.from_pairs(val_ds.pairs, str(cfg.val))
        if not lists.has_negatives():
            msg = ("validation lists hold only relevant documents, so nDCG cannot tell models apart: pass "
                   "--val-corpus COLLECTION (BM25 candidates) or a file from finerank data candidates")
            warnings.append(msg)
            if on_warning:
                on_warning(msg)
        evaluator = make_evaluator(lists)

    base_file = out / "base-metrics.json"
    base_metrics: dict[str, float] = {}
    if evaluator is not None:
        if cfg.resume and base_file.exists():
            base_metrics = json.loads(base_file.read_text())
        else:
            base = evaluator(model)
            base_metrics = {"nDCG@10": base["val_ndcg@10"], "RR@10": base["val_mrr@10"]}
            write_json(base_file, base_metrics)
        evaluator.history.clear()

    dataset = _train_dataset(train_ds.pairs, loss_name, max_label)
    if loss_name == "bce":
        n_pos = sum(1 for p in train_ds.pairs if p.label > 0)
        n_neg = len(train_ds.pairs) - n_pos
        pos_weight = cfg.pos_weight if cfg.pos_weight is not None else max(1.0, n_neg / max(1, n_pos))
        step_batch = cfg.batch_size
        loss = ce_losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight))
        model.activation_fn = torch.nn.Sigmoid()
    else:
        pos_weight = None
        # LambdaLoss batches whole queries and keeps every document's activations until the step's backward pass:
        # take as many queries per step as fit in batch_size pairs, so memory stays that of a pointwise batch
        # (16 queries of a 40-document list at 256 tokens took 24 GB on a CPU machine).
        mean_list = len(train_ds.pairs) / max(1, len(dataset))
        step_batch = max(1, round(cfg.batch_size / mean_list))
        loss = ce_losses.LambdaLoss(model, mini_batch_size=step_batch)
        model.activation_fn = torch.nn.Identity()

    resume_from = None
    if cfg.resume:
        _remove_incomplete(out)
        done = complete_checkpoints(out)
        resume_from = str(done[-1]) if done else None

    class MarkComplete(TrainerCallback):
        """Evaluate and save at the last step too; mark a checkpoint complete once the Trainer has written it."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_evaluate = use_eval
                control.should_save = True

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    (ckpt / COMPLETE).write_text(str(time.time()))

    use_eval = evaluator is not None
    cuda = torch.cuda.is_available()
    args = CrossEncoderTrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=step_batch,  # pairs (BCE) or queries (LambdaLoss)
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps (transformers >= 5)
        weight_decay=cfg.weight_decay,
        eval_strategy="steps" if use_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=use_eval,
        metric_for_best_model="eval_val_ndcg@10" if use_eval else None,
        greater_is_better=True,
        logging_steps=max(1, min(50, cfg.eval_steps)),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )
    callbacks = [MarkComplete()]
    if use_eval and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                                  callbacks=callbacks)
    t_train = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - t_train
    state = trainer.state
    pairs_seen = state.global_step * step_batch * max(1, args.world_size)
    if loss_name == "lambda":
        pairs_seen = int(pairs_seen * len(train_ds.pairs) / max(1, len(dataset)))
    best_checkpoint = state.best_model_checkpoint

    if not trainer.is_world_process_zero():
        return TrainResult(str(out), str(out / "best"), best_checkpoint, base_metrics, {}, False, [], warnings,
                           len(train_ds.pairs), train_seconds, 0.0, loss_name)

    # the Trainer's log survives a resume (trainer_state.json); the evaluator's own history does not
    timing = {h["step"]: h["seconds"] for h in (evaluator.history if evaluator else [])}
    history = [{"step": h["step"], "epoch": h.get("epoch"), "ndcg@10": h["eval_val_ndcg@10"],
                "mrr@10": h.get("eval_val_mrr@10"), "seconds": timing.get(h["step"])}
               for h in state.log_history if "eval_val_ndcg@10" in h]
    model = trainer.model  # the best checkpoint, loaded by the Trainer at the end
    best_metrics = {}
    if use_eval and history:
        best_step = int(best_checkpoint.rsplit("-", 1)[-1]) if best_checkpoint else history[-1]["step"]
        best = next((h for h in history if h["step"] == best_step), None) or max(history, key=lambda h: h["ndcg@10"])
        best_metrics = {"nDCG@10": best["ndcg@10"], "RR@10": best["mrr@10"]}
    save_atomically(model, out / "best")
    fusion_info = None
    if use_eval and cfg.fusion == "auto" and lists is not None and lists.first_stage:
        from .fusion import fit

        spec, fusion_info = fit(lists, score_lists(model, lists), bi_encoder=cfg.bi_encoder)
        if spec is not None:
            spec.save(out / "best")
            best_metrics["nDCG@10 (fused)"] = spec.tuned_on["fusion"]
    improved = bool(best_metrics) and best_metrics["nDCG@10"] > base_metrics.get("nDCG@10", float("-inf"))

    pairs_per_second = pairs_seen / train_seconds if train_seconds > 0 else 0.0
    _dump_config(cfg, out / CONFIG_OUT)
    record = {
        "finerank_version": _versions().get("finerank"),
        "config": asdict(cfg),
        "loss": loss_name,
        "pos_weight": pos_weight,
        "label_scale_max": max_label,
        "data": {
            "train": {"path": str(cfg.train), "sha256": file_sha256(train_ds.source), "pairs": len(train_ds.pairs),
                      "queries": len(train_ds.by_query()), "training_examples": len(dataset)},
            "val": None if val_ds is None else {
                "path": str(cfg.val), "sha256": file_sha256(val_ds.source), "pairs": len(val_ds.pairs),
                "queries": len(val_ds.by_query()), "candidate_pairs": lists.n_pairs if lists else 0,
                "candidates": f"BM25 top {cfg.val_top_k} over {cfg.val_corpus}" if cfg.val_corpus else "the rows given"},
        },
        "versions": _versions(),
        "python": platform.python_version(),
        "device": str(model.device),
        "gpus": torch.cuda.device_count(),
        "world_size": args.world_size,
        "seed": cfg.seed,
        "resumed_from": resume_from,
        "global_step": state.global_step,
        "timings": {"total_seconds": round(time.time() - t0, 1), "train_seconds": round(train_seconds, 1)},
        "train_pairs_per_second": round(pairs_per_second, 2),
        "base": base_metrics,
        "best": best_metrics,
        "best_checkpoint": best_checkpoint,
        "improved": improved,
        "eval_history": history,
        "fusion": fusion_info,
        "log_history": state.log_history,
        "warnings": warnings,
    }
    write_json(out / RECORD, record)
    return TrainResult(str(out), str(out / "best"), best_checkpoint, base_metrics, best_metrics, improved, history,
                       warnings, len(train_ds.pairs), round(train_seconds, 1), round(pairs_per_second, 2), loss_name,
                       fusion_info)


LIKELY_CAUSES = (
    "learning rate too high (forgetting) or too low (no movement): stay within 2e-5..5e-5",
    "too few training pairs, or no hard negatives: finerank data mine",
    "leakage or near-duplicate queries between train and validation: finerank data check-leakage",
    "label noise: conflicting labels for the same pair (finerank data inspect)",
)


def hybrid_warning(result: TrainResult) -> str | None:
    """A message when the training-free hybrid (BM25 + bi-encoder) scored at least as well on validation as the
    model that would ship (the cross-encoder, or its fusion when one was saved); None otherwise."""
    fz = result.fusion or {}
    if "hybrid" not in fz or "cross_encoder" not in fz:
        return None
    shipped = max(fz["cross_encoder"], fz.get("fusion", float("-inf")))
    if shipped > fz["hybrid"] + 1e-9:
        return None
    w = ", ".join(f"{k} {v:.1f}" for k, v in (fz.get("hybrid_weights") or {}).items())
    return (f"on validation the training-free hybrid ({w}; no training) scores {fz['hybrid']:.4f}, at least as well "
            f"as this model ({shipped:.4f}): it adds nothing over BM25 + the bi-encoder yet. Train longer or on more "
            "queries (a GPU), start from a real cross-encoder, or serve the hybrid (finerank evaluate --baseline hybrid)")


def summarize(result: TrainResult) -> dict:
    """Base vs best on validation, absolute and relative, for printing."""
    rows = []
    for m in ("nDCG@10", "RR@10"):
        b, f = result.base_metrics.get(m), result.best_metrics.get(m)
        if b is None or f is None:
            continue
        rows.append({"metric": m, "base": b, "best": f, "delta": f - b, "relative": (f - b) / b if b else None})
    return {"rows": rows, "improved": result.improved, "causes": [] if result.improved else list(LIKELY_CAUSES),
            "median_eval_seconds": statistics.median(secs) if (secs := [h["seconds"] for h in result.history if h["seconds"]]) else None}
