"""``finerank train``: fine-tune a cross-encoder with sentence-transformers' CrossEncoderTrainer (the recipe
:class:`CrossEncoderRecipe`, run by :func:`finerank.training.skeleton.run_recipe`).

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
same validation metrics (computed once, each rank scoring a shard: see :mod:`finerank.training.callbacks`), so early
stopping and the best checkpoint agree; only rank 0 prints warnings and progress and writes ``best/``, the fusion
file, the run record and the config; ``--resume`` continues every rank from the checkpoint rank 0 picks.

After training, on the validation lists: a fusion of the kept model with BM25 and a bi-encoder, saved with the model
when it wins (:func:`tune_fusion`), the calibration of the shipped score (fused or not) to P(relevant), saved with
the model (:func:`calibrate_shipped`), and the query-dependence check (:func:`validation_dependence`).
``best/README.md`` is finerank's model card (:mod:`finerank.report.card`), written from the run record;
``report_to`` hands the Trainer's logs to TensorBoard (``OUT/runs/``), mlflow or wandb.
"""

from __future__ import annotations

import functools

from pathlib import Path

from ..core.errors import FinerankError
from ..core.records import Dataset, Pair, Run
from ..data.candidates import Candidates
from ..evaluation.calibrate import calibrate_run
from ..evaluation.dependence import check, ignores_query
from ..io.models import BEST, load_cross_encoder
from ..io.pairs import label_scale
from ..retrieval.mine import balancing_negatives
from ..scorers.cross_encoder import Reranker
from ..scorers.load import load_scorer
from ..scorers.spec import save_part
from .config import PRIMARY, TrainConfig
from .fit import fit as fit_fusion
from .run import TrainResult
from .skeleton import Context, Recipe, load_data


class CrossEncoderRecipe(Recipe):
    """A cross-encoder on labeled pairs: BCE or LambdaLoss (:func:`choose_loss`), balancing negatives, the
    reranking evaluator; after training the fusion and the query-dependence check."""

    arch = "cross-encoder"

    def data(self, ctx: Context) -> None:
        ctx.train_ds, ctx.val_ds = load_data(ctx.cfg)
        ctx.balancing = balance_training_pairs(ctx.cfg, ctx.train_ds)
        ctx.loss_name = choose_loss(ctx.train_ds.pairs, ctx.cfg.loss, ctx.cfg.max_label)
        _, ctx.extra["max_label"] = label_scale((p.label for p in ctx.train_ds.pairs), ctx.cfg.max_label)

    def model(self, ctx: Context):
        return load_cross_encoder(ctx.cfg.model, max_length=ctx.cfg.max_length, seed=ctx.cfg.seed, device=ctx.device)

    def examples(self, ctx: Context):
        return training_examples(ctx.train_ds.pairs, ctx.loss_name, ctx.extra["max_label"])  # BCE: label / max

    def no_examples(self, ctx: Context) -> str:
        n = len(ctx.train_ds.pairs)
        if ctx.loss_name == "lambda":
            return (f"LambdaLoss learns from a query's list of two or more documents, and each of the "
                    f"{len(ctx.train_ds.by_query())} queries of the {n} pairs has one")
        return super().no_examples(ctx)

    def step_batch(self, ctx: Context) -> int:
        return examples_per_step(ctx.cfg, ctx.loss_name, ctx.train_ds.pairs, len(ctx.examples))

    def trainer(self) -> tuple[type, type]:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

        return CrossEncoderTrainer, CrossEncoderTrainingArguments

    def arguments(self, ctx: Context) -> dict:
        """With ``length_buckets``, pairs of similar token length share a batch (not for LambdaLoss: a row is a
        query's whole list)."""
        if not ctx.cfg.length_buckets:
            return {}
        if ctx.loss_name == "lambda" or "document" not in ctx.examples.column_names:
            ctx.warn("length buckets apply to losses over single pairs (bce, mse); this loss's rows are whole "
                     "lists or pairs of documents, batched as they come")
            return {}
        from .callbacks import LengthBucketSampler  # the trainer stack: only now

        limit = getattr(ctx.model, "max_seq_length", None) or ctx.cfg.max_length or 512
        enc = ctx.model.tokenizer(list(ctx.examples["query"]), list(ctx.examples["document"]),
                                  truncation="only_second", max_length=limit, verbose=False)
        return {"batch_sampler": functools.partial(LengthBucketSampler, lengths=[len(i) for i in enc["input_ids"]])}

    def evaluator(self, ctx: Context):
        from .callbacks import RerankingEvaluator  # imports sentence-transformers: only when training

        return RerankingEvaluator(ctx.cands, batch_size=ctx.cfg.batch_size)

    def loss(self, ctx: Context):
        loss, ctx.extra["pos_weight"] = make_loss(ctx.cfg, ctx.model, ctx.loss_name, ctx.train_ds.pairs,
                                                  ctx.step_batch)
        return loss

    def pairs_seen(self, ctx: Context, examples: int) -> int:
        if ctx.loss_name == "lambda":  # an example is a query's list
            return int(examples * len(ctx.train_ds.pairs) / max(1, len(ctx.examples)))
        return examples

    def batch_unit(self, ctx: Context) -> str:
        return "queries" if ctx.loss_name == "lambda" else "pairs"

    def after(self, ctx: Context, result: TrainResult) -> None:
        cfg, cands, model = ctx.cfg, ctx.cands, ctx.model
        ce_run = None  # the kept model's validation scores, shared by the fusion and the query-dependence check
        if cands is not None and ((cfg.fusion == "auto" and cands.scored) or (cfg.query_check and cands.has_negatives())):
            ce_run = Reranker(model, batch_size=cfg.batch_size, fuse=False).score_candidates(cands)
        result.fusion, result.fusion_saved = tune_fusion(cfg, model, cands, ctx.out / BEST, ce_run)
        result.calibration = calibrate_shipped(cfg, model, cands, ctx.out / BEST, None if result.fusion_saved
                                               else ce_run, ctx.warn)
        result.query_dependence = validation_dependence(cfg, model, cands, ce_run)
        if result.query_dependence and (msg := ignores_query("the kept cross-encoder", result.query_dependence)):
            ctx.warn(msg)

    def record(self, ctx: Context, result: TrainResult) -> dict:
        import torch
        import torch.distributed as dist

        return {"pos_weight": ctx.extra.get("pos_weight"), "label_scale_max": ctx.extra["max_label"],
                "gpus": torch.cuda.device_count(),
                "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
                "query_dependence": result.query_dependence}

    def train_record(self, ctx: Context) -> dict:
        return {"balancing_negatives": ctx.balancing, "labels": sorted({p.label for p in ctx.train_ds.pairs})}


