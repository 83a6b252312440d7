"""The one training run, for every trainer: :func:`run_recipe` takes a config and a :class:`Recipe` and runs it.

The steps: open the run folder (:func:`finerank.training.run.open_run_folder`: lock, refuse/overwrite/resume, a
finished run's result), load the data, build the model, warn (rank 0), build the validation lists (rank 0), the
training examples, the Trainer's arguments (:func:`training_arguments`, shared; they start the process group under
torchrun), the evaluator, the base metrics (cached in ``OUT/base-metrics.json`` for ``--resume``), the loss; train
with :class:`~finerank.training.callbacks.MarkComplete` and early stopping; then the history, the kept checkpoint's
metrics, ``best/`` saved atomically, the recipe's after-training step, the config and the record
(``finerank-run.json``), and the card (:func:`finerank.report.card.write_card`). Ranks other than 0 stop after
training; rank 0 writes.

A recipe says only what differs between trainers; each hook gets the run's :class:`Context` (``ctx.cfg``,
``ctx.out``, ``ctx.warn``, what earlier steps set) and may keep its own state in ``ctx.extra``:

- ``data(ctx)``: set ``ctx.train_ds``/``ctx.val_ds`` (default: :func:`load_data`, labeled pairs);
- ``model(ctx)``: the model to train (``ctx.device``: this rank's GPU under DDP, else None);
- ``warnings(ctx)``: the guide's warnings (default :func:`finerank.training.config.guardrails`);
- ``examples(ctx)``: the Trainer's dataset (none: refused, :meth:`Recipe.no_examples` says why);
  ``step_batch(ctx)``: examples a device takes a step (``batch_size``);
- ``trainer()``: (Trainer class, TrainingArguments class); ``arguments(ctx)``: extra keyword arguments for them;
- ``evaluator(ctx)``: the validation evaluator (a ``scores(model)`` method); ``base_metrics(ctx, evaluator)``;
- ``loss(ctx)``: the loss (after the base metrics; ``ctx.loss_name`` names it in the record); ``pairs_seen(ctx,
  examples)``: the pairs that many examples hold; ``batch_unit(ctx)``: what an example is (``pairs``);
- ``after(ctx, result)``: rank 0, after ``best/`` is saved (``ctx.model``: the kept model);
- ``record(ctx, result)``: the record's own keys; ``train_record(ctx)``: keys of its ``data.train``;
- ``arch``, ``result_type`` (a TrainResult subclass), ``prepare(cfg)``: the config validated (and refused where
  the recipe cannot run it).

A new trainer subclasses Recipe (or a trainer's recipe, e.g. the cross-encoder's with another data step and loss),
and its config may extend TrainConfig (:mod:`finerank.training.config`).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.environment import CORE_PACKAGES, distributed_env, versions
from ..core.errors import FinerankError
from ..core.records import Dataset
from ..data.candidates import Candidates
from ..io.collection import load
from ..io.files import DEFAULT_MAX_LABEL, RUN_CONFIG, RUN_RECORD, file_sha256
from ..io.outputs import write_json
from ..io.models import BEST, quiet_transformers
from ..report.card import write_card
from .config import PRIMARY, TrainConfig, guardrails, tracking
from .run import (BASE_METRICS, TrainResult, eval_history, kept_metrics, open_run_folder, quiet_replica,
                  resume_checkpoint, save_atomically)


@dataclass
class Context:
    """One run as its steps fill it in; recipes read it and keep their own state in ``extra``."""

    cfg: TrainConfig
    out: Path
    main: bool = True                  # rank 0 (or the only process): it warns, validates and writes
    device: str | None = None          # this rank's GPU under DDP; None: the loader's choice
    on_warning: Callable | None = None
    warnings: list[str] = field(default_factory=list)
    train_ds: Dataset | None = None
    val_ds: Dataset | None = None
    cands: Candidates | None = None    # the validation lists (rank 0)
    model: Any = None
    examples: Any = None               # the Trainer's dataset
    step_batch: int = 0
    loss_name: str = ""                # the record's "loss"
    balancing: int = 0                 # label-0 pairs the data step added (TrainResult.balancing_negatives)
    extra: dict = field(default_factory=dict)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        if self.on_warning:
            self.on_warning(msg)


class Recipe:
    """What a trainer supplies (see the module's docstring); the defaults serve labeled pairs."""

    arch = "cross-encoder"
    result_type: type = TrainResult

    def prepare(self, cfg: TrainConfig) -> TrainConfig:
        return cfg.validate()

    def data(self, ctx: Context) -> None:
        ctx.train_ds, ctx.val_ds = load_data(ctx.cfg)

    def model(self, ctx: Context):
        raise NotImplementedError

    def warnings(self, ctx: Context) -> list[str]:
        return guardrails(ctx.cfg, ctx.train_ds, ctx.val_ds, getattr(ctx.model, "tokenizer", None))

    def examples(self, ctx: Context):
        raise NotImplementedError

    def step_batch(self, ctx: Context) -> int:
        return ctx.cfg.batch_size

    def no_examples(self, ctx: Context) -> str:
        """Why the training data made no example (the run is refused with it)."""
        return f"the {len(ctx.train_ds.pairs)} training pairs make none for this trainer"

    def trainer(self) -> tuple[type, type]:
        raise NotImplementedError

    def arguments(self, ctx: Context) -> dict:
        return {}

    def evaluator(self, ctx: Context):
        raise NotImplementedError

    def base_metrics(self, ctx: Context, evaluator) -> dict[str, float]:
        if evaluator is None:
            return {}
        return cached_base(ctx, lambda: evaluator.scores(ctx.model), model=ctx.model)

    def loss(self, ctx: Context):
        raise NotImplementedError

    def pairs_seen(self, ctx: Context, examples: int) -> int:
        return examples

    def batch_unit(self, ctx: Context) -> str:
        return "pairs"

    def after(self, ctx: Context, result: TrainResult) -> None:
        pass

    def record(self, ctx: Context, result: TrainResult) -> dict:
        return {}

    def train_record(self, ctx: Context) -> dict:
        return {}


# ------------------------------------------------------------------------------------------------- data
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


def cached_base(ctx: Context, compute: Callable[[], dict], model=None, key: str | None = None) -> dict:
    """The untrained model's validation results, ``compute()``, kept in ``OUT/base-metrics.json`` so that a resumed
    run reuses them (a kept file without ``key`` is computed again). Every rank calls it: rank 0 reads or computes
    and writes (with ``model``, a CrossEncoder, the other ranks score their shares), every rank gets the result."""
    import json

    from .callbacks import on_rank_zero

    path = ctx.out / BASE_METRICS

    def get() -> dict:
        if ctx.cfg.resume and path.exists():
            data = json.loads(path.read_text())
            if key is None or key in data:
                return data
        data = compute()
        write_json(path, data)
        return data

    return on_rank_zero(get, model)


def training_arguments(cfg: TrainConfig, args_type: type, out: Path, step_batch: int, evaluate: bool,
                       progress: bool, **extra):
    """The Trainer's arguments (an ``args_type``: sentence-transformers' CrossEncoder- or SentenceTransformer-
    TrainingArguments), with a recipe's ``extra``. Creating them starts the process group under torchrun /
    accelerate launch."""
    import torch

    cuda = torch.cuda.is_available()
    distributed = distributed_env()["world_size"] > 1
    # bf16 autocast: on a GPU that has it (auto), or wherever asked (a CPU without bf16 units runs it slowly)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    return args_type(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=step_batch,  # pairs (BCE), queries (LambdaLoss) or triplets
        per_device_eval_batch_size=cfg.batch_size,
        # Launched on CPUs, the Trainer must be told (use_cpu): otherwise accelerate starts a process group without
        # a backend and every process trains alone, on all the data, with no gradient sync.
        use_cpu=not cuda and (distributed or bf16),
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
        bf16=bf16,
        report_to=tracking(cfg.report_to),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        **extra,
    )


