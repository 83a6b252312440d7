"""``finerank demo``: the whole job on the embedded Cranfield collection with the offline backbone.

inspect -> split by query (80% train / 20% held out; a slice of train for model selection) -> mine BM25 hard
negatives -> train -> evaluate on the held-out queries against BM25, the bi-encoder and the untrained base.
Sizes are chosen so that it finishes in under 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .candidates import Candidates
from .evaluate import evaluate
from .inspect import inspect
from .io import load, write_pairs, write_trec_run
from .retrieval import candidate_pairs, candidates, index_for, mine, mined_counts
from .split import split_dataset, write_split
from .train import train, TrainConfig


@dataclass
class DemoConfig:
    out: str = "demo-out"
    model: str = "minilm-l6"
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


@dataclass
class DemoResult:
    out: str
    report: object
    train: object
    seconds: float
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
    log(f"1/5 inspect: {report.pairs} judged pairs, {report.queries} queries, labels {report.label_scale} "
        f"{report.label_histogram}; {report.tokens['truncated_share']:.0%} of pairs over {cfg.max_length} tokens")
    t = step("inspect", t)

    parts = split_dataset(ds, val_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    write_split(parts, data)
    train_q = sorted({p.query_id for p in parts.train})[: cfg.max_train_queries or None]
    dev_q = sorted({p.query_id for p in parts.val})
    test_q = sorted({p.query_id for p in parts.test})
    log(f"2/5 split by query: {len(train_q)} train, {len(dev_q)} selection, {len(test_q)} held-out queries "
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
    log(f"3/5 mined {len(mined)} training pairs: {m['judged']} judged, {m['mined']} BM25 negatives (ranks "
        f"{cfg.ranks[0]}-{cfg.ranks[1]}), {m['cross_query']} positives of other queries as negatives (balanced: no "
        f"document is mostly a positive); BM25 top {cfg.test_top_k} for each held-out query")
    t = step("mine", t)

    log(f"4/5 training {cfg.model} (fresh cross-encoder head) for {cfg.epochs:g} epoch(s)")
    result = train(TrainConfig(model=cfg.model, train=str(data / "train-mined.jsonl"),
                               val=str(data / "val.jsonl"), val_corpus=cfg.collection, val_top_k=cfg.dev_top_k,
                               out=str(out / "model"), epochs=cfg.epochs,
                               lr=cfg.lr, batch_size=cfg.batch_size, max_length=cfg.max_length,
                               eval_steps=cfg.eval_steps, max_steps=cfg.max_steps, seed=cfg.seed, loss=cfg.loss,
                               query_check=cfg.query_check,
                               overwrite=True),  # the demo's own folder: a rerun starts afresh
                   on_warning=lambda m: log(f"warning: {m}"))
    t = step("train", t)

    log(f"5/5 evaluating on {len(test_q)} held-out queries")
    cands = Candidates.from_file(data / "test-candidates.jsonl").with_judgments(coll)
    hybrid_w = (result.fusion or {}).get("weights", {}).get("hybrid", {}).get("bm25", 0.3)  # tuned on selection queries
    models = [f"fine-tuned={result.best_dir}"]
    if result.fusion_saved:  # the shipped model fuses: show its cross-encoder alone too
        models = [f"fine-tuned (alone)=raw:{result.best_dir}", f"fine-tuned+fusion={result.best_dir}"]
    ev = evaluate(models, cands,
                  baselines=["bm25", f"bi-encoder=bi:{cfg.model}", f"hybrid=hybrid:{hybrid_w:g}",
                             f"base=cross:{cfg.model}"],
                  out=str(out / "eval"), max_length=cfg.max_length, query_check=cfg.query_check, log=log)
    step("evaluate", t)
    return DemoResult(str(out), ev, result, round(time.time() - t0, 1), steps)
