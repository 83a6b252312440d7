"""``finerank distill``: teach a student cross-encoder a teacher's ranking on unlabeled queries, before labels.

The queries: a query log (``queries``: a text file, a query a line, or JSONL) and/or ``pseudo_queries`` made from
the corpus (:mod:`finerank.data.queries`: a document's title, or one of its sentences, as the query, taken out of
that document's text), never a held-out query (``held_out``: a pairs file whose queries are dropped, by normalized
text). Each query's list: BM25's top ``top_k`` over ``corpus`` (a pseudo-query's own document always in it), with
BM25 scores of those texts. The teacher, any Scorer (:func:`finerank.scorers.load.load_scorer`: a cross-encoder, a
finerank model with its saved fusion, ``hybrid[:W][@BI_ENCODER]``), scores every list once; the scores are cached in
``OUT/teacher-scores.jsonl`` (:mod:`finerank.training.teacher`), so a killed run resumes without rescoring.

The student learns the teacher's scores within each list, z-scored per list (so that any teacher's scale is the
same): ``mse`` (the default; sentence-transformers' MSELoss, one pair a row, the z-score its target), ``listnet``
(ListNetLoss: cross-entropy between the softmax of the student's scores and of the z-scores divided by
``temperature``) or ``margin-mse`` (MarginMSELoss on the z-score margins of document pairs). The rest is :func:`finerank.training.skeleton.run_recipe`'s: the run folder,
lock, ``--resume``, validation (``val`` + ``val_corpus``: labeled queries choose the checkpoint), the record and the
card. ``best/`` is a cross-encoder that ``train --model`` takes, so the labels come second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import FinerankError
from ..core.metrics import aggregate
from ..core.records import Collection, Dataset, Pair
from ..data.candidates import Candidates
from ..data.queries import PSEUDO_KINDS, drop_held_out, pseudo_queries, read_query_log
from ..io.collection import load, load_collection
from ..io.files import DEFAULT_MAX_LABEL
from ..retrieval.bm25 import index_for, rescore_lists
from ..scorers.load import load_scorer
from ..scorers.on_ray import RayScorer
from .config import MAX_EPOCHS, PRIMARY, TrainConfig
from .cross_encoder import CrossEncoderRecipe
from .run import TrainResult
from .skeleton import Context, run_recipe
from .teacher import CACHE, teacher_scores

DISTILL_LOSSES = ("auto", "mse", "listnet", "margin-mse")  # auto: mse (measured on Cranfield, benchmarks/README.md)


@dataclass
class DistillConfig(TrainConfig):
    """TrainConfig's options (``model`` is the student) and distillation's own."""

    LOSSES = DISTILL_LOSSES
    ARCHS = ("distill",)

    arch: str = "distill"
    teacher: str = "hybrid"            # any scorer spec (finerank.scorers.load.load_scorer) or model folder
    queries: str | None = None         # a query log: text lines or JSONL
    pseudo_queries: int = 0            # queries made from the corpus (see finerank.data.queries)
    pseudo_kind: str = "auto"          # auto | title | sentence
    corpus: str | None = None          # the collection the lists (and pseudo-queries) come from
    top_k: int = 10                    # documents a list
    held_out: str | None = None        # a pairs file whose queries must never reach the student
    temperature: float = 1.0           # listnet: the teacher's z-scores are divided by it before the softmax
    ray: bool = False                  # score the teacher's lists on Ray actors (finerank.scorers.on_ray)
    ray_workers: int = 2               # Ray actors, one teacher each
    ray_address: str | None = None     # a Ray cluster (None: a local Ray, or RAY_ADDRESS)

    def validate(self) -> "DistillConfig":
        super().validate()
        if not self.corpus:
            raise FinerankError("option corpus (--corpus): missing", hint="the collection the lists come from")
        if not self.queries and not self.pseudo_queries:
            raise FinerankError("no distillation queries", hint="pass --queries FILE and/or --pseudo-queries N")
        if self.pseudo_kind not in PSEUDO_KINDS:
            raise FinerankError(f"option pseudo_kind (--pseudo-kind): got {self.pseudo_kind!r}",
                                hint=f"choose {', '.join(PSEUDO_KINDS)}")
        for name in ("top_k", "temperature"):
            if getattr(self, name) <= (1 if name == "top_k" else 0):
                raise FinerankError(f"option {name} (--{name.replace('_', '-')}): got {getattr(self, name)}",
                                    hint="top_k >= 2 documents; temperature > 0")
        if self.ray_workers < 1:
            raise FinerankError(f"option ray_workers (--ray-workers): got {self.ray_workers}",
                                hint="at least 1 actor")
        if self.pseudo_queries < 0:
            raise FinerankError(f"option pseudo_queries (--pseudo-queries): got {self.pseudo_queries}")
        return self


@dataclass
class DistillResult(TrainResult):
    """:class:`TrainResult` of a distillation run, with what the teacher did."""

    teacher: dict = field(default_factory=dict)  # name, scale, parts, lists, cached lists, validation nDCG@10


# ------------------------------------------------------------------------------------------------ lists
def distillation_lists(cfg: DistillConfig, log=None) -> tuple[Candidates, dict]:
    """The unlabeled lists the teacher scores (see the module's docstring) and their counts."""
    coll = load_collection(cfg.corpus, split=cfg.split, max_label=None)
    queries = read_query_log(cfg.queries) if cfg.queries else {}
    pseudo = pseudo_queries(coll.corpus, cfg.pseudo_queries, kind=cfg.pseudo_kind, seed=cfg.seed)
    queries.update({p.query_id: p.text for p in pseudo})
    held = load(cfg.held_out, max_label=None).queries if cfg.held_out else None
    queries, dropped = drop_held_out(queries, held)
    if not queries:
        raise FinerankError("no distillation query is left once the held-out queries are dropped")
    own = {p.query_id: (p.doc_id, p.document) for p in pseudo if p.query_id in queries}
    run = index_for(coll.corpus).search(queries, cfg.top_k)
    docs = {q: _list(coll, ranked, own.get(q), cfg.top_k) for q, ranked in run.items()}
    docs = {q: lst for q, lst in docs.items() if len(lst) >= 2}
    queries = {q: queries[q] for q in docs}
    cands = Candidates(queries, docs, rescore_lists(queries, docs), {}, f"distillation lists over {cfg.corpus}")
    counts = {"queries": len(queries), "log": sum(q not in own for q in queries), "pseudo": len(own),
              "pseudo_kinds": sorted({p.kind for p in pseudo}), "held_out_dropped": dropped, "pairs": cands.n_pairs,
              "top_k": cfg.top_k}
    return cands, counts


def _list(coll: Collection, ranked: dict[str, float], own, k: int) -> list[tuple[str, str]]:
    """A list's (doc_id, text), best first; a pseudo-query's own document (its query taken out) always in it."""
    ids = sorted(ranked, key=lambda d: (-ranked[d], d))
    if own is not None:
        ids = [own[0]] + [d for d in ids if d != own[0]][: k - 1]
    return [(d, own[1] if own is not None and d == own[0] else coll.corpus[d].full_text) for d in ids]


def zscores(scores: dict[str, float]) -> dict[str, float]:
    """A list's scores as z-scores (all 0 when they are equal)."""
    v = np.array(list(scores.values()), dtype=np.float64)
    sd = v.std()
    z = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
    return dict(zip(scores, z.tolist()))


def training_examples(cands: Candidates, teacher_run, loss: str, temperature: float, seed: int):
    """The Trainer's dataset, lists in a seeded order: a pair a row (mse: query, document, label = its z-score), a
    list a row (listnet: query, docs, labels) or two documents a row (margin-mse: query, positive, negative, label =
    the z-score margin)."""
    import random

    from datasets import Dataset as HFDataset

    qids = list(cands.docs)
    random.Random(seed).shuffle(qids)
    if loss == "listnet":
        cols = {"query": [], "docs": [], "labels": []}
        for q in qids:
            z = zscores(teacher_run[q])
            cols["query"].append(cands.queries[q])
            cols["docs"].append([t for _, t in cands.docs[q]])
            cols["labels"].append([z[d] / temperature for d, _ in cands.docs[q]])
        return HFDataset.from_dict(cols)
    if loss == "mse":
        cols = {"query": [], "document": [], "label": []}
        for q in qids:
            z = zscores(teacher_run[q])
            for d, t in cands.docs[q]:
                cols["query"].append(cands.queries[q])
                cols["document"].append(t)
                cols["label"].append(z[d])
        return HFDataset.from_dict(cols)
    cols = {"query": [], "positive": [], "negative": [], "label": []}
    for q in qids:
        z = zscores(teacher_run[q])
        ranked = sorted(cands.docs[q], key=lambda dt: -z[dt[0]])
        half = len(ranked) // 2
        for (dp, tp), (dn, tn) in zip(ranked[:half], ranked[half:][::-1]):  # each of the top half vs one below
            cols["query"].append(cands.queries[q])
            cols["positive"].append(tp)
            cols["negative"].append(tn)
            cols["label"].append(z[dp] - z[dn])
    return HFDataset.from_dict(cols)


# ------------------------------------------------------------------------------------------------ recipe
class DistillRecipe(CrossEncoderRecipe):
    """The cross-encoder recipe with a teacher's lists instead of labeled pairs, and a distillation loss."""

    arch = "distill"
    result_type = DistillResult

    def data(self, ctx: Context) -> None:
        cfg = ctx.cfg
        cands, counts = distillation_lists(cfg)
        if cfg.ray:
            teacher = RayScorer(cfg.teacher, workers=cfg.ray_workers, address=cfg.ray_address,
                                bi_encoder=cfg.bi_encoder, batch_size=cfg.batch_size)
        else:
            teacher = load_scorer(cfg.teacher, bi_encoder=cfg.bi_encoder, batch_size=cfg.batch_size)
        cache = ctx.out / CACHE
        ctx.out.mkdir(parents=True, exist_ok=True)
        run, cached = teacher_scores(teacher, cands, cache)
        ctx.extra.update(lists=cands, teacher_run=run, teacher_scorer=teacher,
                         teacher={"name": teacher.name, "scale": teacher.scale, "parts": teacher.describe(),
                                  "cached_lists": cached, **counts})
        ctx.train_ds = Dataset([Pair(q, cands.queries[q], d, t, None, run[q][d]) for q, ds in cands.docs.items()
                                for d, t in ds], str(cache), "teacher")
        scale = DEFAULT_MAX_LABEL if cfg.max_label is None else cfg.max_label
        ctx.val_ds = load(cfg.val, cfg.format, split=cfg.split, max_label=scale) if cfg.val else None
        ctx.loss_name = "mse" if cfg.loss == "auto" else cfg.loss
        ctx.extra["max_label"] = None  # no labels: the cross-encoder record's label scale does not apply

    def warnings(self, ctx: Context) -> list[str]:
        cfg, w = ctx.cfg, []
        if cfg.epochs > MAX_EPOCHS:
            w.append(f"{cfg.epochs:g} epochs: more than {MAX_EPOCHS} invites fitting the teacher's noise")
        if ctx.val_ds is None:
            w.append("no --val: the last checkpoint is kept, chosen by nothing; pass labeled validation queries")
        return w

    def examples(self, ctx: Context):
        return training_examples(ctx.extra["lists"], ctx.extra["teacher_run"], ctx.loss_name,
                                 ctx.cfg.temperature, ctx.cfg.seed)

    def step_batch(self, ctx: Context) -> int:
        return max(1, round(ctx.cfg.batch_size / self._pairs_per_example(ctx)))  # batch_size counts pairs

    @staticmethod
    def _pairs_per_example(ctx: Context) -> int:
        return {"mse": 1, "listnet": ctx.cfg.top_k, "margin-mse": 2}[ctx.loss_name]

    def loss(self, ctx: Context):
        import torch
        from sentence_transformers.cross_encoder import losses

        ctx.model.activation_fn = torch.nn.Identity()  # the student's score: a logit, on no fixed scale
        if ctx.loss_name == "mse":
            return losses.MSELoss(ctx.model)
        if ctx.loss_name == "listnet":
            return losses.ListNetLoss(ctx.model, mini_batch_size=-1)
        return losses.MarginMSELoss(ctx.model)

    def pairs_seen(self, ctx: Context, examples: int) -> int:
        return examples * self._pairs_per_example(ctx)

    def batch_unit(self, ctx: Context) -> str:
        return {"mse": "pairs", "listnet": "lists", "margin-mse": "document pairs"}[ctx.loss_name]

    def after(self, ctx: Context, result: TrainResult) -> None:
        super().after(ctx, result)
        teacher = dict(ctx.extra["teacher"])
        if ctx.cands is not None:  # the teacher on the validation lists: has the student passed it?
            run = ctx.extra["teacher_scorer"].score_candidates(ctx.cands)
            teacher[f"val_{PRIMARY}"] = aggregate(ctx.cands.qrels, run, [PRIMARY])[PRIMARY]
        result.teacher = teacher

    def record(self, ctx: Context, result: TrainResult) -> dict:
        return {**super().record(ctx, result), "arch": self.arch, "teacher": result.teacher,
                "temperature": ctx.cfg.temperature}

    def train_record(self, ctx: Context) -> dict:
        return {"teacher_cache": CACHE, "lists": ctx.extra["teacher"]["queries"]}


def distill(cfg: DistillConfig | None = None, *, progress: bool = True, on_warning=None, **options) -> DistillResult:
    """Distill ``cfg.teacher`` into the student ``cfg.model`` (see the module's docstring)."""
    return run_recipe(DistillRecipe(), cfg or DistillConfig(**options), progress=progress, on_warning=on_warning)
