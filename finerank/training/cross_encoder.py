"""``finerank train``: fine-tune a cross-encoder with sentence-transformers' CrossEncoderTrainer.

The recipe (the guide's defaults): learning rate 3e-5, batch 16, 2 epochs, warmup 10%, weight decay 0.01,
``max_length`` 512, evaluation and a checkpoint every 100 steps and at the end, the best checkpoint by validation
nDCG@10 kept (``DIR/best``) and loaded at the end, early stopping, a fixed seed.

Loss, when ``loss="auto"``: binary labels train with binary cross-entropy (a pointwise loss is what the MS MARCO
cross-encoders were trained with and needs no grouping); graded labels (any label other than 0 and 1 on the
validated scale, 0-4 or 0..``max_label``) train with LambdaLoss,
a listwise loss that optimises nDCG directly and so uses the grades instead of flattening them to 0/1. With
LambdaLoss a step takes whole queries, as many as fit in ``batch_size`` pairs, which bounds memory the same way.

Multi-GPU and multi-node (DDP): run the same command under ``torchrun --nproc_per_node N -m finerank train ...``
(multi-node: add ``--nnodes/--node_rank/--master_addr``) or ``accelerate launch --num_processes N -m finerank train
...``; NCCL on GPUs, gloo on CPUs. ``batch_size`` is per device (the global batch is N times it). Every rank gets the
same validation metrics (computed once, each rank scoring a shard: see :mod:`finerank.training.callbacks`), so early stopping
and the best checkpoint agree; only rank 0 prints warnings and progress and writes ``best/``, the fusion file, the
run record and the config; ``--resume`` continues every rank from the checkpoint rank 0 picks.

``best/README.md`` is finerank's model card (:mod:`finerank.report.card`), written from the run record; ``report_to`` hands
the Trainer's logs to TensorBoard (``OUT/runs/``), mlflow or wandb.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..data.candidates import Candidates
from ..report.card import write_card
from ..evaluation.dependence import CHECK_LISTS, ignores_query, wrong_query_lists
from ..core.environment import CORE_PACKAGES, distributed_env, versions
from ..core.errors import FinerankError
from ..scorers.fused import fit as fit_fusion
from ..data.inspect import MIN_PAIRS, TRUNCATION_WARN, conflicting_labels, token_lengths
from ..io.formats import (COMPLETE, DEFAULT_MAX_LABEL, RUN_CONFIG, RUN_RECORD, atomic_write, check_output_folder, file_sha256,
                 label_scale, load, write_json)
from ..core.metrics import DEFAULT_METRICS, query_dependence
from ..io.models import BEST, load_cross_encoder, quiet_transformers
from ..core.records import Dataset, Pair, Run
from ..scorers.cross_encoder import Reranker
from ..retrieval.bm25 import balancing_negatives
from ..data.split import check_leakage

LR_RANGE = (2e-5, 5e-5)
ARCHS = ("cross-encoder", "bi-encoder")  # what train --arch fine-tunes; bi-encoder: finerank.training.bi_encoder
MAX_EPOCHS = 3
PRIMARY = DEFAULT_METRICS[0]  # nDCG@10 picks the best checkpoint


@dataclass
class TrainConfig:
    """Every option of ``finerank train``; a YAML/TOML config file may set any of them."""

    model: str = "minilm-l6"
    arch: str = "cross-encoder"        # cross-encoder (this module) | bi-encoder (finerank.training.bi_encoder)
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
    max_label: float | None = None     # top of the label scale (None: 0-4, BCE scales by the data's highest label)
    early_stopping_patience: int = 3
    save_total_limit: int = 2
    seed: int = 42
    max_steps: int = -1
    resume: bool = False
    overwrite: bool = False            # a fresh run into a folder holding an earlier one: remove that run's files
    require_improvement: bool = False
    report_to: str = "none"            # experiment tracking: none | tensorboard | mlflow | wandb (the Trainer's)
    fusion: str = "auto"               # auto: fuse with BM25 + bi-encoder when that wins on validation; off
    bi_encoder: str = "minilm-l6"      # the second model fusion may use
    balance: bool = True               # add other queries' negatives so each positive document is as often a negative
    query_check: int = CHECK_LISTS     # validation lists the kept model also scores under other queries' texts; 0 off
    format: str | None = None
    split: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """Options from a YAML or TOML file (keys as the option names, dashes or underscores)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FinerankError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})",
                                hint="--config takes a YAML or TOML file of option names and values") from None
        if path.suffix.lower() == ".toml":
            import tomllib

            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise FinerankError(f"{path}: not valid TOML ({e})") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                raise FinerankError(f"{path}: not valid YAML ({str(e).splitlines()[0]}"
                                    f"{getattr(e, 'problem_mark', '') or ''})") from None
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

    @classmethod
    def resolve(cls, config_file: str | os.PathLike | None = None, **given) -> "TrainConfig":
        """The effective configuration: the defaults, overridden by ``config_file``, overridden by every option in
        ``given`` that is not None (the command line's precedence)."""
        opts = cls.from_file(config_file) if config_file else {}
        opts.update({k: v for k, v in given.items() if v is not None})
        return cls(**opts).validate()

    def validate(self) -> "TrainConfig":
        """Every option of the right type and in range (a config file's values too); a FinerankError naming the
        option otherwise. Returns the config, with whole numbers and booleans normalised."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = str(f.type).replace(" ", "")
            if value is None and kind.endswith("|None"):
                continue
            base = kind.split("|")[0]
            if base in ("int", "float"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
                    and abs(value) != float("inf") and (base == "float" or float(value).is_integer())
                if not ok:
                    raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected "
                                        f"{'a whole number' if base == 'int' else 'a finite number'}")
                setattr(self, f.name, int(value) if base == "int" else float(value))
            elif base == "bool" and not isinstance(value, bool):
                raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected true or false")
            elif base == "str" and not isinstance(value, str):
                raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected a string")
        if self.lr < 0:  # 0 is allowed: the weights stay as they are (a baseline run); guardrails warn
            raise FinerankError(f"option {_flag('lr')}: got {self.lr:g}, expected a learning rate >= 0",
                                hint="the guide's range is 2e-5..5e-5")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_steps": self.eval_steps,
                    "max_length": self.max_length, "val_top_k": self.val_top_k,
                    "save_total_limit": self.save_total_limit}
        if self.pos_weight is not None:
            positive["pos_weight"] = self.pos_weight
        if self.max_label is not None:
            positive["max_label"] = self.max_label
        for name, value in positive.items():
            if value <= 0:
                raise FinerankError(f"option {_flag(name)}: got {value:g}, expected a number above 0")
        for name in ("weight_decay", "early_stopping_patience", *(("query_check",) if hasattr(self, "query_check")
                                                                  else ())):
            if getattr(self, name) < 0:
                raise FinerankError(f"option {_flag(name)}: got {getattr(self, name):g}, expected 0 or more")
        if not 0 <= self.warmup_ratio < 1:
            raise FinerankError(f"option {_flag('warmup_ratio')}: got {self.warmup_ratio:g}, expected 0 <= ratio < 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise FinerankError(f"option {_flag('max_steps')}: got {self.max_steps}, expected a number of steps >= 1",
                                hint="leave --max-steps out to train for --epochs")
        if self.loss not in ("auto", "bce", "lambda"):
            raise FinerankError(f"option {_flag('loss')}: got {self.loss!r}", hint="choose auto, bce or lambda")
        if self.fusion not in ("auto", "off"):
            raise FinerankError(f"option {_flag('fusion')}: got {self.fusion!r}", hint="choose auto or off")
        if self.arch not in ARCHS:
            raise FinerankError(f"option arch: got {self.arch!r}", hint=f"choose {' or '.join(ARCHS)}")
        if not str(self.out).strip():
            raise FinerankError("option out: empty", hint="--out DIR names the run folder")
        return self


FLAGS = {"early_stopping_patience": "patience", "warmup_ratio": None, "weight_decay": None,  # the command line's
         "save_total_limit": None, "format": None, "split": None}                         # name, None: config only


def _flag(name: str) -> str:
    """An option as a config file and the command line name it: ``lr (--lr)``, ``early_stopping_patience
    (--patience)``, ``warmup_ratio`` (config only)."""
    flag = FLAGS.get(name, name)
    return name if flag is None else f"{name} (--{flag.replace('_', '-')})"


@dataclass
class TrainResult:
    out_dir: str
    best_dir: str
    best_checkpoint: str | None
    base_metrics: dict[str, float]      # the model before training, on the validation lists
    best_metrics: dict[str, float]      # the kept checkpoint's cross-encoder alone
    improved: bool
    history: list[dict]
    warnings: list[str]
    train_pairs: int
    seconds: float
    pairs_per_second: float
    loss: str
    fusion: dict | None = None          # what finerank.scorers.fused.fit measured on validation (systems, weights)
    fusion_saved: bool = False          # the fusion won and ships with the model (best/finerank.json)
    record: str = ""                    # the run record's path
    world_size: int = 1                 # processes that trained (torchrun / accelerate launch)
    main_process: bool = True           # False on the other ranks: they train, rank 0 writes and reports
    balancing_negatives: int = 0        # label-0 pairs train added (TrainConfig.balance), counted in train_pairs
    query_dependence: dict | None = None  # the kept cross-encoder on validation: finerank.core.metrics.query_dependence
    finished_before: int | None = None  # --resume of a run that had finished: its recorded step; nothing was done


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
        leak = check_leakage(train, val)
        if not leak.ok:
            w.append(f"leakage: {leak.summary()} -- validation scores will be inflated; split with finerank data split")
    if (msg := label_warning(cfg, train.pairs)) is not None:
        w.append(msg)
    conflicts = len(conflicting_labels(train.pairs))
    if conflicts:
        w.append(f"{conflicts} (query, document) pairs carry conflicting labels in the training data (label noise)")
    if tokenizer is not None:
        share = token_lengths(train.pairs, tokenizer, cfg.max_length, sample=2000)["truncated_share"]
        if share > TRUNCATION_WARN:
            w.append(f"{share:.0%} of training pairs exceed max_length={cfg.max_length} tokens and are truncated: "
                     "raise --max-length, or expect the model to miss what documents say late")
    return w


# ---------------------------------------------------------------------------------------------- helpers
def choose_loss(pairs: list[Pair], loss: str, max_label: float | None = None) -> str:
    """``auto``: BCE for binary labels, LambdaLoss for graded ones, from the validated scale
    (:func:`finerank.io.formats.label_scale`: a label outside 0..``max_label`` is an error, never a switch of loss)."""
    if loss not in ("auto", "bce", "lambda"):
        raise FinerankError(f"unknown loss '{loss}'", hint="choose auto, bce or lambda")
    kind, _ = label_scale((p.label for p in pairs), max_label)
    if loss != "auto":
        return loss
    return "lambda" if kind == "graded" else "bce"


RARE_GRADES = 0.01  # graded labels on fewer than this share of pairs, with the rest 0/1, look like typos


def label_warning(cfg: TrainConfig, pairs: list[Pair]) -> str | None:
    """A warning when ``auto`` picks LambdaLoss because of a few labels above 1 in otherwise binary data."""
    if cfg.loss != "auto" or cfg.max_label is not None or not pairs:
        return None
    high = sum(1 for p in pairs if p.label > 1)
    if 0 < high < RARE_GRADES * len(pairs):
        return (f"only {high} of {len(pairs)} training pairs carry a label above 1, so the labels count as graded "
                "and --loss auto trains with LambdaLoss: if the data is binary these are typos (fix them, or pass "
                "--max-label 1 to refuse them); if it is graded, pass --max-label to say the scale")
    return None


def training_examples(pairs: list[Pair], loss: str, max_label: float):
    """The Trainer's dataset: one row a pair (BCE, labels scaled to 0..1) or one row a query's list (LambdaLoss)."""
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


def _dump_config(cfg: TrainConfig, path: Path) -> None:
    import yaml

    with atomic_write(path) as f:
        f.write("# the effective configuration of this run; reuse it with: finerank train --config THIS_FILE\n")
        yaml.safe_dump({**asdict(cfg), "overwrite": False}, f, sort_keys=False)  # reusing it never deletes a run


# ------------------------------------------------------------------------------------------- the recipe
def balance_training_pairs(cfg: TrainConfig, train_ds: Dataset) -> int:
    """With ``cfg.balance``, add :func:`finerank.retrieval.bm25.balancing_negatives` to the training pairs (in place): each
    positive document becomes as often a negative of another training query as it is a positive, so that a model
    cannot score documents instead of (query, document) pairs (benchmarks/README.md, "Query dependence"). Pairs from
    ``data mine`` (balanced by default) get none. Returns how many were added."""
    if not cfg.balance:
        return 0
    judged = train_ds.collection.qrels if train_ds.collection is not None else None
    extra = balancing_negatives(train_ds.pairs, judged=judged, seed=cfg.seed)
    train_ds.pairs.extend(extra)
    return len(extra)


def load_data(cfg: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """The training pairs and the validation pairs (when given), validated."""
    if not cfg.train:
        raise FinerankError("no training data", hint="pass --train FILE (pairs from finerank data split / data mine)")
    scale = DEFAULT_MAX_LABEL if cfg.max_label is None else cfg.max_label  # every label checked against it
    train_ds = load(cfg.train, cfg.format, split=cfg.split, max_label=scale)
    val_ds = load(cfg.val, cfg.format, split=cfg.split, max_label=scale) if cfg.val else None
    return train_ds, val_ds


def validation_lists(cfg: TrainConfig, val_ds: Dataset | None, warn) -> Candidates | None:
    """The lists that choose the checkpoint: BM25 top-k over ``val_corpus`` (all judgments count), or the
    validation file's own rows."""
    if val_ds is None:
        return None
    if cfg.val_corpus:
        cands = Candidates.from_bm25(val_ds.pairs, cfg.val_corpus, cfg.val_top_k)
    else:
        cands = Candidates.from_pairs(val_ds.pairs, str(cfg.val))
    if not cands.has_negatives():
        warn("validation lists hold only relevant documents, so nDCG cannot tell models apart: pass "
             "--val-corpus COLLECTION (BM25 candidates) or a file from finerank data candidates")
    return cands


