"""Inference benchmark: pairs per second, peak memory and nDCG@10 of three ways to rerank the same candidates.

The candidates are SciFact's test queries (../shared/data/scifact, qrels/test.tsv) with BM25's top ``--top-k``
(bm25s through finerank.retrieval.bm25). The same pairs are scored by

  (a) ``plain``: ``sentence_transformers.CrossEncoder.predict`` with its defaults (batch 32, the model's max length);
  (b) ``reranker-torch``: ``finerank.Reranker`` on the same torch model (length-grouped batches, max windows);
  (c) ``reranker-int8``: ``finerank.Reranker`` on the model exported by ``finerank export --quantize int8``;
  (d) ``reranker-int8-max``: the same with sliding windows (MaxP), finerank's default for documents longer than
      the model's max_length: more model inputs a pair, and the whole document seen.

(b) and (c) truncate as (a) does (``long_docs="truncate"``), so the three score the same model inputs.

Each runs in a fresh process (so that its peak memory is its own), one after another in this one run, so the
ratios hold; ``--repeat`` runs the sequence again and keeps each one's median speed. nDCG@10 is ir-measures' over
the test qrels (documents outside the candidates count as missed).

    python benchmarks/inference.py --model minilm-l6 [--queries 300] [--top-k 20] [--repeat 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
VARIANTS = ("plain", "reranker-torch", "reranker-int8", "reranker-int8-max")


# ------------------------------------------------------------------------------------------------ child
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(variant: str, model: str, pairs_file: str, out_file: str, batch_size: int) -> None:
    """Score the pairs with one variant; write speed, memory and scores as JSON."""
    peak = [_rss_mb()]
    done = threading.Event()

    def sample():  # RSS sampled every 10 ms from the start: imports, model load and scoring
        while not done.wait(0.01):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    from finerank.io.pairs import iter_pairs

    pairs = [(p.query, p.document) for p in iter_pairs(pairs_file, max_label=None)]
    t_load = time.perf_counter()
    if variant == "plain":
        from finerank.io.models import load_cross_encoder

        ce = load_cross_encoder(model)

        def score(x):
            return ce.predict(x, show_progress_bar=False)
    else:
        from finerank.scorers.cross_encoder import Reranker

        rr = Reranker(model, batch_size=batch_size, long_docs="max" if variant.endswith("-max") else "truncate")

        def score(x):
            return rr.score(x)
    load_s = time.perf_counter() - t_load
    score(pairs[:16])  # warm-up: first-call allocations and kernel choices
    before = _rss_mb()
    peak_loaded = peak[0] = max(peak[0], before)
    windows = rr.stats["windows"] if variant != "plain" else None
    t0 = time.perf_counter()
    scores = score(pairs)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mb())
    Path(out_file).write_text(json.dumps({
        "variant": variant, "pairs": len(pairs), "seconds": seconds, "pairs_per_s": len(pairs) / seconds,
        "load_s": load_s, "rss_before_mb": before, "rss_peak_mb": peak[0], "rss_peak_loaded_mb": peak_loaded,
        "model_inputs": None if windows is None else rr.stats["windows"] - windows,
        "max_length": int(ce.max_length if variant == "plain" else rr.max_length),
        "scores": [float(s) for s in scores]}))


# ------------------------------------------------------------------------------------------------ parent
def candidates(queries: int | None, top_k: int):
    from finerank.io.collection import load_collection
    from finerank.retrieval.mine import candidate_pairs
    from finerank.retrieval.bm25 import candidates as bm25_candidates

    coll = load_collection(SCIFACT, split="test")
    qids = list(coll.queries)[:queries] if queries else list(coll.queries)
    run = bm25_candidates(coll, top_k=top_k, query_ids=qids)
    return coll.subset(qids), run, candidate_pairs(coll, run)


def run_variant(variant: str, model: str, pairs_file: Path, tmp: Path, batch_size: int) -> dict:
    out = tmp / f"{variant}-{time.time_ns()}.json"
    cmd = [sys.executable, __file__, "--child", variant, "--model", model, "--pairs-file", str(pairs_file),
           "--child-out", str(out), "--batch-size", str(batch_size)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm-l6", help="model to benchmark (name, folder, finerank run folder)")
    ap.add_argument("--exported", default=None, help="its int8 export (default: exported now, to a temp folder)")
    ap.add_argument("--queries", type=int, default=None, help="first N test queries (default: all 300)")
    ap.add_argument("--top-k", type=int, default=20, help="BM25 candidates a query")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="run the sequence N times; report median speeds")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.pairs_file, args.child_out, args.batch_size)
        return {}
    if not (SCIFACT / "corpus.jsonl").exists():
        raise SystemExit(f"{SCIFACT} is absent: this benchmark needs the shared SciFact collection")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    from finerank.io.outputs import write_pairs
    from finerank.core.metrics import aggregate

    load_start = os.getloadavg()
    coll, bm25_run, pairs = candidates(args.queries, args.top_k)
    print(f"SciFact test: {len(coll.queries)} queries, BM25 top {args.top_k}: {len(pairs)} pairs", flush=True)
    with tempfile.TemporaryDirectory(prefix="finerank-bench-") as tmp:
        tmp = Path(tmp)
        pairs_file = tmp / "pairs.jsonl"
        write_pairs(pairs_file, pairs)
        exported = args.exported
        if exported is None:
            from finerank.serving.export import export

            t0 = time.perf_counter()
            rep = export(args.model, tmp / "int8", quantize="int8", validation=None, log=lambda m: None)
            exported = rep.out
            print(f"exported int8 in {time.perf_counter() - t0:.0f}s ({rep.size_mb} MB)", flush=True)
        models = {"plain": args.model, "reranker-torch": args.model, "reranker-int8": exported,
                  "reranker-int8-max": exported}
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for rnd in range(args.repeat):
            for v in VARIANTS:
                r = run_variant(v, models[v], pairs_file, tmp, args.batch_size)
                runs[v].append(r)
                print(f"  round {rnd + 1} {v:>17}: {r['pairs_per_s']:.1f} pairs/s", flush=True)
    qrels = coll.qrels
    results = {}
    for v, rs in runs.items():
        run: dict = {}
        for p, s in zip(pairs, rs[0]["scores"]):
            run.setdefault(p.query_id, {})[p.doc_id] = s
        results[v] = {
            "pairs_per_s": statistics.median(r["pairs_per_s"] for r in rs),
            "pairs_per_s_each": [round(r["pairs_per_s"], 2) for r in rs],
            "nDCG@10": aggregate(qrels, run, ["nDCG@10"])["nDCG@10"],
            "rss_peak_mb": max(r["rss_peak_mb"] for r in rs),
            "rss_scoring_extra_mb": max(r["rss_peak_mb"] - r["rss_before_mb"] for r in rs),
            "model_inputs": rs[0]["model_inputs"] or len(pairs),
            "max_length": rs[0]["max_length"],
            "load_s": statistics.median(r["load_s"] for r in rs),
        }
    base = results["plain"]
    for v in VARIANTS:
        results[v]["speed_vs_plain"] = results[v]["pairs_per_s"] / base["pairs_per_s"]
        results[v]["nDCG@10_vs_plain"] = results[v]["nDCG@10"] / base["nDCG@10"] if base["nDCG@10"] else None
    bm25 = aggregate(qrels, bm25_run, ["nDCG@10"])["nDCG@10"]
    report = {
        "model": args.model, "exported": args.exported or "(exported during the run)", "queries": len(coll.queries),
        "top_k": args.top_k, "pairs": len(pairs), "repeat": args.repeat, "bm25": {"nDCG@10": bm25}, "results": results,
        "machine": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "goal": {"int8_speed_vs_plain": results["reranker-int8"]["speed_vs_plain"],
                 "int8_nDCG@10_vs_plain": results["reranker-int8"]["nDCG@10_vs_plain"]},
    }
    print(f"\nBM25 nDCG@10 {bm25:.4f}")
    print(f"{'variant':>17} {'pairs/s':>8} {'x plain':>8} {'nDCG@10':>8} {'% plain':>8} {'inputs':>7} {'peak MB':>8} "
          f"{'+scoring':>9}")
    for v in VARIANTS:
        r = results[v]
        pct = "n/a" if r["nDCG@10_vs_plain"] is None else f"{r['nDCG@10_vs_plain']:.1%}"
        print(f"{v:>17} {r['pairs_per_s']:8.1f} {r['speed_vs_plain']:8.2f} {r['nDCG@10']:8.4f} {pct:>8} "
              f"{r['model_inputs']:7d} {r['rss_peak_mb']:8.0f} {r['rss_scoring_extra_mb']:9.0f}")
    print(f"load average: {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"({os.cpu_count()} CPUs; other work on the machine slows every variant alike only roughly)")
    if args.out:
        from finerank.io.outputs import write_json

        write_json(args.out, report)
        print(f"written: {args.out}")
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