# ------------------------------------------------------------------------------------------------ loss
def choose_loss(pairs: list[Pair], loss: str, max_label: float | None = None) -> str:
    """``auto``: BCE for binary labels, LambdaLoss for graded ones, from the validated scale
    (:func:`finerank.io.pairs.label_scale`: a label outside 0..``max_label`` is an error, never a switch of loss)."""
    if loss not in ("auto", "bce", "lambda"):
        raise FinerankError(f"unknown loss '{loss}'", hint="choose auto, bce or lambda")
    kind, _ = label_scale((p.label for p in pairs), max_label)
    if loss != "auto":
        return loss
    return "lambda" if kind == "graded" else "bce"


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


def balance_training_pairs(cfg: TrainConfig, train_ds: Dataset) -> int:
    """With ``cfg.balance``, add :func:`finerank.retrieval.mine.balancing_negatives` to the training pairs (in
    place): each positive document becomes as often a negative of another training query as it is a positive, so
    that a model cannot score documents instead of (query, document) pairs (benchmarks/README.md, "Query
    dependence"). Pairs from ``data mine`` (balanced by default) get none. Returns how many were added."""
    if not cfg.balance:
        return 0
    judged = train_ds.collection.qrels if train_ds.collection is not None else None
    extra = balancing_negatives(train_ds.pairs, judged=judged, seed=cfg.seed)
    train_ds.pairs.extend(extra)
    return len(extra)


def make_loss(cfg: TrainConfig, model, loss_name: str, pairs: list[Pair], step_batch: int):
    """(loss, BCE positive weight). BCE scores become probabilities (sigmoid saved with the model); LambdaLoss keeps
    raw scores (identity); ``step_batch``: the queries a step takes (LambdaLoss's mini-batch)."""
    import torch
    from sentence_transformers.cross_encoder import losses

    if loss_name == "bce":
        n_pos = sum(1 for p in pairs if p.label > 0)
        pos_weight = cfg.pos_weight if cfg.pos_weight is not None else max(1.0, (len(pairs) - n_pos) / max(1, n_pos))
        model.activation_fn = torch.nn.Sigmoid()
        return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight)), pos_weight
    model.activation_fn = torch.nn.Identity()
    return losses.LambdaLoss(model, mini_batch_size=step_batch), None