def base_metrics(evaluator, model, out: Path, resume: bool) -> dict[str, float]:
    """The untrained model's validation metrics (kept in the run folder, so a resumed run reuses them). Every rank
    calls it: rank 0 reads or computes and writes them (the other ranks score their shares), every rank gets them."""
    from .callbacks import on_rank_zero

    if evaluator is None:
        return {}
    path = out / "base-metrics.json"

    def compute() -> dict[str, float]:
        if resume and path.exists():
            return json.loads(path.read_text())
        metrics = evaluator.scores(model)
        write_json(path, metrics)
        return metrics

    return on_rank_zero(compute, model)


def resume_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in ``out`` (incomplete ones removed), as rank 0 sees it, on every rank."""
    from .callbacks import on_rank_zero

    def pick() -> str | None:
        _remove_incomplete(out)
        done = complete_checkpoints(out)
        return str(done[-1]) if done else None

    return on_rank_zero(pick)


def finish_distributed() -> None:
    """Tear down the process group a launcher's run started (the CLI calls it before the process exits, so that
    NCCL does not warn about a leaked group); nothing when there is none."""
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _quiet_replica() -> None:
    """Ranks other than 0 print errors only: their warnings and logs would repeat rank 0's, once a process."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    for name in ("transformers", "sentence_transformers", "accelerate", "datasets", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_loss(cfg: TrainConfig, model, loss_name: str, pairs: list[Pair], n_examples: int):
    """(loss, examples a step, BCE positive weight). BCE scores become probabilities (sigmoid saved with the model);
    LambdaLoss keeps raw scores (identity). Under DDP ``batch_size`` is per device, like the Trainer's."""
    import torch
    from sentence_transformers.cross_encoder import losses

    step_batch = examples_per_step(cfg, loss_name, pairs, n_examples)
    if loss_name == "bce":
        n_pos = sum(1 for p in pairs if p.label > 0)
        pos_weight = cfg.pos_weight if cfg.pos_weight is not None else max(1.0, (len(pairs) - n_pos) / max(1, n_pos))
        model.activation_fn = torch.nn.Sigmoid()
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight)), step_batch, pos_weight
    model.activation_fn = torch.nn.Identity()
    return losses.LambdaLoss(model, mini_batch_size=step_batch), step_batch, None


