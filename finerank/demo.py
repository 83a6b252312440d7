"""``finerank demo``: the whole job on the embedded Cranfield collection with the offline backbone.

inspect -> split by query (70% train / 10% selection / 20% held out) -> mine BM25 hard negatives -> tune the
bi-encoder on the training pairs (``train --arch bi-encoder``) -> distill the tuned hybrid (BM25 + that bi-encoder)
into a cross-encoder on the training queries and pseudo-queries from the corpus (``distill``) -> fine-tune the
distilled cross-encoder on the labeled pairs (``train --model``) -> evaluate on the held-out queries against BM25,
the bi-encoder, their hybrids and the untrained base. About 25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .core.environment import cpu_bf16
from .data.candidates import Candidates
from .data.inspect import inspect
from .data.split import split_dataset, write_split
from .evaluation.evaluate import evaluate
from .io.collection import load
from .io.outputs import write_pairs
from .io.runs import write_trec_run
from .retrieval.bm25 import candidates, index_for
from .retrieval.dense import BiEncoder
from .retrieval.hybrid import HYBRID_WEIGHT, tune
from .retrieval.mine import candidate_pairs, mine, mined_counts
from .training.bi_encoder import train_bi_encoder
from .training.config import TrainConfig
from .training.cross_encoder import hybrid_warning
from .training.distill import DistillConfig, distill
from .training.train import train


@dataclass
class DemoConfig:
    out: str = "demo-out"
    model: str = "minilm-l6"        # the cross-encoder's base (the student)
    bi_model: str = "minilm-l6"     # the bi-encoder: its baseline, the hybrids, the teacher, the one tuned
    collection: str = "cranfield"
    test_fraction: float = 0.2     # held-out queries, never trained on, distilled on or used for selection
    dev_fraction: float = 0.1      # selection queries (best checkpoint), carved from the rest
    seed: int = 42
    negatives: int = 4             # BM25 hard negatives per training query
    ranks: tuple[int, int] = (1, 30)
    positives: str = "all"         # or "retrieved": only relevant documents BM25 ranked within `ranks`
    max_length: int = 128          # the cross-encoder's token limit (longer documents: MaxP windows)
    precision: str = "auto"        # auto: bf16 where the CPU has bf16 units (about 2x faster), else fp32
    distill: bool = True           # distill the hybrid into the cross-encoder before the labels
    pseudo_queries: int = 700      # queries made from the corpus (titles), beside the training queries
    distill_top_k: int = 10        # BM25 candidates a distillation list
    distill_lr: float = 1e-4
    distill_epochs: float = 1.0
    distill_batch: int = 30        # pairs a step
    epochs: float = 1.0            # the fine-tuning on labels
    lr: float = 2e-5
    loss: str = "bce"
    batch_size: int = 16
    eval_steps: int = 30
    max_steps: int = -1            # -1: whole epochs
    dev_top_k: int = 20            # BM25 candidates per selection query (all its judgments count, as in the test)
    test_top_k: int = 20           # candidates per held-out query in the final evaluation
    max_train_queries: int | None = None
    query_check: int = 20          # held-out lists scored again under other queries' texts (about a minute)
    bi_encoder: bool = True        # also tune the first stage on the same pairs (train --arch bi-encoder)
    bi_max_length: int = 128       # its token limit, training and after (all-MiniLM-L6-v2 was trained at 128)
    bi_lr: float = 5e-5
    bi_epochs: float = 1.0


@dataclass
class DemoResult:
    out: str
    report: object
    train: object                  # the cross-encoder fine-tuned on the labels (from the distilled one)
    seconds: float
    bi_train: object = None        # the tuned bi-encoder's BiTrainResult (None with bi_encoder=False)
    distill: object = None         # the distilled student's DistillResult (None with distill=False)
    steps: dict[str, float] = field(default_factory=dict)


class _Steps:
    """Numbered progress lines and each step's time."""

    def __init__(self, log, total: int):
        self.log, self.total, self.n, self.t0, self.t = log, total, 0, time.time(), time.time()
        self.seconds: dict[str, float] = {}

    def start(self, message: str) -> None:
        self.n += 1
        self.log(f"{self.n}/{self.total} {message}")

    def done(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(now - self.t, 1)
        self.log(f"[{now - self.t0:6.0f}s] {name} done in {now - self.t:.0f}s")
        self.t = now


def demo(cfg: DemoConfig | None = None, *, log=print, **options) -> DemoResult:
    """Run the demo end to end; every artefact lands in ``cfg.out``."""
    cfg = cfg or DemoConfig(**options)
    if cfg.precision == "auto":  # the demo's choice; train's own auto keeps fp32 on a CPU
        cfg.precision = "bf16" if cpu_bf16() else "fp32"
    out = Path(cfg.out)
    steps = _Steps(log, 5 + cfg.bi_encoder + cfg.distill)
    coll, test_q = _prepare(cfg, out / "data", steps)
    bi = _tune_bi_encoder(cfg, out, steps) if cfg.bi_encoder else None
    weight = _hybrid_weight(bi)
    teacher = f"hybrid:{weight:g}@{bi.best_dir if bi is not None else cfg.bi_model}"
    student = _distill(cfg, out, teacher, steps) if cfg.distill else None
    result = _fine_tune(cfg, out, student.best_dir if student is not None else cfg.model,
                        bi.best_dir if bi is not None else cfg.bi_model, steps)
    steps.start(f"evaluating on {len(test_q)} held-out queries")
    cands = Candidates.from_file(out / "data" / "test-candidates.jsonl").with_judgments(coll)
    untuned = _untuned_weight(cfg, coll)
    ev = evaluate(_systems(result, student, bi, weight), cands, out=str(out / "eval"), max_length=cfg.max_length,
                  baselines=["bm25", f"bi-encoder=bi:{cfg.bi_model}", f"hybrid=hybrid:{untuned:g}@{cfg.bi_model}",
                             f"base=cross:{cfg.model}"],
                  query_check=cfg.query_check, bi_encoder=cfg.bi_model, log=log)
    steps.done("evaluate")
    return DemoResult(str(out), ev, result, round(time.time() - steps.t0, 1), bi_train=bi, distill=student,
                      steps=steps.seconds)


def _prepare(cfg: DemoConfig, data: Path, steps: _Steps):
    """inspect, split by query, mine training pairs and the held-out candidate lists; (collection, test ids)."""
    ds = load(cfg.collection)
    coll = ds.collection
    report = inspect(ds, model=cfg.model, max_length=cfg.max_length)
    steps.start(f"inspect: {report.pairs} judged pairs, {report.queries} queries, labels {report.label_scale} "
                f"{report.label_histogram}; {report.tokens['truncated_share']:.0%} of pairs over {cfg.max_length} "
                "tokens")
    steps.done("inspect")
    parts = split_dataset(ds, val_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    write_split(parts, data)
    train_q = sorted({p.query_id for p in parts.train})[: cfg.max_train_queries or None]
    dev_q, test_q = sorted({p.query_id for p in parts.val}), sorted({p.query_id for p in parts.test})
    steps.start(f"split by query: {len(train_q)} train, {len(dev_q)} selection, {len(test_q)} held-out queries "
                f"(no query on two sides; see {data / 'split-report.json'})")
    steps.done("split")
    index = index_for(coll.corpus)
    mined = mine(coll, query_ids=train_q, negatives=cfg.negatives, ranks=cfg.ranks, seed=cfg.seed, index=index,
                 positives=cfg.positives)
    write_pairs(data / "train-mined.jsonl", mined)
    test_run = candidates(coll, top_k=cfg.test_top_k, query_ids=test_q, index=index)
    write_pairs(data / "test-candidates.jsonl", candidate_pairs(coll, test_run))
    write_trec_run(data / "test-candidates.trec", test_run, tag="bm25")
    m = mined_counts(mined, coll, cfg.negatives)
    steps.start(f"mined {len(mined)} training pairs: {m['judged']} judged, {m['mined']} BM25 negatives (ranks "
                f"{cfg.ranks[0]}-{cfg.ranks[1]}), {m['cross_query']} positives of other queries as negatives "
                f"(balanced: no document is mostly a positive); BM25 top {cfg.test_top_k} for each held-out query")
    steps.done("mine")
    return coll, test_q


def _common(cfg: DemoConfig, out: Path) -> dict:
    data = out / "data"
    return dict(val=str(data / "val.jsonl"), val_corpus=cfg.collection, val_top_k=cfg.dev_top_k, seed=cfg.seed,
                eval_steps=cfg.eval_steps, overwrite=True)  # the demo's own folders: a rerun starts afresh


def _tune_bi_encoder(cfg: DemoConfig, out: Path, steps: _Steps):
    steps.start(f"tuning the bi-encoder {cfg.bi_model} on the training pairs (train --arch bi-encoder, max_length "
                f"{cfg.bi_max_length}, {cfg.bi_epochs:g} epoch)")
    bi = train_bi_encoder(TrainConfig(arch="bi-encoder", model=cfg.bi_model, train=str(out / "data" / "train-mined.jsonl"),
                                      out=str(out / "bi-encoder"), epochs=cfg.bi_epochs, lr=cfg.bi_lr,
                                      batch_size=cfg.batch_size, max_length=cfg.bi_max_length, **_common(cfg, out)),
                          progress=False, on_warning=lambda m: steps.log(f"warning: {m}"))
    r = bi.retrieval or {}
    steps.log(f"    selection nDCG@10 {bi.base_metrics.get('nDCG@10', 0):.4f} -> "
              f"{bi.best_metrics.get('nDCG@10', 0):.4f}" + (f"; dense R@100 over the corpus {r['base']['R@100']:.4f}"
                                                            f" -> {r['best']['R@100']:.4f}"
                                                            if r.get("base") and r.get("best") else ""))
    steps.done("train bi-encoder")
    return bi


def _hybrid_weight(bi) -> float:
    """BM25's weight in the hybrid with the tuned bi-encoder, tuned on the selection lists by the bi-encoder's run
    (the default without one)."""
    if bi is None:
        return HYBRID_WEIGHT
    return ((bi.hybrid or {}).get("best") or {}).get("weights", {}).get("bm25", HYBRID_WEIGHT)


def _untuned_weight(cfg: DemoConfig, coll) -> float:
    """BM25's weight in the training-free hybrid (BM25 + the untuned bi-encoder as evaluate scores it), tuned on
    the selection lists: BM25 top ``dev_top_k``, all judgments."""
    val = load(Path(cfg.out) / "data" / "val.jsonl")
    cands = Candidates.from_bm25(val.pairs, coll, cfg.dev_top_k).with_judgments(coll)
    runs = {"bm25": cands.first_stage_run(), "bi": BiEncoder(cfg.bi_model).score_candidates(cands)}
    return tune(runs, cands.qrels, ["bm25", "bi"])[0]["bm25"]


def _distill(cfg: DemoConfig, out: Path, teacher: str, steps: _Steps):
    data = out / "data"
    steps.start(f"distilling {teacher} into {cfg.model} (a fresh cross-encoder head) on the training queries and "
                f"{cfg.pseudo_queries} pseudo-queries from the corpus, never a held-out query ({cfg.precision})")
    res = distill(DistillConfig(model=cfg.model, teacher=teacher, queries=str(data / "train.jsonl"),
                                pseudo_queries=cfg.pseudo_queries, corpus=cfg.collection, top_k=cfg.distill_top_k,
                                held_out=str(data / "test.jsonl"), out=str(out / "distilled"), lr=cfg.distill_lr,
                                epochs=cfg.distill_epochs, batch_size=cfg.distill_batch, max_length=cfg.max_length,
                                max_steps=cfg.max_steps, precision=cfg.precision, fusion="off",
                                query_check=cfg.query_check, **_common(cfg, out)),
                  progress=False, on_warning=lambda m: steps.log(f"warning: {m}"))
    t = res.teacher
    steps.log(f"    {t['queries']} lists ({t['log']} training queries, {t['pseudo']} pseudo-queries); selection "
              f"nDCG@10 {res.base_metrics.get('nDCG@10', 0):.4f} -> {res.best_metrics.get('nDCG@10', 0):.4f} "
              f"(the teacher: {t.get('val_nDCG@10', float('nan')):.4f})")
    steps.done("distill")
    return res


def _fine_tune(cfg: DemoConfig, out: Path, model: str, bi_encoder: str, steps: _Steps):
    steps.start(f"fine-tuning {'the distilled cross-encoder' if cfg.distill else cfg.model} on the labeled pairs "
                f"for {cfg.epochs:g} epoch(s) ({cfg.precision})")
    result = train(TrainConfig(model=model, train=str(out / "data" / "train-mined.jsonl"), out=str(out / "model"),
                               epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_length=cfg.max_length,
                               max_steps=cfg.max_steps, loss=cfg.loss, query_check=cfg.query_check,
                               bi_encoder=bi_encoder, precision=cfg.precision, **_common(cfg, out)),
                   progress=False, on_warning=lambda m: steps.log(f"warning: {m}"))
    if (msg := hybrid_warning(result)) is not None:
        steps.log(f"warning: {msg}")
    steps.done("train")
    return result


def _systems(result, student, bi, weight: float) -> list[str]:
    """The trained systems the evaluation shows: the cross-encoder alone and as shipped, the distilled one alone, the
    tuned bi-encoder and its hybrid at the weight tuned on the selection lists."""
    name = "distilled + fine-tuned" if student is not None else "fine-tuned"
    models = [f"distilled (alone)=cross:{student.best_dir}"] if student is not None else []
    if result.fusion_saved:  # the shipped model fuses: show its cross-encoder alone too
        models += [f"{name} (alone)=raw:{result.best_dir}", f"{name} + fusion={result.best_dir}"]
    else:
        models += [f"{name}={result.best_dir}"]
    if bi is not None:
        models += [f"bi-encoder (tuned)=bi:{bi.best_dir}", f"hybrid (tuned)=hybrid:{weight:g}@{bi.best_dir}"]
    return models