# -------------------------------------------------------------------------------------------------- run
def run_recipe(recipe: Recipe, cfg: TrainConfig, *, progress: bool = True, on_warning=None) -> TrainResult:
    """Train ``recipe`` with ``cfg`` (see the module's docstring); returns the recipe's ``result_type``.

    The run folder is locked (``OUT/.lock``) while the run writes it; a fresh run into a non-empty folder needs
    ``overwrite`` (or ``resume``); ``resume`` of a run that finished does nothing and returns its recorded result
    (``finished_before`` set)."""
    cfg = recipe.prepare(cfg)
    lock = open_run_folder(cfg, distributed_env()["rank"] == 0, on_warning, recipe.result_type)
    if isinstance(lock, TrainResult):
        return lock
    try:
        return _run(recipe, cfg, progress=progress, on_warning=on_warning)
    finally:
        if lock is not None:
            lock.release()


def _run(recipe: Recipe, cfg: TrainConfig, *, progress: bool, on_warning) -> TrainResult:
    quiet_transformers()
    from transformers import EarlyStoppingCallback

    from .callbacks import MarkComplete  # imports sentence-transformers: only when training

    t0 = time.time()
    ctx, args, evaluator = _setup(recipe, cfg, progress, on_warning)
    base = recipe.base_metrics(ctx, evaluator)
    resume_from = resume_checkpoint(ctx.out) if cfg.resume else None
    loss = recipe.loss(ctx)
    callbacks = [MarkComplete(evaluator is not None)]
    if evaluator is not None and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = recipe.trainer()[0](model=ctx.model, args=args, train_dataset=ctx.examples, loss=loss,
                                  evaluator=evaluator, callbacks=callbacks)
    t_train = time.time()
    if not _restore_finished(trainer, cfg, resume_from, evaluator):
        trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - t_train
    state = trainer.state
    pairs = recipe.pairs_seen(ctx, state.global_step * ctx.step_batch * max(1, args.world_size))
    pairs_per_second = pairs / train_seconds if train_seconds > 0 else 0.0
    result = recipe.result_type(
        str(ctx.out), str(ctx.out / BEST), state.best_model_checkpoint, base, {}, False, [], ctx.warnings,
        len(ctx.train_ds.pairs), round(train_seconds, 1), round(pairs_per_second, 2), ctx.loss_name,
        record=str(ctx.out / RUN_RECORD), world_size=max(1, args.world_size),
        main_process=trainer.is_world_process_zero(), balancing_negatives=ctx.balancing)
    if not result.main_process:
        return result

    ctx.model = trainer.model  # the best checkpoint, loaded by the Trainer at the end
    result.history = eval_history(state.log_history, evaluator)
    result.best_metrics = kept_metrics(result.history, result.best_checkpoint) if evaluator is not None else {}
    save_atomically(ctx.model, ctx.out / BEST)
    recipe.after(ctx, result)
    result.improved = bool(result.best_metrics) and result.best_metrics[PRIMARY] > base.get(PRIMARY, float("-inf"))
    cfg.dump(ctx.out / RUN_CONFIG)
    seconds = {"total_seconds": round(time.time() - t0, 1), "train_seconds": round(train_seconds, 1)}
    record = run_record(recipe, ctx, result, args=args, state=state, resume_from=resume_from, seconds=seconds)
    write_json(ctx.out / RUN_RECORD, record)
    write_card(ctx.out / BEST, record)  # over sentence-transformers' generic card; evaluate adds its results
    return result