def examples_per_step(cfg: TrainConfig, loss_name: str, pairs: list[Pair], n_examples: int) -> int:
    """Training examples a step takes on each device: ``batch_size`` pairs (BCE), or as many whole queries as fit in
    ``batch_size`` pairs (LambdaLoss keeps every document's activations until the step's backward pass, so memory
    stays that of a pointwise batch; 16 queries of a 40-document list at 256 tokens took 24 GB on a CPU machine)."""
    if loss_name == "bce":
        return cfg.batch_size
    return max(1, round(cfg.batch_size / (len(pairs) / max(1, n_examples))))


TRACKERS = ("none", "tensorboard", "mlflow", "wandb")


def tracking(report_to: str) -> str:
    """The Trainer's ``report_to``: ``none`` or one tracker, whose package must be installed (the extras
    ``finerank[tensorboard]``, ``[mlflow]``, ``[wandb]``). TensorBoard writes into ``OUT/runs/``; mlflow and wandb
    follow their own environment variables (``MLFLOW_TRACKING_URI``, ``WANDB_MODE=offline``, ...)."""
    import importlib.util

    name = (report_to or "none").strip().lower()
    if name not in TRACKERS:
        raise FinerankError(f"unknown --report-to '{report_to}'", hint=f"choose one of: {', '.join(TRACKERS)}")
    if name != "none" and importlib.util.find_spec(name) is None:
        raise FinerankError(f"--report-to {name} needs the package '{name}', which is not installed",
                            hint=f"pip install 'finerank[{name}]'")
    return name


