"""``finerank train --arch bi-encoder``: fine-tune the first stage, an embedding model, on the same pairs (the
recipe :class:`BiEncoderRecipe`, run by :func:`finerank.training.skeleton.run_recipe`).

sentence-transformers' ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` on (query, relevant
document, hard negative) triplets made from the training pairs: every pair with a label above 0 is a positive, the
query's label-0 pairs (mined by ``finerank data mine``) its hard negatives, used in turn; a query without one gets
a label-0 document of another query that is not judged for it. Every other document of a batch is an in-batch
negative, so batches are made by :class:`finerank.training.callbacks.QueryBatchSampler`: a query once per batch, and no
document judged relevant for another query of the batch (no false negatives).

The same run folder, rules and record as the cross-encoder's (:mod:`finerank.training.run`: ``OUT/.lock``,
``--resume``/``--overwrite``, ``checkpoint-N/``, ``best/``, ``finerank-run.json``, ``finerank-config.yaml``): the
best checkpoint by validation nDCG@10 is kept in ``OUT/best``, a SentenceTransformer folder that every
``--bi-encoder``/``dense:``/``hybrid:`` option takes (or the run folder itself). Validation reranks the same lists
the cross-encoder's does (BM25 top ``val_top_k`` over ``--val-corpus``, or the validation file's rows) by the
cosine of :class:`finerank.retrieval.dense.BiEncoder`. With ``--val-corpus`` the record also holds, for the base model and
the kept one, dense retrieval over the whole corpus (R@100, nDCG@10) and the training-free hybrid with BM25 (its
weight tuned on the same lists).

The recipe's options are :class:`finerank.training.config.TrainConfig`'s (learning rate 2e-5..5e-5, 1-3 epochs);
``loss``, ``pos_weight``, ``fusion`` and ``query_check`` do not apply. ``max_length`` caps the model's own
``max_seq_length`` (all-MiniLM-L6-v2: 256), it never raises it. One process: no DDP.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass

from ..core.environment import distributed_env
from ..core.errors import FinerankError
from ..core.metrics import aggregate
from ..core.records import Pair
from ..data.candidates import Candidates
from ..io.collection import load_collection
from ..io.models import load_bi_encoder
from ..retrieval.bm25 import run_metrics
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import tune as tune_weights
from .config import PRIMARY, TrainConfig, guardrails
from .run import TrainResult
from .skeleton import Context, Recipe, cached_base, load_data, run_recipe

ARCH = "bi-encoder"
LOSS = "mnrl"  # MultipleNegativesRankingLoss, in the record's "loss"
DENSE_MEASURES = ("R@100", "nDCG@10")


@dataclass
class BiTrainResult(TrainResult):
    """:class:`TrainResult` of a bi-encoder run; with ``--val-corpus``, dense retrieval and the hybrid too."""

    retrieval: dict | None = None   # {"base": {R@100, nDCG@10}, "best": {...}, "queries", "documents"}
    hybrid: dict | None = None      # {"base": {nDCG@10, weights}, "best": {...}}: BM25 + this bi-encoder


class BiEncoderRecipe(Recipe):
    """An embedding model on triplets with in-batch negatives; the evaluator reranks by cosine; after training
    dense retrieval over ``--val-corpus`` and the hybrid with BM25, base and kept."""

    arch = ARCH
    result_type = BiTrainResult

    def prepare(self, cfg: TrainConfig) -> TrainConfig:
        cfg = dataclasses.replace(cfg, arch=ARCH).validate()
        if distributed_env()["world_size"] > 1:
            raise FinerankError("train --arch bi-encoder runs in one process, not under torchrun / accelerate launch",
                                hint="start it with python -m finerank train --arch bi-encoder ...")
        return cfg

    def data(self, ctx: Context) -> None:
        cfg = ctx.cfg
        ctx.train_ds, ctx.val_ds = load_data(cfg)
        ctx.loss_name = LOSS
        ctx.extra["corpus"] = load_collection(cfg.val_corpus, split=cfg.split, max_label=None).corpus \
            if cfg.val_corpus else None

    def model(self, ctx: Context):
        import torch

        torch.manual_seed(ctx.cfg.seed)
        model = load_bi_encoder(ctx.cfg.model)
        model.max_seq_length = min(ctx.cfg.max_length, model.max_seq_length or ctx.cfg.max_length)
        return model

    def warnings(self, ctx: Context) -> list[str]:
        return guardrails(dataclasses.replace(ctx.cfg, loss="bce"), ctx.train_ds, ctx.val_ds)  # no loss choice here

    def examples(self, ctx: Context):
        from datasets import Dataset as HFDataset

        cols, ctx.extra["rows"], ctx.extra["counts"] = triplets(ctx.train_ds.pairs, ctx.cfg.seed)
        if missing := ctx.extra["counts"]["queries_without_positive"]:
            ctx.warn(f"{missing} training queries have no positive (label > 0) and are left out")
        return HFDataset.from_dict(cols)

    def trainer(self) -> tuple[type, type]:
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        return SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    def arguments(self, ctx: Context) -> dict:
        from .callbacks import QueryBatchSampler  # the trainer stack: only now

        return {"batch_sampler": functools.partial(QueryBatchSampler, rows=ctx.extra["rows"])}

    def evaluator(self, ctx: Context):
        from .callbacks import BiEncoderEvaluator

        return BiEncoderEvaluator(ctx.cands, batch_size=64)

    def base_metrics(self, ctx: Context, evaluator) -> dict[str, float]:
        """The untrained model's reranking metrics; with a corpus also dense retrieval and the hybrid (kept in
        ``ctx.extra["base"]``)."""
        ctx.extra["base"] = cached_base(ctx, lambda: base_results(evaluator, ctx.model, ctx.cands, ctx.extra["corpus"]),
                                        key="rerank")
        return ctx.extra["base"]["rerank"]

    def loss(self, ctx: Context):
        from sentence_transformers import losses

        return losses.MultipleNegativesRankingLoss(ctx.model)

    def batch_unit(self, ctx: Context) -> str:
        return "triplets"

    def after(self, ctx: Context, result: BiTrainResult) -> None:
        cands, corpus, base = ctx.cands, ctx.extra["corpus"], ctx.extra["base"]
        if cands is None:
            return
        bi = BiEncoder(ctx.model, cache_documents=True)
        if base.get("hybrid"):
            result.hybrid = {"base": base["hybrid"], "best": hybrid_metrics(bi.score_candidates(cands), cands)}
        if corpus is not None:
            result.retrieval = {"queries": len(cands.queries), "documents": len(corpus),
                                "base": base.get("retrieval"), "best": dense_metrics(bi, cands, corpus)}

    def record(self, ctx: Context, result: BiTrainResult) -> dict:
        return {"arch": ARCH, "max_seq_length": ctx.model.max_seq_length,
                "batch_sampler": "finerank.training.callbacks.QueryBatchSampler (a query once, no document relevant "
                                 "to another query of the batch)",
                "retrieval": result.retrieval, "hybrid": result.hybrid}

    def train_record(self, ctx: Context) -> dict:
        return {"triplets": ctx.extra["counts"]}


def train_bi_encoder(cfg: TrainConfig | None = None, *, progress: bool = True, on_warning=None,
                     **options) -> BiTrainResult:
    """Fine-tune the bi-encoder ``cfg.model`` on ``cfg.train`` (see the module's docstring; ``cfg.arch`` is set to
    ``bi-encoder``); the run folder's rules are :func:`finerank.training.run.open_run_folder`'s."""
    return run_recipe(BiEncoderRecipe(), cfg or TrainConfig(**options), progress=progress, on_warning=on_warning)


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


def base_results(evaluator, model, cands: Candidates | None, corpus) -> dict:
    """The untrained model on validation: reranking, and with a corpus dense retrieval and the hybrid."""
    data = {"rerank": {}}
    if cands is not None:
        bi = BiEncoder(model, cache_documents=True)  # the lists' documents and the corpus encoded once
        run = bi.score_candidates(cands)  # what BiEncoderEvaluator scores
        data["rerank"] = aggregate(cands.qrels, run, evaluator.metrics)
        data["hybrid"] = hybrid_metrics(run, cands)
        data["retrieval"] = dense_metrics(bi, cands, corpus) if corpus is not None else None
    return data
