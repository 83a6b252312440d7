"""Cascade benchmark: the full rerank of BM25's top 100 vs the tuned cascade, on SciFact test, in one run.

1. Cut-offs are tuned (``finerank.training.fit.tune_cascade``) on a validation sample of SciFact **train** queries
   (``--val-queries-file``: the held-out slice of ``data split``, which the model was not trained on), BM25 top
   ``--top-k``. Test queries choose nothing.
2. On SciFact **test** (a seeded sample of ``--test-queries``; 0 = all 300), each query's list is scored once by
   the full rerank (``Reranker.score_candidates``) and once by the chosen cascade (``Cascade.score_candidates``),
   one list a call as ``serve`` scores a request, the two interleaved query by query (alternating which goes first)
   so that a busy CPU slows both alike. Reported for each: cross-encoder pairs, p50/p95 latency per query
   (tokenization, the bi-encoder when the cascade uses one, and the cross-encoder included), nDCG@10 (ir-measures,
   all test judgments), the cascade's retained share and a paired test (finerank.evaluation.significance.paired_tests).

    python benchmarks/cascade.py --model /work/cascade-model/int8 --val-queries-file /work/cascade-model/split/val.jsonl
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import _cpu_name  # noqa: E402  (the machine line, as the inference benchmark writes it)

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
TARGET = {"ce_pairs_ratio": 4.0, "p50_ratio": 3.0, "retained": 0.99}


def _lists(coll, qids, top_k):
    from finerank.data.candidates import Candidates
    from finerank.core.records import Collection
    from finerank.retrieval.bm25 import candidates as bm25_run

    sub = Collection(coll.corpus, {q: coll.queries[q] for q in qids}, {q: coll.qrels[q] for q in qids})
    return Candidates.from_run(bm25_run(sub, top_k=top_k), sub, source=f"SciFact BM25 top {top_k}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="The cross-encoder (an int8 export folder).")
    ap.add_argument("--val-queries-file", help="Pairs file whose query ids are the validation slice of the train "
                    "queries (default: all train queries).")
    ap.add_argument("--val-queries", type=int, default=60, help="Validation queries sampled for tuning.")
    ap.add_argument("--test-queries", type=int, default=0, help="Test queries sampled (0 = all).")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--latency-budget-ms", type=float)
    ap.add_argument("--latency-queries", type=int, default=10, help="Validation lists timed per setting.")
    ap.add_argument("--n1", default="all,30")
    ap.add_argument("--n2", default="5,10,15,20,30")
    ap.add_argument("--cheap", default="bm25,hybrid")
    ap.add_argument("--long-docs", default="max", help="Documents over max_length: max (served default), first, "
                    "mean or truncate.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cascade.json"))
    args = ap.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from finerank.data.candidates import Candidates
    from finerank.scorers.cascade import Cascade
    from finerank.training.fit import tune_cascade
    from finerank.evaluation.significance import paired_tests
    from finerank.io.collection import load_collection
    from finerank.io.outputs import write_json
    from finerank.core.metrics import per_query
    from finerank.scorers.cross_encoder import Reranker

    t_start = time.time()
    load_start = os.getloadavg()
    train = load_collection(str(SCIFACT), split="train")
    test = load_collection(str(SCIFACT), split="test")
    val_pool = sorted(q for q in train.qrels if q in train.queries)
    if args.val_queries_file:
        keep = set(Candidates.from_file(args.val_queries_file).queries)
        val_pool = [q for q in val_pool if q in keep]
    assert not set(val_pool) & set(test.qrels), "validation queries overlap the test queries"
    val_q = sorted(random.Random(args.seed).sample(val_pool, min(args.val_queries, len(val_pool))))
    test_pool = sorted(q for q in test.qrels if q in test.queries)
    test_q = sorted(random.Random(args.seed).sample(test_pool, args.test_queries)) if args.test_queries else test_pool
    val = _lists(train, val_q, args.top_k)
    tst = _lists(test, test_q, args.top_k)
    print(f"validation: {len(val.docs)} SciFact train queries; test: {len(tst.docs)} SciFact test queries; "
          f"BM25 top {args.top_k}", flush=True)

    reranker = Reranker(args.model, long_docs=args.long_docs)
    out_dir = Path(args.out).parent
    t0 = time.time()
    tuning = tune_cascade(reranker, val, n1=[None if x.strip() == "all" else int(x) for x in args.n1.split(",")],
                          n2=[int(x) for x in args.n2.split(",")], cheap=args.cheap.split(","),
                          tolerance=args.tolerance, latency_budget_ms=args.latency_budget_ms,
                          latency_queries=args.latency_queries, out=out_dir, seed=args.seed,
                          log=lambda m: print(m, flush=True))
    tune_seconds = time.time() - t0
    print(tuning.line, flush=True)
    if tuning.chosen is None:
        sys.exit("no setting chosen")
    cascade = Cascade(tuning.chosen, reranker)
    full = Cascade(type(tuning.chosen)(None), reranker)  # the full rerank through the same object

    runs = {"full": {}, "cascade": {}}
    times = {"full": [], "cascade": []}
    pairs = {"full": 0, "cascade": 0}
    inputs = {"full": 0, "cascade": 0}  # model inputs: a document over max_length is several windows
    cascade.score_candidates(tst.subset([test_q[0]]))  # warm-up
    t0 = time.time()
    for i, q in enumerate(sorted(tst.docs)):
        one = tst.subset([q])
        order = [("full", full), ("cascade", cascade)]
        for name, scorer in (order if i % 2 == 0 else order[::-1]):
            before, windows = scorer.stats["ce_pairs"], reranker.stats["windows"]
            t = time.perf_counter()
            run = scorer.score_candidates(one)
            times[name].append((time.perf_counter() - t) * 1000.0)
            pairs[name] += scorer.stats["ce_pairs"] - before
            inputs[name] += reranker.stats["windows"] - windows
            runs[name].update(run)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(tst.docs)} test queries ({time.time() - t0:.0f}s)", flush=True)
    test_seconds = time.time() - t0

    qids = sorted(tst.qrels)
    pq = {name: per_query(tst.qrels, runs[name], ["nDCG@10"])["nDCG@10"] for name in runs}
    bm25 = per_query(tst.qrels, tst.first_stage_run(), ["nDCG@10"])["nDCG@10"]
    result = {}
    for name in runs:
        result[name] = {"ce_pairs": pairs[name], "ce_pairs_per_query": pairs[name] / len(qids),
                        "ce_model_inputs": inputs[name],
                        "p50_ms": round(float(np.percentile(times[name], 50)), 1),
                        "p95_ms": round(float(np.percentile(times[name], 95)), 1),
                        "nDCG@10": float(np.mean([pq[name][q] for q in qids]))}
    f, c = result["full"], result["cascade"]
    tests = paired_tests(np.array([pq["cascade"][q] for q in qids]), np.array([pq["full"][q] for q in qids]),
                         seed=args.seed)
    ratios = {"ce_pairs_ratio": f["ce_pairs"] / max(1, c["ce_pairs"]), "p50_ratio": f["p50_ms"] / c["p50_ms"],
              "retained": c["nDCG@10"] / f["nDCG@10"] if f["nDCG@10"] else None}
    met = {k: ratios[k] is not None and ratios[k] >= TARGET[k] for k in TARGET}
    report = {
        "full": f, "cascade": c, "bm25": {"nDCG@10": float(np.mean([bm25[q] for q in qids]))},
        "retained_nDCG@10": ratios["retained"], "ratios": ratios, "target": TARGET, "target_met": met,
        "all_targets_met": all(met.values()),
        "paired_test": {"cascade_minus_full": float(c["nDCG@10"] - f["nDCG@10"]), **tests},
        "chosen": tuning.chosen.to_dict(), "chosen_setting": tuning.chosen.label(), "choice": tuning.line,
        "tuning": {"queries": tuning.queries, "latency_queries": tuning.latency_queries,
                   "table": _rel(tuning.files.get("table")), "plot": _rel(tuning.files.get("plot")),
                   "seconds": round(tune_seconds, 1)},
        "test": {"queries": len(qids), "of": len(test_pool), "top_k": args.top_k, "seed": args.seed,
                 "seconds": round(test_seconds, 1)},
        "model": args.model, "backend": reranker.kind, "long_docs": reranker.long_docs,
        "max_length": reranker.max_length, "batch_size": reranker.batch_size,
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                         else sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "note": "CPU shared with other jobs: latencies are noisy; full and cascade interleaved per query"},
        "seconds": round(time.time() - t_start, 1),
    }
    print(f"\n{'':>8} {'CE pairs':>9} {'p50 ms':>8} {'p95 ms':>8} {'nDCG@10':>8}")
    for name in ("full", "cascade"):
        r = result[name]
        print(f"{name:>8} {r['ce_pairs']:9d} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['nDCG@10']:8.4f}")
    print(f"cascade: {ratios['ce_pairs_ratio']:.1f}x fewer CE pairs, {ratios['p50_ratio']:.1f}x lower p50, "
          f"{ratios['retained']:.1%} of the full rerank's nDCG@10 (p rand. {tests['p_randomization']:.3g}, "
          f"W/T/L {tests['wins']}/{tests['ties']}/{tests['losses']}); BM25 alone {report['bm25']['nDCG@10']:.4f}")
    print("target (>=4x fewer pairs, >=3x lower p50, >=99% nDCG@10): " +
          ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    write_json(args.out, report)
    print(f"written: {args.out}")
    return report


def _rel(path) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


if __name__ == "__main__":
    main()