def training_arguments(cfg: TrainConfig, out: Path, step_batch: int, evaluate: bool, progress: bool):
    """The Trainer's arguments. Creating them starts the process group under torchrun / accelerate launch."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    cuda = torch.cuda.is_available()
    distributed = distributed_env()["world_size"] > 1
    return CrossEncoderTrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=step_batch,  # pairs (BCE) or queries (LambdaLoss)
        per_device_eval_batch_size=cfg.batch_size,
        # Launched on CPUs, the Trainer must be told (use_cpu): otherwise accelerate starts a process group without
        # a backend and every process trains alone, on all the data, with no gradient sync.
        use_cpu=distributed and not cuda,
        # A CrossEncoder is no PreTrainedModel, so the Trainer would default to find_unused_parameters=True, with
        # which DDP fails at the first backward ("marked ready twice"); every parameter of a cross-encoder is used.
        ddp_find_unused_parameters=False,
        dataloader_drop_last=distributed,  # what sentence-transformers sets under DDP anyway (and warns about)
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps (transformers >= 5)
        weight_decay=cfg.weight_decay,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model=f"eval_val_{PRIMARY}" if evaluate else None,
        greater_is_better=True,
        logging_steps=max(1, min(50, cfg.eval_steps)),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        report_to=tracking(cfg.report_to),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


def eval_history(log_history: list[dict], evaluator) -> list[dict]:
    """Each evaluation during training: step, epoch, the metrics (ir-measures names) and its seconds. The Trainer's
    log survives a resume (trainer_state.json); the evaluator's own timings do not."""
    timing = {h["step"]: h["seconds"] for h in (evaluator.history if evaluator else [])}
    prefix = "eval_val_"
    return [{"step": h["step"], "epoch": h.get("epoch"),
             **{k[len(prefix):]: v for k, v in h.items() if k.startswith(prefix) and k[len(prefix):] in
                DEFAULT_METRICS},
             "seconds": timing.get(h["step"])}
            for h in log_history if f"{prefix}{PRIMARY}" in h]