def examples_per_step(cfg: TrainConfig, loss_name: str, pairs: list[Pair], n_examples: int) -> int:
    """Training examples a step takes on each device: ``batch_size`` pairs (BCE), or as many whole queries as fit in
    ``batch_size`` pairs (LambdaLoss keeps every document's activations until the step's backward pass, so memory
    stays that of a pointwise batch; 16 queries of a 40-document list at 256 tokens took 24 GB on a CPU machine).
    Under DDP ``batch_size`` is per device, like the Trainer's."""
    if loss_name == "bce":
        return cfg.batch_size
    return max(1, round(cfg.batch_size / (len(pairs) / max(1, n_examples))))


# ------------------------------------------------------------------------------------------- after training
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


def calibrate_shipped(cfg: TrainConfig, model, cands: Candidates | None, best_dir: Path, ce_run: Run | None,
                      warn) -> dict | None:
    """Fit the shipped score's (the fusion's where one was saved) map to P(relevant) on the judged validation lists
    and save it with the model; ``ce_run``: the cross-encoder's scores when it ships alone. None without lists (or
    without both relevant and non-relevant documents in them: ``warn`` says so)."""
    if cands is None or not cands.qrels:
        return None
    scorer = load_scorer(Reranker(model, batch_size=cfg.batch_size, fuse=False) if not (best_dir / "finerank.json")
                         .exists() else best_dir, batch_size=cfg.batch_size, bi_encoder=cfg.bi_encoder)
    run = ce_run if ce_run is not None and scorer.describe()["kind"] == "cross-encoder" else \
        scorer.score_candidates(cands)
    try:
        cal, _ = calibrate_run(cands, run, scorer, data=Path(str(cfg.val)).name if cfg.val else None)
    except FinerankError as e:
        warn(f"no calibration: {e.message}")
        return None
    save_part(best_dir, "calibration", cal.to_dict())
    return cal.to_dict()


def validation_dependence(cfg: TrainConfig, model, cands: Candidates | None,
                          ce_run: Run | None = None) -> dict | None:
    """The kept cross-encoder's query dependence on the validation lists (:func:`finerank.evaluation.dependence.check`
    on up to ``cfg.query_check`` of them); None without lists. ``ce_run``: the model's scores of ``cands`` under
    their true queries, when already computed."""
    if cands is None:
        return None
    return check(Reranker(model, batch_size=cfg.batch_size, fuse=False), cands, n=cfg.query_check, seed=cfg.seed,
                 run=ce_run)


def hybrid_warning(result: TrainResult) -> str | None:
    """A message when the hybrid (BM25 + the bi-encoder, no cross-encoder) scored at least as well on validation as
    the model that would ship (the cross-encoder, or its fusion when one was saved), or when the shipped model's gain
    over it is not significant there (paired randomization test, p >= 0.05); None otherwise."""
    systems = (result.fusion or {}).get("systems") or {}
    if "hybrid" not in systems or "cross-encoder" not in systems:
        return None
    value = {name: m[PRIMARY] for name, m in systems.items()}
    shipped = max(value["cross-encoder"], value.get("fusion", float("-inf")))  # fit saves the fusion iff it wins
    w = ", ".join(f"{k} {v:.1f}" for k, v in (result.fusion.get("weights", {}).get("hybrid") or {}).items())
    versus = result.fusion.get("vs_hybrid") or {}
    n = result.fusion.get("queries", "the")
    if shipped > value["hybrid"] + 1e-9:
        if versus.get("p") is None or versus["p"] < 0.05:
            return None
        return (f"on {n} validation queries this model ({shipped:.4f}) beats the hybrid of BM25 and the bi-encoder "
                f"({w}; no cross-encoder; {value['hybrid']:.4f}) by {versus['delta']:+.4f}, not significantly "
                f"(p {versus['p']:.2g}, wins/losses {versus['wins']}/{versus['losses']}): that is no measured gain "
                "yet. Let held-out queries decide (finerank evaluate with the hybrid as a baseline) before serving "
                "it; the hybrid costs no cross-encoder")
    return (f"on validation the hybrid of BM25 and the bi-encoder ({w}; no cross-encoder) scores "
            f"{value['hybrid']:.4f}, at least as well as this model ({shipped:.4f}): it adds nothing over BM25 + the "
            "bi-encoder yet. Train longer or on more queries (a GPU), start from a real cross-encoder, or serve the "
            "hybrid (finerank evaluate --baseline hybrid)")
