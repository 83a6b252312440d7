#!/usr/bin/env python
"""Does a fine-tuned cross-encoder read the query? MEDLINE, issue 13's protocol, through finerank's own functions.

20 training queries / 10 held-out queries (sorted ids), training pairs from finerank.retrieval.mine.mine (every judged
document + 4 BM25 negatives from ranks 1-100 + N negatives that are other training queries' positives), finerank.training.cross_encoder
1 epoch, lr 5e-5, max_length 256, batch 16, BCE, no validation (the last checkpoint); then finerank.evaluation.evaluate on BM25
top 100 of the held-out queries with the query-dependence check on every list (each list rescored under another
held-out query's text): nDCG@10 under the true and the wrong query, and the median per-list Spearman correlation.

    python benchmarks/experiments/query_dependence.py --recipes cross=0 cross=4 balanced --out benchmarks/results/query-dependence.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from finerank import Candidates, TrainConfig, aggregate, evaluate, load_collection, mine, train, write_pairs  # noqa: E402
from finerank.retrieval.bm25 import candidates  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "medline"))
    ap.add_argument("--recipes", nargs="+", default=["cross=0", "cross=4", "balanced"],
                    help="mining recipes: comma-separated cross=N, negatives=N, balanced, lr=X, epochs=N")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    coll = load_collection(a.data)
    qids = sorted(coll.queries, key=int)
    train_q, test_q = qids[:20], qids[20:30]
    test = Candidates.from_run(candidates(coll, top_k=100, query_ids=test_q), coll, source="MEDLINE held-out, BM25 top 100")
    rng = random.Random(0)
    rand = statistics.fmean(
        aggregate(test.qrels, {q: {d: rng.random() for d, _ in ds} for q, ds in test.docs.items()})["nDCG@10"]
        for _ in range(20))
    rows = {"random order (mean of 20)": {"nDCG@10": rand}}
    base = evaluate([], test, baselines=["bm25", "hybrid"], query_check=len(test_q), log=lambda m: None)
    for s in base.systems:
        rows[s.name] = {"nDCG@10": s.metrics["nDCG@10"], **s.query_dependence}
    for recipe in a.recipes:
        r = dict(kv.split("=") if "=" in kv else (kv, "1") for kv in recipe.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            pairs = mine(coll, query_ids=train_q, negatives=int(r.get("negatives", 4)), ranks=(1, 100), seed=42,
                         cross_query_negatives=int(r.get("cross", 0)), balanced=r.get("balanced") == "1")
            write_pairs(Path(tmp) / "train.jsonl", pairs)
            t = time.time()
            res = train(TrainConfig(model=a.model, train=str(Path(tmp) / "train.jsonl"), out=str(Path(tmp) / "run"),
                                    epochs=float(r.get("epochs", 1)), lr=float(r.get("lr", 5e-5)), max_length=256,
                                    batch_size=16, loss="bce", fusion="off", eval_steps=10_000,
                                    balance=r.get("balanced") == "1"), progress=False)
            secs = time.time() - t
            rep = evaluate([f"fine-tuned={res.best_dir}"], test, baselines=["bm25"], query_check=len(test_q),
                           max_length=256, log=lambda m: None)
            s = rep.system("fine-tuned")
            rows[f"fine-tuned, {recipe}"] = {"nDCG@10": s.metrics["nDCG@10"], **s.query_dependence,
                                                              "train_pairs": len(pairs), "train_seconds": round(secs)}
        print(json.dumps({k: rows[k] for k in list(rows)[-1:]}, indent=1), flush=True)
    print(f"{'system':<38} {'nDCG@10':>8} {'wrong q':>8} {'corr':>6}")
    for k, r in rows.items():
        wrong, corr = r.get("nDCG@10_wrong_query"), r.get("rank_correlation")
        print(f"{k:<38} {r['nDCG@10']:8.3f} {'' if wrong is None else f'{wrong:8.3f}':>8} "
              f"{'' if corr is None else f'{corr:6.2f}':>6}")
    if a.out:
        Path(a.out).write_text(json.dumps({"protocol": __doc__.split("\n\n")[1], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