def kept_metrics(history: list[dict], best_checkpoint: str | None) -> dict[str, float]:
    """The validation metrics of the kept checkpoint."""
    if not history:
        return {}
    step = int(best_checkpoint.rsplit("-", 1)[-1]) if best_checkpoint else history[-1]["step"]
    best = next((h for h in history if h["step"] == step), None) or max(history, key=lambda h: h[PRIMARY])
    return {m: best[m] for m in DEFAULT_METRICS if m in best}


def tune_fusion(cfg: TrainConfig, model, cands: Candidates | None, best_dir: Path,
                ce_run: Run | None = None) -> tuple[dict | None, bool]:
    """Tune a fusion of the kept model with BM25 and the bi-encoder on the validation lists; save it with the model
    when it beats the cross-encoder alone. ``ce_run``: the model's scores of ``cands``, when already computed.
    Returns (what was measured, whether it was saved)."""
    if cfg.fusion != "auto" or cands is None or not cands.scored:
        return None, False
    if ce_run is None:
        ce_run = Reranker(model, batch_size=cfg.batch_size, fuse=False).score_candidates(cands)
    spec, info = fit_fusion(cands, ce_run, bi_encoder=cfg.bi_encoder)
    if spec is not None:
        spec.save(best_dir)
    return info, spec is not None


def validation_dependence(cfg: TrainConfig, model, cands: Candidates | None,
                          ce_run: Run | None = None) -> dict | None:
    """The kept cross-encoder's query dependence on the validation lists (up to ``cfg.query_check`` of them, each
    also scored under another list's query text: see :mod:`finerank.evaluation.dependence`); None without lists. ``ce_run``:
    the model's scores of ``cands`` under their true queries, when already computed."""
    if not cfg.query_check or cands is None or not cands.has_negatives():
        return None
    wrong = wrong_query_lists(cands, cfg.query_check, cfg.seed)
    if wrong is None:
        return None
    scorer = Reranker(model, batch_size=cfg.batch_size, fuse=False)
    if ce_run is None:
        ce_run = scorer.score_candidates(cands.subset(sorted(wrong.docs)))
    return query_dependence(ce_run, scorer.score_candidates(wrong), cands.qrels)


def run_record(cfg: TrainConfig, *, train_ds: Dataset, val_ds: Dataset | None, cands: Candidates | None,
               n_examples: int, loss_name: str, pos_weight, max_label: float, args, state, model, resume_from,
               seconds: dict, pairs_per_second: float, result: "TrainResult", step_batch: int | None = None) -> dict:
    """Everything needed to tell later what this run did (``finerank-run.json``)."""
    import torch
    import torch.distributed as dist

    per_device = step_batch if step_batch is not None else args.per_device_train_batch_size

    found = versions(CORE_PACKAGES)
    return {
        "finerank_version": found.get("finerank"),
        "config": asdict(cfg),
        "loss": loss_name,
        "pos_weight": pos_weight,
        "label_scale_max": max_label,
        "data": {
            "train": {"path": str(cfg.train), "sha256": file_sha256(train_ds.source),
                      "pairs": len(train_ds.pairs) - result.balancing_negatives,
                      "queries": len(train_ds.by_query()), "training_examples": n_examples,
                      "balancing_negatives": result.balancing_negatives,
                      "labels": sorted({p.label for p in train_ds.pairs})},
            "val": None if val_ds is None else {
                "path": str(cfg.val), "sha256": file_sha256(val_ds.source), "pairs": len(val_ds.pairs),
                "queries": len(val_ds.by_query()), "candidate_pairs": cands.n_pairs if cands else 0,
                "candidates": f"BM25 top {cfg.val_top_k} over {cfg.val_corpus}" if cfg.val_corpus else "the rows given"},
        },
        "versions": found,
        "python": platform.python_version(),
        "device": str(model.device),
        "gpus": torch.cuda.device_count(),
        "world_size": args.world_size,
        "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "per_device_batch": per_device,
        "global_batch": per_device * args.world_size * args.gradient_accumulation_steps,
        "batch_unit": "queries" if loss_name == "lambda" else "pairs",
        "seed": cfg.seed,
        "resumed_from": resume_from,
        "global_step": state.global_step,
        "timings": seconds,
        "train_pairs_per_second": round(pairs_per_second, 2),
        "base": result.base_metrics,
        "best": result.best_metrics,
        "best_checkpoint": result.best_checkpoint,
        "improved": result.improved,
        "eval_history": result.history,
        "fusion": result.fusion,
        "fusion_saved": result.fusion_saved,
        "query_dependence": result.query_dependence,
        "log_history": state.log_history,
        "warnings": result.warnings,
    }


