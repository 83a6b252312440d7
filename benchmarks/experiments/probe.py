"""Experiment (2026-11-28, CPU): how much relevance can a linear head read from the frozen backbone?

Encodes (query, document) pairs of BM25's top 20 jointly with minilm-l6 (as the cross-encoder sees them), fits a
logistic regression on the training queries' pairs (CLS state, BERT pooler output, mean of token states) and
prints nDCG@10 on the demo's selection (dev) and held-out (test) queries. Needs scikit-learn.
"""
import os, sys, time, numpy as np, torch
from finerank.io.collection import load
from finerank.data.split import split_dataset
from finerank.retrieval.bm25 import index_for
from finerank.core.metrics import aggregate
from finerank.io.models import load_cross_encoder, quiet_transformers
quiet_transformers(); torch.manual_seed(0)
t0 = time.time()
ds = load("cranfield"); coll = ds.collection
parts = split_dataset(ds, val_fraction=0.1, test_fraction=0.2, seed=42)
tr_q = sorted({p.query_id for p in parts.train}); dev_q = sorted({p.query_id for p in parts.val}); te_q = sorted({p.query_id for p in parts.test})
index = index_for(coll.corpus); doc_ids = index.doc_ids
K = 20
def lst(q):
    s = index.scores(coll.queries[q]); order = np.lexsort((np.arange(len(s)), -s))[:K]; order = order[s[order] > 0]
    return [(q, doc_ids[i], s[i]) for i in order]
ce = load_cross_encoder("minilm-l6", max_length=256, seed=42); ce.model.eval()
hf = ce[0].auto_model if hasattr(ce[0], "auto_model") else ce.model
print(type(hf))
def featurize(rows):
    out = {"cls": [], "pool": [], "mean": []}
    for i in range(0, len(rows), 32):
        b = rows[i:i+32]
        tok = ce.tokenizer([coll.queries[q] for q, *_ in b], [coll.corpus[d].full_text for _, d, *_ in b], truncation=True, max_length=256, padding=True, return_tensors="pt")
        with torch.inference_mode():
            o = hf.bert(**tok)
        h = o.last_hidden_state; m = tok["attention_mask"].unsqueeze(-1).float()
        out["cls"].append(h[:, 0].numpy()); out["pool"].append(o.pooler_output.numpy()); out["mean"].append(((h*m).sum(1)/m.sum(1)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
R = {}
for name, qs in (("train", tr_q), ("dev", dev_q), ("test", te_q)):
    rows = [r for q in qs for r in lst(q)]
    R[name] = (rows, featurize(rows)); print(name, len(rows), f"{time.time()-t0:.0f}s", flush=True)
from sklearn.linear_model import LogisticRegression
def runof(rows, s): 
    r = {}
    for (q, d, *_), v in zip(rows, s): r.setdefault(q, {})[d] = float(v)
    return r
def nd(rows, s): 
    r = runof(rows, s); return aggregate({q: coll.qrels.get(q, {}) for q in r}, r)["nDCG@10"]
for feat in ("cls", "pool", "mean"):
    rows, F = R["train"]; y = np.array([1 if coll.qrels.get(q, {}).get(d, 0) > 0 else 0 for q, d, *_ in rows])
    for C in (0.1, 1.0, 10.0):
        lr = LogisticRegression(C=C, max_iter=2000).fit(F[feat], y)
        print(feat, C, "dev", round(nd(R["dev"][0], lr.decision_function(R["dev"][1][feat])), 4), "test", round(nd(R["test"][0], lr.decision_function(R["test"][1][feat])), 4), flush=True)