def _restore_finished(trainer, cfg: TrainConfig, resume_from: str | None, evaluator) -> bool:
    """A checkpoint at or past ``max_steps`` (a run killed after its last step, e.g. while saving ``best/``):
    the Trainer would take one more step before it checks the budget, so train none; restore its state and the kept
    model (the best checkpoint with validation, else that one). Whether it did."""
    if not resume_from or cfg.max_steps <= 0:
        return False
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json"))
    if state.global_step < cfg.max_steps:
        return False
    trainer.state = state
    best = state.best_model_checkpoint if evaluator is not None else None
    trainer._load_from_checkpoint(best if best and Path(best).is_dir() else resume_from)
    return True


def _setup(recipe: Recipe, cfg: TrainConfig, progress: bool, on_warning) -> tuple[Context, Any, Any]:
    """The run's context up to the Trainer: data, model, warnings and validation lists (rank 0), examples, the
    Trainer's arguments (which start the process group, if launched), the model on this rank's device, the
    evaluator (None without validation data)."""
    launched = distributed_env()  # what the launcher set; the process group starts with the arguments below
    ctx = Context(cfg, Path(cfg.out), main=launched["rank"] == 0, on_warning=on_warning)
    if not ctx.main:
        quiet_replica()
    tracking(cfg.report_to)  # an unknown or missing tracker fails before any work
    recipe.data(ctx)
    ctx.out.mkdir(parents=True, exist_ok=True)
    if launched["world_size"] > 1:
        import torch

        if torch.cuda.is_available():  # each rank loads onto its own GPU, not all onto GPU 0 first
            ctx.device = f"cuda:{launched['local_rank']}"
    ctx.model = recipe.model(ctx)
    if ctx.main:  # rank 0 checks, warns and builds the validation lists; the other ranks train and help score
        for msg in recipe.warnings(ctx):
            ctx.warn(msg)
        ctx.cands = validation_lists(cfg, ctx.val_ds, ctx.warn)
    ctx.examples = recipe.examples(ctx)
    if len(ctx.examples) == 0:  # the Trainer would fail on an empty sampler (num_samples=0)
        raise FinerankError(f"{cfg.train}: no training examples: {recipe.no_examples(ctx)}",
                            hint="give more data: queries with several judged documents, or mined negatives "
                                 "(finerank data mine over a corpus with more than one document)")
    ctx.step_batch = recipe.step_batch(ctx)
    evaluate = ctx.val_ds is not None
    args = training_arguments(cfg, recipe.trainer()[1], ctx.out, ctx.step_batch, evaluate, progress,
                              **recipe.arguments(ctx))
    ctx.model.to(args.device)  # this rank's device (the Trainer would move it too), before the base metrics
    return ctx, args, recipe.evaluator(ctx) if evaluate else None


