"""Experiment (2026-11-28, CPU): train the cross-encoder as a correction to the BM25 + bi-encoder hybrid.

The loss (LambdaLoss) sees ce + alpha * hybrid, where hybrid is the z-scored BM25 / bi-encoder fusion tuned on the
selection queries; at step 0 the sum ranks exactly like the hybrid. Cranfield, the demo's split (seed 42), BM25 top 20.
Prints nDCG@10 of the cross-encoder alone and of ce + alpha * hybrid on the selection (dev) and held-out (test)
queries every --eval-every steps. Results: benchmarks/README.md, "Recipe experiments on this CPU".
"""
import argparse, json, random, sys, time
import numpy as np, torch
from finerank.io.collection import load
from finerank.data.split import split_dataset
from finerank.retrieval.bm25 import index_for
from finerank.core.metrics import aggregate
from finerank.io.models import load_cross_encoder, load_bi_encoder, quiet_transformers
CACHE = os.environ.get("FINERANK_EXP_DIR", "bench-cache"); os.makedirs(CACHE, exist_ok=True)

ap = argparse.ArgumentParser()
ap.add_argument("--mode", default="resid")  # resid: the loss sees ce + hybrid; plain: ce alone
ap.add_argument("--alpha", type=float, default=1.0)
ap.add_argument("--k", type=int, default=20)
ap.add_argument("--train-k", type=int, default=30)
ap.add_argument("--list", type=int, default=10)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--steps", type=int, default=120)
ap.add_argument("--eval-every", type=int, default=30)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--max-length", type=int, default=256)
ap.add_argument("--collection", default="cranfield")
args = ap.parse_args()
quiet_transformers()
t0 = time.time()
ds = load(args.collection); coll = ds.collection
parts = split_dataset(ds, val_fraction=0.1, test_fraction=0.2, seed=42)
tr_q = sorted({p.query_id for p in parts.train}); dev_q = sorted({p.query_id for p in parts.val}); te_q = sorted({p.query_id for p in parts.test})
qrels = coll.qrels
index = index_for(coll.corpus)
doc_ids = index.doc_ids
cache = f"{CACHE}/{args.collection}-emb.npz"
try:
    z = np.load(cache); D, Q, qids = z["D"], z["Q"], list(z["qids"])
except FileNotFoundError:
    bi = load_bi_encoder("minilm-l6")
    D = bi.encode([coll.corpus[d].full_text for d in doc_ids], normalize_embeddings=True, batch_size=64, show_progress_bar=False)
    qids = list(coll.queries)
    Q = bi.encode([coll.queries[q] for q in qids], normalize_embeddings=True, show_progress_bar=False)
    np.savez(cache, D=D, Q=Q, qids=np.array(qids))
qpos = {q: i for i, q in enumerate(qids)}
didx = {d: i for i, d in enumerate(doc_ids)}
print(f"prep {time.time()-t0:.0f}s", flush=True)

def feats(q, depth):
    s = index.scores(coll.queries[q]); c = D @ Q[qpos[q]]
    order = np.lexsort((np.arange(len(s)), -s))[:depth]
    order = order[s[order] > 0]
    top = order[:args.k]
    zb = (s - s[top].mean()) / (s[top].std() + 1e-9); ze = (c - c[top].mean()) / (c[top].std() + 1e-9)
    return order, zb, ze

F = {q: feats(q, max(args.k, args.train_k)) for q in coll.queries}
def run_of(qs, score):
    return {q: {doc_ids[i]: float(score(q, i)) for i in F[q][0][:args.k]} for q in qs}
def ev(qs, run):
    return aggregate({q: qrels.get(q, {}) for q in qs}, run)["nDCG@10"]
# hybrid weight on dev
best = max((ev(dev_q, run_of(dev_q, lambda q, i, w=w: w*F[q][1][i] + (1-w)*F[q][2][i])), w) for w in np.arange(0, 1.01, 0.1))
W = best[1]
prior = lambda q, i: W*F[q][1][i] + (1-W)*F[q][2][i]
for name, fn in [("bm25", lambda q, i: F[q][1][i]), ("bi", lambda q, i: F[q][2][i]), (f"hybrid w={W:.1f}", prior)]:
    print(f"{name:14s} dev {ev(dev_q, run_of(dev_q, fn)):.4f} test {ev(te_q, run_of(te_q, fn)):.4f}", flush=True)

