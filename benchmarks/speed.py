"""Speed benchmark: training with length buckets, and `finerank serve` with dynamic batching, each side by side
with what it replaces in one run.

Train rows: ``finerank train`` on the same pairs of ``--train-collection`` (mined BM25 negatives of 150 queries, 30
others validate; ``--train-steps`` steps of 16 pairs at ``--train-max-length``) with default batches and with
``--length-buckets``: pairs/s and validation nDCG@10.

Scoring rows: ``inference.py`` on ``--scoring-queries`` SciFact test queries (BM25 top 20): plain
``CrossEncoder.predict`` vs finerank's ``Reranker`` on torch and on the int8 export, each in its own process.

Server rows:
For each mode (``one-at-a-time``: ``--no-batching``, today's behaviour before batching; ``batching``: the default)
a server runs in its own process on a free loopback port with the same model, and a client sends the same rerank
requests (a Cranfield query and its BM25 top ``--docs`` documents, the embedded collection) at concurrency 1, 8
and 32 from a thread pool: requests/s, p50/p95 latency, status codes. The ratio row divides batching's requests/s by
one-at-a-time's at each concurrency. Then, with a small ``--max-queue``, a burst past the queue: 429s (with
Retry-After), never 5xx.

    python benchmarks/speed.py [--sections server,train,scoring,ray] [--model cross:minilm-l6] [--requests 200]
        [--docs 20] [--train-steps 30] [--train-collection scifact] [--scoring-queries 100] [--ray-queries 50]
        [--out results/speed.json]

The client shares the machine with the server (2 cores here): its threads mostly wait, but the numbers are of the
pair, as a caller on the same host would see them.

Ray rows: the same Cranfield lists (BM25 top ``--docs`` of ``--ray-queries`` queries) scored in one process and by
``RayScorer`` on a local Ray with 1 and 2 actors (their start included), and whether each run equals the
one-process run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONCURRENCY = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_of(n: int, docs: int) -> list[dict]:
    """``n`` rerank bodies: Cranfield queries (cycled) with their BM25 top ``docs`` documents."""
    from finerank.io.collection import load
    from finerank.retrieval.bm25 import candidates

    coll = load("cranfield").collection
    qids = sorted(coll.queries)[: min(n, len(coll.queries))]
    run = candidates(coll, top_k=docs, query_ids=qids)
    bodies = [{"query": coll.queries[q], "documents": [coll.corpus[d].full_text for d in run[q]]} for q in qids]
    return [bodies[i % len(bodies)] for i in range(n)]


class Server:
    def __init__(self, model: str, *flags: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        import tempfile

        # the server's log goes to a file: a pipe nobody reads fills up and stops the server mid-run
        self.log = tempfile.NamedTemporaryFile("w+b", prefix="speed-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "finerank", "serve", "--model", model, "--port",
                                      str(self.port), *flags], stdout=subprocess.DEVNULL, stderr=self.log)

    def __enter__(self):
        import httpx

        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.errors()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not start in 180 s")

    def errors(self) -> str:
        """The server's log so far (tracebacks of any 5xx among it)."""
        return Path(self.log.name).read_text(errors="replace")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def load_test(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send every body once, ``concurrency`` at a time: requests/s, latency percentiles, status codes."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=600, limits=limits) as client:
        def one(body):
            t = time.perf_counter()
            r = client.post("/rerank", json=body)
            return time.perf_counter() - t, r.status_code, r.headers.get("retry-after")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            done = list(pool.map(one, bodies))
        wall = time.perf_counter() - t0
    lat = sorted(d[0] for d in done)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    return {"concurrency": concurrency, "requests": len(bodies), "seconds": round(wall, 2),
            "requests_per_s": round(len(bodies) / wall, 2), "p50_s": round(q[49], 3), "p95_s": round(q[94], 3),
            "status": dict(Counter(str(d[1]) for d in done)),
            "retry_after_on_429": all(d[2] == "1" for d in done if d[1] == 429)}


def metrics_of(url: str) -> dict:
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("finerank_batch") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def train_rows(model: str, steps: int, max_length: int, batch: int, work: Path, collection: str = "cranfield",
               seed: int = 42) -> dict:
    """``finerank train`` on the same pairs of a shared collection (BM25 negatives of 150 queries; 30 others
    validate; SciFact: its train queries) with and without ``--length-buckets``: training pairs/s and the validation
    nDCG@10 of each, side by side. Without buckets it is sentence-transformers' ``CrossEncoderTrainer`` as it comes
    (finerank train measured 0.98x a plain trainer loop on the same steps before buckets existed)."""
    from finerank.io.collection import load
    from finerank.io.outputs import write_pairs
    from finerank.retrieval.mine import mine
    from finerank.training.config import TrainConfig
    from finerank.training.train import train

    split = "train" if collection == "scifact" else None  # SciFact's qrels hold a train and a test split
    if collection != "cranfield":  # cranfield is embedded; the others are the shared BEIR folders
        collection = str(ROOT.parents[1] / "shared" / "data" / collection)
    ds = load(collection, split=split)
    qids = sorted({p.query_id for p in ds.pairs})
    write_pairs(work / "train.jsonl", mine(ds.collection, query_ids=qids[:150], negatives=4, ranks=(1, 30)))
    val = set(qids[150:180])
    write_pairs(work / "val.jsonl", [p for p in ds.pairs if p.query_id in val])
    rows = {}
    for name, buckets in (("default batches", False), ("length buckets", True)):
        r = train(TrainConfig(model=model, train=str(work / "train.jsonl"), val=str(work / "val.jsonl"),
                              val_corpus=collection, val_top_k=20, out=str(work / name.replace(" ", "-")),
                              max_steps=steps, eval_steps=steps, batch_size=batch, max_length=max_length, loss="bce",
                              fusion="off", query_check=0, length_buckets=buckets, seed=seed), progress=False)
        rows[name] = {"pairs_per_s": round(r.pairs_per_second, 2), "val_nDCG@10": round(r.best_metrics["nDCG@10"], 4)}
        print(f"train, {name:15s}: {rows[name]['pairs_per_s']:6.2f} pairs/s, validation nDCG@10 "
              f"{rows[name]['val_nDCG@10']:.4f}", flush=True)
    a, b = rows["default batches"], rows["length buckets"]
    rows["ratio"] = {"pairs_per_s": round(b["pairs_per_s"] / a["pairs_per_s"], 2),
                     "val_nDCG@10_delta": round(b["val_nDCG@10"] - a["val_nDCG@10"], 4)}
    print(f"length buckets / default: {rows['ratio']['pairs_per_s']:.2f}x pairs/s, validation nDCG@10 "
          f"{rows['ratio']['val_nDCG@10_delta']:+.4f}")
    rows["recipe"] = {"collection": Path(collection).name, "seed": seed, "steps": steps, "batch": batch,
                      "max_length": max_length, "loss": "bce", "train_queries": 150, "val_queries": 30}
    return rows


def saved(model: str, max_length: int) -> str:
    """``model`` itself, or, where it is an embedding model as a cross-encoder (a fresh head drawn at each load), a
    temp folder holding one such model, so that every process and actor scores with the same weights."""
    import tempfile

    from finerank.scorers.cross_encoder import Reranker
    from finerank.scorers.load import is_bi_encoder, load_scorer

    local = load_scorer(model, max_length=max_length)
    if isinstance(local, Reranker) and local.model_dir and is_bi_encoder(str(local.model_dir)):
        model = tempfile.mkdtemp(prefix="speed-ce-")
        local.backend.ce.save_pretrained(model)
    return model


def scoring_rows(model: str, queries: int, max_length: int, repeat: int = 1) -> dict:
    """Scoring pairs/s on the same mixed-length lists (SciFact test queries, BM25 top 20): plain
    ``CrossEncoder.predict``, finerank's ``Reranker`` on torch and on the int8 export, through ``inference.py`` (each
    variant in its own process, at the model's own max_length; one code path for both benchmarks)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import inference

    model = saved(model, max_length)
    rep = inference.main(["--model", model, "--queries", str(queries), "--top-k", "20", "--repeat", str(repeat)])
    rows = {v: {k: (round(r[k], 4) if isinstance(r[k], float) else r[k])
                for k in ("pairs_per_s", "pairs_per_s_each", "speed_vs_plain", "nDCG@10", "nDCG@10_vs_plain",
                          "model_inputs", "max_length")}
            for v, r in rep["results"].items()}
    bm25 = round(rep["bm25"]["nDCG@10"], 4)
    rows["lists"] = {"queries": rep["queries"], "top_k": rep["top_k"], "pairs": rep["pairs"], "repeat": repeat,
                     "bm25_nDCG@10": bm25}
    # a share of a useless model's nDCG@10 says nothing about the export: say so in the results, not only in prose
    rows["quality_retained_means_something"] = rows["plain"]["nDCG@10"] > bm25
    if not rows["quality_retained_means_something"]:
        print(f"the model ranks below BM25 ({rows['plain']['nDCG@10']:.4f} < {bm25:.4f}): the int8 rows' share of "
              f"its nDCG@10 proves nothing; their speed ratios stand")
    return rows


def ray_rows(model: str, queries: int, docs: int, max_length: int) -> dict:
    """Offline scoring of the same Cranfield lists (BM25 top ``docs`` of ``queries`` queries) in one process, and on
    a local Ray with 1 and with 2 actors (:class:`finerank.scorers.on_ray.RayScorer`): seconds (actors' start and
    model load included: what a user pays), pairs/s, and whether the run equals the one-process run (order of every
    list; largest score difference)."""
    import ray

    from finerank.data.candidates import Candidates
    from finerank.io.collection import load
    from finerank.scorers.load import load_scorer
    from finerank.scorers.on_ray import RayScorer

    model = saved(model, max_length)  # every actor loads the same model (RayScorer refuses a fresh head)
    coll = load("cranfield").collection
    qids = set(sorted(coll.queries, key=int)[:queries])
    cands = Candidates.from_bm25([p for p in coll.pairs() if p.query_id in qids], coll, top_k=docs)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows: dict = {"lists": len(cands.docs), "pairs": cands.n_pairs}
    t = time.perf_counter()
    one = load_scorer(model, max_length=max_length).score_candidates(cands)  # the saved model, loaded as a user would
    rows["one process"] = {"seconds": round(time.perf_counter() - t, 2)}
    for workers in (1, 2):
        t = time.perf_counter()
        run = RayScorer(model, workers=workers, max_length=max_length).score_candidates(cands)
        row = {"seconds": round(time.perf_counter() - t, 2),
               "same_order": all(sorted(run[q], key=run[q].get) == sorted(one[q], key=one[q].get) for q in one)
               and list(run) == list(one),
               "max_abs_diff": max(abs(run[q][d] - one[q][d]) for q in one for d in one[q])}
        rows[f"ray, {workers} worker{'s' * (workers > 1)}"] = row
    ray.shutdown()
    for name in ("one process", "ray, 1 worker", "ray, 2 workers"):
        rows[name]["pairs_per_s"] = round(cands.n_pairs / rows[name]["seconds"], 2)
        extra = {k: v for k, v in rows[name].items() if k in ("same_order", "max_abs_diff")}
        print(f"scoring, {name:15s}: {rows[name]['seconds']:7.2f} s, {rows[name]['pairs_per_s']:6.2f} pairs/s "
              f"{extra or ''}", flush=True)
    rows["ratio_2_over_1_workers"] = round(rows["ray, 1 worker"]["seconds"] / rows["ray, 2 workers"]["seconds"], 2)
    print(f"ray: 2 workers / 1 worker {rows['ratio_2_over_1_workers']:.2f}x")
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cross:minilm-l6",
                    help="the cross-encoder served (a finerank model spec: folder, run folder, cross:NAME)")
    ap.add_argument("--requests", type=int, default=200, help="requests at each concurrency")
    ap.add_argument("--docs", type=int, default=20, help="documents a request")
    ap.add_argument("--max-length", type=int, default=128,
                    help="the server and ray rows' max_length (the scoring rows use the model's own)")
    ap.add_argument("--burst", type=int, default=200, help="requests of the queue-limit burst (0: skip it)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--sections", default="server,train,scoring,ray",
                    help="which rows: server, train, scoring, ray (comma-separated)")
    ap.add_argument("--scoring-queries", type=int, default=100, help="SciFact test queries the scoring rows score")
    ap.add_argument("--scoring-repeat", type=int, default=1, help="run the scoring variants N times (median)")
    ap.add_argument("--ray-queries", type=int, default=50, help="Cranfield queries the ray rows score")
    ap.add_argument("--train-model", default="minilm-l6", help="the cross-encoder the train rows fine-tune")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--train-max-length", type=int, default=256)
    ap.add_argument("--train-collection", default="cranfield", choices=("cranfield", "scifact"),
                    help="the shared collection whose mined pairs the train rows use")
    ap.add_argument("--train-seed", type=int, default=42, help="the seed of both train rows (batch order, head)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    result = {"server": None, "ratio": None, "burst": None, "train": None, "scoring": None, "ray": None}
    if "scoring" in sections:
        result["scoring"] = scoring_rows(args.model, args.scoring_queries, args.max_length,
                                         args.scoring_repeat)
    if "ray" in sections:
        result["ray"] = ray_rows(args.model, args.ray_queries, args.docs, args.max_length)
    if "train" in sections:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result["train"] = train_rows(args.train_model, args.train_steps, args.train_max_length, 16, Path(tmp),
                                         args.train_collection, args.train_seed)
    if "server" in sections:
        result.update(server_rows(args))
    import torch

    result = {"_run": {"command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "device": f"CPU: {platform.machine()}, {os.cpu_count()} cores, torch threads "
                                 f"{torch.get_num_threads()}", "python": platform.python_version(),
                       "model": args.model, "docs_per_request": args.docs, "max_length": args.max_length},
              **result}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return result


def server_rows(args) -> dict:
    """The server rows: one-at-a-time and batching at each concurrency, their ratios, and the queue-limit burst."""
    bodies = requests_of(args.requests, args.docs)
    common = ["--max-length", str(args.max_length)]
    modes = {"one-at-a-time": ["--no-batching"], "batching": []}
    rows: dict[str, list[dict]] = {}
    for mode, flags in modes.items():
        with Server(args.model, *common, *flags) as srv:
            load_test(srv.url, bodies[:8], 8)  # warm-up, not counted
            rows[mode] = []
            for c in CONCURRENCY:
                row = load_test(srv.url, bodies, c)
                rows[mode].append(row)
                print(f"{mode:14s} c={c:2d}: {row['requests_per_s']:6.2f} req/s, p50 {row['p50_s']:.3f} s, "
                      f"p95 {row['p95_s']:.3f} s, status {row['status']}", flush=True)
            if mode == "batching":
                rows["batcher_metrics"] = metrics_of(srv.url)
            if any(code.startswith("5") for row in rows[mode] for code in row["status"]):
                rows.setdefault("5xx_log", {})[mode] = srv.errors()[-4000:]
                print(f"{mode}: 5xx answers; the server's log ends:\n{rows['5xx_log'][mode]}", flush=True)
    ratio = [{"concurrency": a["concurrency"],
              "requests_per_s_ratio": round(b["requests_per_s"] / a["requests_per_s"], 2),
              "p95_ratio": round(b["p95_s"] / a["p95_s"], 2)}
             for a, b in zip(rows["one-at-a-time"], rows["batching"])]
    for r in ratio:
        print(f"batching / one-at-a-time at c={r['concurrency']:2d}: {r['requests_per_s_ratio']:.2f}x requests/s, "
              f"p95 {r['p95_ratio']:.2f}x")
    burst = None
    if args.burst:
        with Server(args.model, *common, "--max-queue", str(4 * args.docs)) as srv:
            burst = load_test(srv.url, requests_of(args.burst, args.docs), 32)
            burst["max_queue"] = 4 * args.docs
        print(f"burst past --max-queue {4 * args.docs}: status {burst['status']}, Retry-After on every 429: "
              f"{burst['retry_after_on_429']}")
    return {"server": rows, "ratio": ratio, "burst": burst}


if __name__ == "__main__":
    main()