# ------------------------------------------------------------------------------------------- run folder
LOCK = ".lock"  # OUT/.lock holds "PID@HOST" of the process writing the run folder
RUN_FILES = (RUN_RECORD, RUN_CONFIG, "base-metrics.json")
RUN_FOLDERS = (BEST, "eval", "runs")  # with checkpoint-N/; eval/: the evaluator's CSV, runs/: TensorBoard


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``OUT/.lock`` with this process's PID: a second writer of the same run folder is refused with a clear
    message; the lock of a process that no longer runs (on this machine) is taken over."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.mine = f"{os.getpid()}@{platform.node()}"
        self.took_over: str | None = None  # the stale holder, when its lock was taken over

    def acquire(self) -> "RunLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile, or unreadable: try again
                pid, host = holder
                if host == platform.node() and (pid == os.getpid() or not _alive(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    self.took_over = f"{pid}@{host}"
                    continue
                raise FinerankError(
                    f"{self.path.parent}: another finerank train is writing this run folder (PID {pid} on {host}, "
                    f"lock {self.path})",
                    hint="wait for it to finish or give another --out; if that process is gone (another machine), "
                         f"delete {self.path}") from None
            except OSError as e:
                raise FinerankError(f"{self.path.parent}: cannot create the run folder's lock ({e.strerror or e})",
                                    hint="give an --out folder you can write to") from None
            with os.fdopen(fd, "w") as f:
                f.write(self.mine + "\n")
            return self
        raise FinerankError(f"{self.path}: could not take the run folder's lock", hint=f"delete {self.path}")

    def _holder(self) -> tuple[int, str] | None:
        try:
            text = self.path.read_text().strip()
        except (FileNotFoundError, OSError):
            return None
        pid, _, host = text.partition("@")
        try:
            return int(pid), host or platform.node()
        except ValueError:
            return -1, platform.node()  # garbage: no live process holds it

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and f"{holder[0]}@{holder[1]}" == self.mine:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def run_artifacts(out: Path) -> list[Path]:
    """What a run wrote into ``out``: checkpoints, best/, the record, the config, base metrics, TensorBoard logs."""
    found = [p for p in out.glob("checkpoint-*")]
    found += [out / n for n in (*RUN_FOLDERS, *RUN_FILES) if (out / n).exists()]
    return sorted(found)


def clean_stale(out: Path) -> list[str]:
    """Remove what a killed writer left: ``.best.tmp-PID``/``.best.old-PID`` folders and atomic writes' temp files
    (only called under the run folder's lock, so no live writer owns them)."""
    gone = []
    for p in [p for p in out.iterdir() if _debris(p)]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        gone.append(p.name)
    return gone


def _debris(p: Path) -> bool:
    """A temp folder or file of an interrupted save (save_atomically, atomic_write)."""
    n = p.name
    return (n.startswith((f".{BEST}.tmp-", f".{BEST}.old-", ".finerank-probe."))
            or (n.startswith(".") and n.endswith(".tmp")))


def finished_run(cfg: TrainConfig, out: Path) -> TrainResult | None:
    """The result of the run recorded in ``out`` when it finished with the same step budget (``max_steps``,
    ``epochs``) that ``cfg`` asks for: resuming it would have nothing to do."""
    path = out / RUN_RECORD
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        done = rec["config"]
        if (done.get("max_steps"), float(done.get("epochs"))) != (cfg.max_steps, float(cfg.epochs)):
            return None
        return TrainResult(str(out), str(out / BEST), rec.get("best_checkpoint"), rec.get("base") or {},
                           rec.get("best") or {}, bool(rec.get("improved")), rec.get("eval_history") or [],
                           [], rec["data"]["train"]["pairs"], rec["timings"]["train_seconds"],
                           rec.get("train_pairs_per_second") or 0.0, rec["loss"], fusion=rec.get("fusion"),
                           fusion_saved=bool(rec.get("fusion_saved")), record=str(path),
                           finished_before=int(rec.get("global_step") or 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable record: resume from the checkpoints as after a crash


def open_run_folder(cfg: TrainConfig, main: bool, say=None) -> "RunLock | TrainResult | None":
    """The run folder's rules, before any work: the lock (rank 0), a fresh run into a non-empty folder refused
    unless ``resume`` or ``overwrite`` (which removes the earlier run's files, nothing else), stale temp folders
    removed, and ``resume`` of a run that finished returning its recorded result. Returns the lock (None on the
    other ranks) or that result."""
    out = Path(cfg.out)
    check_output_folder(out)
    if local := _local_model(cfg.model):
        if local == out.resolve() or out.resolve() in local.parents:
            raise FinerankError(f"--model {cfg.model} is inside the run folder --out {cfg.out}",
                                hint="give the run another --out (the run would overwrite the model it starts from)")
    for data in (cfg.train, cfg.val):
        if data and Path(data).exists() and any(Path(data).resolve() == p.resolve() or p.resolve() in
                                                Path(data).resolve().parents for p in run_artifacts(out)):
            raise FinerankError(f"{data}: lies among the run files of --out {cfg.out}",
                                hint="keep the data outside the run's checkpoints and records")
    if not cfg.resume and not cfg.overwrite and out.is_dir():
        held = sorted(p.name for p in out.iterdir() if p.name != LOCK and not _debris(p))
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise FinerankError(f"{out}: not empty ({shown}); a fresh run would mix its files with these",
                                hint="--resume continues the run there, --overwrite starts afresh (removing its "
                                     "checkpoints, best/ and record), or give a new --out")
    if not main:  # the other ranks of a launched job: rank 0 holds the lock and cleans
        if cfg.resume and (done := finished_run(cfg, out)) is not None:
            done.main_process = False  # every rank returns; rank 0 reports
            return done
        return None
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        if lock.took_over and say:
            say(f"took over the lock of a finished or killed run (PID {lock.took_over})")
        clean_stale(out)
        if cfg.overwrite and not cfg.resume:
            for p in run_artifacts(out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if cfg.resume and (done := finished_run(cfg, out)) is not None:
            lock.release()
            return done
    except BaseException:
        lock.release()
        raise
    return lock


def _local_model(name) -> Path | None:
    p = Path(str(name)).expanduser()
    return p.resolve() if p.exists() else None


# ------------------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig | None = None, *, progress: bool = True, on_warning=None, **options) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.train``, validating on ``cfg.val``; returns what happened.

    Options may be given as a TrainConfig or as keyword arguments (``train(model=..., train=..., val=..., out=...)``).
    The run folder is locked (``OUT/.lock``) while the run writes it; a fresh run into a non-empty folder needs
    ``overwrite`` (or ``resume``); ``resume`` of a run that finished does nothing and returns its recorded result
    (``finished_before`` set). See :func:`open_run_folder`.
    """
    cfg = (cfg or TrainConfig(**options)).validate()
    if cfg.arch != "cross-encoder":
        raise FinerankError(f"train() fine-tunes a cross-encoder; arch '{cfg.arch}' is trained by another function",
                            hint="finerank.train_bi_encoder(cfg) (finerank.training.bi_encoder), or finerank train --arch bi-encoder")
    lock = open_run_folder(cfg, distributed_env()["rank"] == 0, on_warning)
    if isinstance(lock, TrainResult):
        return lock
    try:
        return _train(cfg, progress=progress, on_warning=on_warning)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, *, progress: bool, on_warning) -> TrainResult:
    quiet_transformers()
    from sentence_transformers.cross_encoder import CrossEncoderTrainer
    from transformers import EarlyStoppingCallback

    from .callbacks import MarkComplete, RerankingEvaluator  # imports sentence-transformers: only when training

    warnings: list[str] = []
    launched = distributed_env()  # what the launcher set; the process group starts with the arguments below
    main = launched["rank"] == 0
    if not main:
        _quiet_replica()

    def warn(msg: str) -> None:
        warnings.append(msg)
        if on_warning:
            on_warning(msg)

    t0 = time.time()
    tracking(cfg.report_to)  # an unknown or missing tracker fails before any work
    train_ds, val_ds = load_data(cfg)
    balancing = balance_training_pairs(cfg, train_ds)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loss_name = choose_loss(train_ds.pairs, cfg.loss, cfg.max_label)
    _, max_label = label_scale((p.label for p in train_ds.pairs), cfg.max_label)  # BCE targets: label / max_label

    device = None
    if launched["world_size"] > 1:
        import torch

        if torch.cuda.is_available():  # each rank loads onto its own GPU, not all onto GPU 0 first
            device = f"cuda:{launched['local_rank']}"
    model = load_cross_encoder(cfg.model, max_length=cfg.max_length, seed=cfg.seed, device=device)
    # Rank 0 checks, warns and builds the validation lists; the other ranks only train and help score.
    cands = None
    if main:
        for msg in guardrails(cfg, train_ds, val_ds, model.tokenizer):
            warn(msg)
        cands = validation_lists(cfg, val_ds, warn)
    use_eval = val_ds is not None
    dataset = training_examples(train_ds.pairs, loss_name, max_label)
    step_batch = examples_per_step(cfg, loss_name, train_ds.pairs, len(dataset))
    args = training_arguments(cfg, out, step_batch, use_eval, progress)  # starts the process group, if launched
    model.to(args.device)  # this rank's device (the Trainer would move it too), before the base metrics
    evaluator = RerankingEvaluator(cands, batch_size=cfg.batch_size) if use_eval else None
    base = base_metrics(evaluator, model, out, cfg.resume)
    resume_from = resume_checkpoint(out) if cfg.resume else None
    loss, step_batch, pos_weight = make_loss(cfg, model, loss_name, train_ds.pairs, len(dataset))

    callbacks = [MarkComplete(use_eval)]
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
    pairs_per_second = pairs_seen / train_seconds if train_seconds > 0 else 0.0
    result = TrainResult(str(out), str(out / BEST), state.best_model_checkpoint, base, {}, False, [], warnings,
                         len(train_ds.pairs), round(train_seconds, 1), round(pairs_per_second, 2), loss_name,
                         record=str(out / RUN_RECORD), world_size=max(1, args.world_size),
                         main_process=trainer.is_world_process_zero(), balancing_negatives=balancing)
    if not result.main_process:
        return result

    model = trainer.model  # the best checkpoint, loaded by the Trainer at the end
    result.history = eval_history(state.log_history, evaluator)
    result.best_metrics = kept_metrics(result.history, result.best_checkpoint) if use_eval else {}
    save_atomically(model, out / BEST)
    ce_run = None  # the kept model's validation scores, shared by the fusion and the query-dependence check
    if cands is not None and ((cfg.fusion == "auto" and cands.scored) or (cfg.query_check and cands.has_negatives())):
        ce_run = Reranker(model, batch_size=cfg.batch_size, fuse=False).score_candidates(cands)
    result.fusion, result.fusion_saved = tune_fusion(cfg, model, cands, out / BEST, ce_run)
    result.query_dependence = validation_dependence(cfg, model, cands, ce_run)
    if result.query_dependence and (msg := ignores_query("the kept cross-encoder", result.query_dependence)):
        warn(msg)
    result.improved = bool(result.best_metrics) and result.best_metrics[PRIMARY] > base.get(PRIMARY, float("-inf"))
    _dump_config(cfg, out / RUN_CONFIG)
    seconds = {"total_seconds": round(time.time() - t0, 1), "train_seconds": round(train_seconds, 1)}
    record = run_record(
        cfg, train_ds=train_ds, val_ds=val_ds, cands=cands, n_examples=len(dataset), loss_name=loss_name,
        pos_weight=pos_weight, max_label=max_label, args=args, state=state, model=model, resume_from=resume_from,
        seconds=seconds, pairs_per_second=pairs_per_second, result=result, step_batch=step_batch)
    write_json(out / RUN_RECORD, record)
    write_card(out / BEST, record)  # over sentence-transformers' generic card; evaluate adds its results
    return result


LIKELY_CAUSES = (
    "learning rate too high (forgetting) or too low (no movement): stay within 2e-5..5e-5",
    "too few training pairs, or no hard negatives: finerank data mine",
    "leakage or near-duplicate queries between train and validation: finerank data check-leakage",
    "label noise: conflicting labels for the same pair (finerank data inspect)",
)


def hybrid_warning(result: TrainResult) -> str | None:
    """A message when the training-free hybrid (BM25 + bi-encoder) scored at least as well on validation as the
    model that would ship (the cross-encoder, or its fusion when one was saved); None otherwise."""
    systems = (result.fusion or {}).get("systems") or {}
    if "hybrid" not in systems or "cross-encoder" not in systems:
        return None
    value = {name: m[PRIMARY] for name, m in systems.items()}
    shipped = max(value["cross-encoder"], value.get("fusion", float("-inf")))
    if shipped > value["hybrid"] + 1e-9:
        return None
    w = ", ".join(f"{k} {v:.1f}" for k, v in (result.fusion.get("weights", {}).get("hybrid") or {}).items())
    return (f"on validation the training-free hybrid ({w}; no training) scores {value['hybrid']:.4f}, at least as "
            f"well as this model ({shipped:.4f}): it adds nothing over BM25 + the bi-encoder yet. Train longer or on more "
            "queries (a GPU), start from a real cross-encoder, or serve the hybrid (finerank evaluate --baseline hybrid)")


def summarize(result: TrainResult) -> dict:
    """Base vs best on validation, absolute and relative, for printing."""
    rows = []
    for m in DEFAULT_METRICS:
        b, f = result.base_metrics.get(m), result.best_metrics.get(m)
        if b is None or f is None:
            continue
        rows.append({"metric": m, "base": b, "best": f, "delta": f - b, "relative": (f - b) / b if b else None})
    return {"rows": rows, "improved": result.improved, "causes": [] if result.improved else list(LIKELY_CAUSES),
            "median_eval_seconds": statistics.median(secs) if (secs := [h["seconds"] for h in result.history if h["seconds"]]) else None}