rng = random.Random(0)
rows = []
for q in tr_q:
    order, zb, ze = F[q]
    cand = list(order[:args.train_k])
    rel = {d: g for d, g in qrels.get(q, {}).items() if g > 0}
    pos = [i for i in cand if doc_ids[i] in rel]
    if not pos: continue
    neg = [i for i in cand if doc_ids[i] not in rel]
    neg.sort(key=lambda i: -prior(q, i))
    rng.shuffle(pos)
    npos = min(len(pos), max(1, args.list // 2))
    chosen = pos[:npos] + neg[: args.list - npos]
    rows.append({"query": coll.queries[q], "docs": [coll.corpus[doc_ids[i]].full_text for i in chosen],
                 "labels": [float(rel.get(doc_ids[i], 0)) for i in chosen],
                 "prior": [args.alpha*prior(q, i) if args.mode == "resid" else 0.0 for i in chosen]})
print(f"{len(rows)} training lists, {sum(len(r['docs']) for r in rows)} pairs", flush=True)
from datasets import Dataset as HF
from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
from sentence_transformers.cross_encoder import losses as L
from transformers import TrainerCallback

model = load_cross_encoder("minilm-l6", max_length=args.max_length, seed=42)

class Offset(torch.nn.Module):
    def __init__(self): super().__init__(); self.off = None
    def forward(self, x): return x + self.off.to(x.device, x.dtype) if self.off is not None else x

class ResidLambda(L.LambdaLoss):
    def forward(self, inputs, labels, prompt=None, task=None):
        q, docs, pri = inputs
        self.activation_fn.off = torch.tensor([p for ps in pri for p in ps])
        return super().forward([q, docs], labels)
off = Offset()
loss = ResidLambda(model, activation_fn=off, mini_batch_size=args.batch)
ds_tr = HF.from_list(rows)
per_step = max(1, round(args.batch / args.list))

def score(qs):
    flat = [(q, i) for q in qs for i in F[q][0][:args.k]]
    s = model.predict([(coll.queries[q], coll.corpus[doc_ids[i]].full_text) for q, i in flat], batch_size=32, show_progress_bar=False)
    out = {}
    for (q, i), v in zip(flat, s): out.setdefault(q, {})[i] = float(v)
    return out
hist = []
def report(step):
    model.eval()
    t = time.time()
    for split, qs in (("dev", dev_q), ("test", te_q)):
        ce = score(qs)
        alone = ev(qs, {q: {doc_ids[i]: v for i, v in d.items()} for q, d in ce.items()})
        res = ev(qs, {q: {doc_ids[i]: v + args.alpha*prior(q, i) for i, v in d.items()} for q, d in ce.items()})
        hist.append({"step": step, "split": split, "alone": alone, "resid": res})
    d, te = hist[-2], hist[-1]
    print(f"step {step:4d}  dev alone {d['alone']:.4f} resid {d['resid']:.4f} | test alone {te['alone']:.4f} resid {te['resid']:.4f}  ({time.time()-t:.0f}s eval, {time.time()-t0:.0f}s total)", flush=True)
    model.train()

class CB(TrainerCallback):
    def on_step_end(self, a, state, control, **kw):
        if state.global_step % args.eval_every == 0: report(state.global_step)
targs = CrossEncoderTrainingArguments(output_dir=CACHE + "/out", max_steps=args.steps, per_device_train_batch_size=per_step,
    learning_rate=args.lr, warmup_steps=0.1, weight_decay=0.01, save_strategy="no", eval_strategy="no", logging_steps=10,
    seed=42, report_to="none", disable_tqdm=True, remove_unused_columns=False)
report(0)
tr = CrossEncoderTrainer(model=model, args=targs, train_dataset=ds_tr, loss=loss, callbacks=[CB()])
t1 = time.time(); tr.train(); print(f"train {time.time()-t1:.0f}s", flush=True)
json.dump({"args": vars(args), "W": W, "hist": hist}, open(f"{CACHE}/res-{args.mode}-{args.lr}-{args.alpha}.json", "w"))
