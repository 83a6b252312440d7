"""``finerank demo``: the whole job on the embedded Cranfield collection with the offline backbone.

inspect -> split by query (70% train / 10% selection / 20% held out) -> mine BM25 hard negatives -> train the
cross-encoder -> tune the bi-encoder on the same pairs (``train --arch bi-encoder``) -> evaluate on the held-out
queries against BM25, the bi-encoder, their hybrid and the untrained base. About 25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .training.bi_encoder import train_bi_encoder
from .data.candidates import Candidates
from .evaluation.evaluate import evaluate
from .data.inspect import inspect
from .io.collection import load
from .io.outputs import write_pairs
from .io.runs import write_trec_run
from .retrieval.bm25 import candidates, index_for
from .retrieval.mine import candidate_pairs, mine, mined_counts
from .data.split import split_dataset, write_split
from .training.config import TrainConfig
from .training.train import train


@dataclass
class DemoConfig:
    out: str = "demo-out"
    model: str = "minilm-l6"        # the cross-encoder's base
    bi_model: str = "minilm-l6"     # the bi-encoder: its baseline, the hybrids, the fusion, and the one tuned
    collection: str = "cranfield"
    test_fraction: float = 0.2     # held-out queries, never trained on or used for selection
    dev_fraction: float = 0.1      # selection queries (best checkpoint), carved from the rest
    seed: int = 42
    negatives: int = 4             # BM25 hard negatives per training query
    ranks: tuple[int, int] = (1, 30)
    positives: str = "all"         # or "retrieved": only relevant documents BM25 ranked within `ranks`
    max_length: int = 256
    epochs: float = 1.0
    lr: float = 5e-5
    loss: str = "bce"
    batch_size: int = 16
    eval_steps: int = 30
    max_steps: int = -1            # -1: the whole epoch (about 1,800 pairs: 6-7 minutes on 2 CPU cores)
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
    train: object
    seconds: float
    bi_train: object = None        # the tuned bi-encoder's BiTrainResult (None with bi_encoder=False)
    steps: dict[str, float] = field(default_factory=dict)


def demo(cfg: DemoConfig | None = None, *, log=print, **options) -> DemoResult:
    """Run the demo end to end; every artefact lands in ``cfg.out``."""
    cfg = cfg or DemoConfig(**options)

    out = Path(cfg.out)
    data = out / "data"
    t0 = time.time()
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        now = time.time()
        steps[name] = round(now - since, 1)
        log(f"[{now - t0:6.0f}s] {name} done in {now - since:.0f}s")
        return now

    t = time.time()
    ds = load(cfg.collection)
    coll = ds.collection
    report = inspect(ds, model=cfg.model, max_length=cfg.max_length)
    log(f"1/6 inspect: {report.pairs} judged pairs, {report.queries} queries, labels {report.label_scale} "
        f"{report.label_histogram}; {report.tokens['truncated_share']:.0%} of pairs over {cfg.max_length} tokens")
    t = step("inspect", t)

    parts = split_dataset(ds, val_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    write_split(parts, data)
    train_q = sorted({p.query_id for p in parts.train})[: cfg.max_train_queries or None]
    dev_q = sorted({p.query_id for p in parts.val})
    test_q = sorted({p.query_id for p in parts.test})
    log(f"2/6 split by query: {len(train_q)} train, {len(dev_q)} selection, {len(test_q)} held-out queries "
        f"(no query on two sides; see {data / 'split-report.json'})")
    t = step("split", t)

    index = index_for(coll.corpus)
    mined = mine(coll, query_ids=train_q, negatives=cfg.negatives, ranks=cfg.ranks, seed=cfg.seed, index=index,
                 positives=cfg.positives)
    write_pairs(data / "train-mined.jsonl", mined)
    test_run = candidates(coll, top_k=cfg.test_top_k, query_ids=test_q, index=index)
    write_pairs(data / "test-candidates.jsonl", candidate_pairs(coll, test_run))
    write_trec_run(data / "test-candidates.trec", test_run, tag="bm25")
    m = mined_counts(mined, coll, cfg.negatives)
    log(f"3/6 mined {len(mined)} training pairs: {m['judged']} judged, {m['mined']} BM25 negatives (ranks "
        f"{cfg.ranks[0]}-{cfg.ranks[1]}), {m['cross_query']} positives of other queries as negatives (balanced: no "
        f"document is mostly a positive); BM25 top {cfg.test_top_k} for each held-out query")
    t = step("mine", t)

    log(f"4/6 training {cfg.model} (fresh cross-encoder head) for {cfg.epochs:g} epoch(s)")
    result = train(TrainConfig(model=cfg.model, train=str(data / "train-mined.jsonl"),
                               val=str(data / "val.jsonl"), val_corpus=cfg.collection, val_top_k=cfg.dev_top_k,
                               out=str(out / "model"), epochs=cfg.epochs,
                               lr=cfg.lr, batch_size=cfg.batch_size, max_length=cfg.max_length,
                               eval_steps=cfg.eval_steps, max_steps=cfg.max_steps, seed=cfg.seed, loss=cfg.loss,
                               query_check=cfg.query_check, bi_encoder=cfg.bi_model,
                               overwrite=True),  # the demo's own folder: a rerun starts afresh
                   on_warning=lambda m: log(f"warning: {m}"))
    t = step("train", t)

    bi = None
    if cfg.bi_encoder:
        log(f"5/6 tuning the bi-encoder {cfg.bi_model} on the same pairs (train --arch bi-encoder, max_length "
            f"{cfg.bi_max_length}, {cfg.bi_epochs:g} epoch)")
        bi_cfg = TrainConfig(arch="bi-encoder", model=cfg.bi_model, train=str(data / "train-mined.jsonl"),
                             val=str(data / "val.jsonl"), val_corpus=cfg.collection, val_top_k=cfg.dev_top_k,
                             out=str(out / "bi-encoder"), epochs=cfg.bi_epochs, lr=cfg.bi_lr,
                             batch_size=cfg.batch_size, max_length=cfg.bi_max_length, eval_steps=cfg.eval_steps,
                             seed=cfg.seed, overwrite=True)
        bi = train_bi_encoder(bi_cfg, progress=False, on_warning=lambda m: log(f"warning: {m}"))
        r = bi.retrieval or {}
        log(f"    selection nDCG@10 {bi.base_metrics.get('nDCG@10', 0):.4f} -> {bi.best_metrics.get('nDCG@10', 0):.4f}"
            + (f"; dense R@100 over the corpus {r['base']['R@100']:.4f} -> {r['best']['R@100']:.4f}"
               if r.get("base") and r.get("best") else ""))
        t = step("train bi-encoder", t)

    log(f"6/6 evaluating on {len(test_q)} held-out queries")
    cands = Candidates.from_file(data / "test-candidates.jsonl").with_judgments(coll)
    hybrid_w = (result.fusion or {}).get("weights", {}).get("hybrid", {}).get("bm25", 0.3)  # tuned on selection queries
    models = [f"fine-tuned={result.best_dir}"]
    if result.fusion_saved:  # the shipped model fuses: show its cross-encoder alone too
        models = [f"fine-tuned (alone)=raw:{result.best_dir}", f"fine-tuned+fusion={result.best_dir}"]
    if bi is not None:  # the tuned first stage, alone and in the hybrid at its weight tuned on the selection lists
        bi_w = ((bi.hybrid or {}).get("best") or {}).get("weights", {}).get("bm25", hybrid_w)
        models += [f"bi-encoder (tuned)=bi:{bi.best_dir}", f"hybrid (tuned)=hybrid:{bi_w:g}@{bi.best_dir}"]
    ev = evaluate(models, cands,
                  baselines=["bm25", f"bi-encoder=bi:{cfg.bi_model}", f"hybrid=hybrid:{hybrid_w:g}",
                             f"base=cross:{cfg.model}"],
                  out=str(out / "eval"), max_length=cfg.max_length, query_check=cfg.query_check,
                  bi_encoder=cfg.bi_model, log=log)
    step("evaluate", t)
    return DemoResult(str(out), ev, result, round(time.time() - t0, 1), steps=steps, bi_train=bi)