def run_record(recipe: Recipe, ctx: Context, result: TrainResult, *, args, state, resume_from,
               seconds: dict) -> dict:
    """Everything needed to tell later what this run did (``finerank-run.json``): the keys every trainer writes,
    the recipe's own (:meth:`Recipe.record`, :meth:`Recipe.train_record`) before the logs."""
    cfg, train_ds, val_ds, cands = ctx.cfg, ctx.train_ds, ctx.val_ds, ctx.cands
    found = versions(CORE_PACKAGES)
    return {
        "finerank_version": found.get("finerank"),
        "config": asdict(cfg),
        "loss": result.loss,
        "data": {
            "train": {"path": str(cfg.train), "sha256": train_ds.sha256 or file_sha256(train_ds.source),
                      "pairs": len(train_ds.pairs) - result.balancing_negatives,
                      "queries": len(train_ds.by_query()), "training_examples": len(ctx.examples),
                      **recipe.train_record(ctx)},
            "val": None if val_ds is None else {
                "path": str(cfg.val), "sha256": val_ds.sha256 or file_sha256(val_ds.source), "pairs": len(val_ds.pairs),
                "queries": len(val_ds.by_query()), "candidate_pairs": cands.n_pairs if cands else 0,
                "candidates": f"BM25 top {cfg.val_top_k} over {cfg.val_corpus}" if cfg.val_corpus else "the rows given"},
        },
        "versions": found,
        "python": platform.python_version(),
        "device": str(ctx.model.device),
        "world_size": args.world_size,
        "per_device_batch": ctx.step_batch,
        "global_batch": ctx.step_batch * args.world_size * args.gradient_accumulation_steps,
        "batch_unit": recipe.batch_unit(ctx),
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
        "fusion": result.fusion,
        "fusion_saved": result.fusion_saved,
        "calibration": result.calibration,
        **recipe.record(ctx, result),
        "log_history": state.log_history,
        "warnings": result.warnings,
    }
