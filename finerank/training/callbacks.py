"""The pieces finerank hands sentence-transformers' CrossEncoderTrainer: the validation evaluator, the callback
that marks finished checkpoints, and the few collectives a run under ``torchrun`` / ``accelerate launch`` needs.
Importing this module imports sentence-transformers and transformers, so the training modules import it only when a
training run starts.

Evaluation under DDP: the validation metrics are computed once, by rank 0, with every rank scoring a shard, and
rank 0 sends them to every rank. sentence-transformers >= 6.2 does this for the Trainer's evaluator: rank 0 runs it
while each ``CrossEncoder.predict`` call is split over the ranks (scatter, score, gather) and the metrics are
broadcast; :func:`on_rank_zero` uses the same machinery for the base metrics. So every rank has the same metrics
(early stopping and the best checkpoint agree), the scoring path stays the one :meth:`Reranker.score_candidates`,
and N ranks score N times as fast as rank 0 alone (sharding, rather than rank 0 scoring everything while the other
ranks wait, which would waste N-1 devices during each evaluation). Older sentence-transformers (6.0, 6.1) call the
evaluator on every rank and broadcast nothing; then rank 0 alone scores and broadcasts, the other ranks skip the
scoring.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch.distributed as dist
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.evaluation import SentenceEvaluator
from transformers import TrainerCallback

try:  # sentence-transformers >= 6.2: the Trainer shards the evaluator's inference over the ranks
    from sentence_transformers.util.distributed import distributed_evaluation
except ImportError:  # pragma: no cover - older sentence-transformers
    distributed_evaluation = None

from ..data.candidates import Candidates
from ..io.files import COMPLETE
from ..core.metrics import DEFAULT_METRICS, aggregate
from ..scorers.cross_encoder import Reranker
from ..retrieval.dense import BiEncoder
from .config import PRIMARY


# ------------------------------------------------------------------------------------------- distributed
def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes) of the running process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed). Every rank must call it."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_rank_zero(fn, model=None):
    """``fn()`` run by rank 0 only, its result returned on every rank; every rank must call it. With ``model`` (a
    CrossEncoder) and sentence-transformers >= 6.2, the ``model.predict`` calls ``fn`` makes are split over all the
    ranks, which score their share meanwhile."""
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    context = distributed_evaluation(model) if model is not None and distributed_evaluation else nullcontext(rank == 0)
    with context as runs_here:
        result = fn() if runs_here else None
    return broadcast(result)


class RerankingEvaluator(SentenceEvaluator):
    """Reranks each validation list through :meth:`Reranker.score_candidates` (the path ``evaluate`` and ``serve``
    take: windows over long documents, the model's own score scale) and scores it with ir-measures. Positives are
    not forced into the lists: a relevant document the first stage missed counts as missed.

    Metric keys are ir-measures names (``nDCG@10``, ``RR@10``), prefixed with ``name_`` as the Trainer expects.

    Under DDP every rank gets the same metrics, computed once (see the module's docstring); ``cands`` may be None on
    ranks other than 0, which never score. ``batch_size`` is per device: where the ranks share the scoring, a
    ``predict`` call takes ``batch_size`` pairs per rank."""

    def __init__(self, cands: Candidates | None, name: str = "val", *, batch_size: int = 32,
                 metrics=DEFAULT_METRICS):
        super().__init__()
        self.cands, self.name, self.batch_size, self.metrics = cands, name, batch_size, list(metrics)
        self.primary_metric = PRIMARY
        self.greater_is_better = True
        self.history: list[dict] = []

    def scores(self, model) -> dict[str, float]:
        """The metrics of ``model`` (a CrossEncoder) on the validation lists, no side effects."""
        if self.cands is None:
            raise RuntimeError("this evaluator has no validation lists (a rank other than 0 never scores)")
        shards = rank_and_world()[1] if distributed_evaluation else 1
        run = Reranker(model, batch_size=self.batch_size * shards, fuse=False).score_candidates(self.cands)
        return aggregate(self.cands.qrels, run, self.metrics)

    def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
        t = time.time()
        rank, world = rank_and_world()
        if world > 1 and distributed_evaluation is None:  # every rank is here: rank 0 scores, the others wait
            metrics = broadcast(self.scores(model) if rank == 0 else None)
        else:  # one process, or rank 0 with the other ranks scoring their shares (sentence-transformers >= 6.2)
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


# ------------------------------------------------------------------------------------------- bi-encoder
class BiEncoderEvaluator(RerankingEvaluator):
    """:class:`RerankingEvaluator` for a bi-encoder (``finerank train --arch bi-encoder``): each validation list
    reranked by the cosine of the model's embeddings through :class:`finerank.retrieval.dense.BiEncoder` (the path
    ``evaluate``, fusion and ``data candidates`` take), scored with ir-measures. One process (no DDP sharding)."""

    def scores(self, model) -> dict[str, float]:
        if self.cands is None:
            raise RuntimeError("this evaluator has no validation lists")
        run = BiEncoder(model, batch_size=self.batch_size).score_candidates(self.cands)
        return aggregate(self.cands.qrels, run, self.metrics)


class QueryBatchSampler(DefaultBatchSampler):
    """Batches for in-batch negatives without false negatives: a batch holds each query (text) once, each
    document text once, and no document judged relevant for another query of the batch (sentence-transformers'
    NO_DUPLICATES guarantees the first two by exact text, not the third). Greedy, like NO_DUPLICATES: rows are
    shuffled (seed + epoch) and a row that would clash waits for a later batch; the last batches may be smaller.

    ``rows``: for each dataset row, ``(query key, document keys of the row, keys of the documents relevant to the
    query)``; keys are texts or ids, the same kind throughout. Pass it with :func:`functools.partial` as the
    training arguments' ``batch_sampler``."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, *, rows: list[tuple[str, tuple[str, ...], frozenset]]):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if len(rows) != len(dataset):
            raise ValueError(f"{len(rows)} row keys for {len(dataset)} rows")
        self.rows = rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        import torch

        g = torch.Generator()
        g.manual_seed(int(self.seed) + int(self.epoch))
        remaining = torch.randperm(len(self.rows), generator=g).tolist()
        while remaining:
            batch, queries, docs, relevant = [], set(), set(), set()
            rest = []
            for n, i in enumerate(remaining):
                q, ds, rel = self.rows[i]
                if (q not in queries and not docs.intersection(ds) and not relevant.intersection(ds)
                        and not rel.intersection(docs)):
                    batch.append(i)
                    queries.add(q)
                    docs.update(ds)
                    relevant.update(rel)
                    if len(batch) == self.batch_size:
                        rest += remaining[n + 1:]
                        break
                else:
                    rest.append(i)
            remaining = rest
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch


class LengthBucketSampler(DefaultBatchSampler):
    """Batches of rows of similar length, so a batch pads to little more than its own rows (issue 25): each epoch
    (seed + epoch) the rows are shuffled, cut into pools of ``pool`` batches, each pool sorted by length and cut into
    batches, and the batches shuffled, so the loss never sees the data in length order. Every row once an epoch, as
    the default sampler does. ``lengths``: one a dataset row (tokens of its model input). Pass it with
    :func:`functools.partial` as the training arguments' ``batch_sampler``."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, *, lengths: list[int], pool: int = 50):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if len(lengths) != len(dataset):
            raise ValueError(f"{len(lengths)} lengths for {len(dataset)} rows")
        self.lengths, self.pool = list(lengths), pool  # epoch, set_epoch and len(): sentence-transformers' own

    def __iter__(self):
        import torch

        g = torch.Generator()
        g.manual_seed(int(self.seed) + int(self.epoch))
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            pool = sorted(order[start: start + size], key=lambda i: self.lengths[i])
            batches += [pool[b: b + self.batch_size] for b in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        for k in torch.randperm(len(batches), generator=g).tolist():
            yield batches[k]
