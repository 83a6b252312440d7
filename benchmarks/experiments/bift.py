"""Experiment (2026-11-28, CPU): fine-tune the bi-encoder (the hybrid's second model) instead of the cross-encoder.

MultipleNegativesRankingLoss on (query, relevant document, BM25 negative) triplets of the demo's training queries,
then the bi-encoder alone and the hybrid (weight on BM25 chosen on dev) on dev and test, BM25 top 20.
"""
import os, sys, time, random, argparse, numpy as np, torch
from finerank.io.collection import load
from finerank.data.split import split_dataset
from finerank.retrieval.bm25 import index_for
from finerank.core.metrics import aggregate
from finerank.io.models import load_bi_encoder, quiet_transformers
CACHE = os.environ.get("FINERANK_EXP_DIR", "bench-cache"); os.makedirs(CACHE, exist_ok=True)
ap = argparse.ArgumentParser(); ap.add_argument("--lr", type=float, default=2e-5); ap.add_argument("--epochs", type=float, default=1)
ap.add_argument("--batch", type=int, default=16); ap.add_argument("--maxlen", type=int, default=256); ap.add_argument("--minrel", type=int, default=1)
ap.add_argument("--negs", type=int, default=1)
args = ap.parse_args()
quiet_transformers(); t0 = time.time()
ds = load("cranfield"); coll = ds.collection
parts = split_dataset(ds, val_fraction=0.1, test_fraction=0.2, seed=42)
tr_q = sorted({p.query_id for p in parts.train}); dev_q = sorted({p.query_id for p in parts.val}); te_q = sorted({p.query_id for p in parts.test})
index = index_for(coll.corpus); doc_ids = index.doc_ids
K = 20
L = {}
for q in coll.queries:
    s = index.scores(coll.queries[q]); order = np.lexsort((np.arange(len(s)), -s))[:30]; order = order[s[order] > 0]
    L[q] = (order, s)
def z(v): return (v - v.mean()) / (v.std() + 1e-9)
def evaluate(model, tag):
    qs = dev_q + te_q
    docs = sorted({i for q in qs for i in L[q][0][:K]})
    E = model.encode([coll.corpus[doc_ids[i]].full_text for i in docs], normalize_embeddings=True, batch_size=64, show_progress_bar=False)
    pos = {i: j for j, i in enumerate(docs)}
    QE = model.encode([coll.queries[q] for q in qs], normalize_embeddings=True, show_progress_bar=False)
    res = {}
    for split, sq in (("dev", dev_q), ("test", te_q)):
        runs = {}
        for w in np.arange(0, 1.01, 0.1):
            run = {}
            for q in sq:
                o, s = L[q]; o = o[:K]
                c = E[[pos[i] for i in o]] @ QE[qs.index(q)]
                f = w * z(s[o]) + (1 - w) * z(c)
                run[q] = {doc_ids[i]: float(v) for i, v in zip(o, f)}
            runs[round(w, 1)] = aggregate({q: coll.qrels.get(q, {}) for q in sq}, run)["nDCG@10"]
        res[split] = runs
    wbest = max(res["dev"], key=lambda w: (res["dev"][w], -w))
    print(f"{tag}: bi dev {res['dev'][0.0]:.4f} test {res['test'][0.0]:.4f} | hybrid(w={wbest}) dev {res['dev'][wbest]:.4f} test {res['test'][wbest]:.4f} | test by w {[round(res['test'][w],3) for w in sorted(res['test'])]} ({time.time()-t0:.0f}s)", flush=True)
model = load_bi_encoder("minilm-l6"); model.max_seq_length = args.maxlen
evaluate(model, "base")
rng = random.Random(0); rows = {"anchor": [], "positive": [], "negative": []}
for q in tr_q:
    rel = {d for d, g in coll.qrels.get(q, {}).items() if g >= args.minrel}
    negs = [doc_ids[i] for i in L[q][0] if doc_ids[i] not in coll.qrels.get(q, {})]
    for d in sorted(rel):
        if d not in coll.corpus: continue
        rows["anchor"].append(coll.queries[q]); rows["positive"].append(coll.corpus[d].full_text)
        rows["negative"].append(coll.corpus[rng.choice(negs[:20])].full_text if negs else coll.corpus[rng.choice(doc_ids)].full_text)
print(len(rows["anchor"]), "triplets", flush=True)
from datasets import Dataset as HF
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
from sentence_transformers.training_args import BatchSamplers
a = SentenceTransformerTrainingArguments(output_dir=CACHE + "/biout", num_train_epochs=args.epochs, per_device_train_batch_size=args.batch,
    learning_rate=args.lr, warmup_steps=0.1, save_strategy="no", logging_steps=20, seed=42, report_to="none", disable_tqdm=True,
    batch_sampler=BatchSamplers.NO_DUPLICATES)
tr = SentenceTransformerTrainer(model=model, args=a, train_dataset=HF.from_dict(rows), loss=losses.MultipleNegativesRankingLoss(model))
t1 = time.time(); tr.train(); print(f"train {time.time()-t1:.0f}s", flush=True)
evaluate(model, f"ft lr={args.lr} ep={args.epochs}")
