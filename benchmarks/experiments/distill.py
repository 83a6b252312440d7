"""Distillation experiment (issue 23), before `finerank distill` existed: teacher = hybrid (BM25 + bi-encoder), student = minilm-l6 as a cross-encoder.
Cranfield, the demo's split (seed 42). Distillation queries: corpus titles (pseudo-queries, the title stripped from
their source document's text in that list) and the training queries' texts (labels unused). Reports dev and test
nDCG@10 of the student alone and its query dependence."""
import argparse, json, random, sys, time
import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--n-pseudo", type=int, default=600)
ap.add_argument("--top-k", type=int, default=10)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--epochs", type=float, default=1.0)
ap.add_argument("--batch", type=int, default=4, help="queries per step")
ap.add_argument("--max-length", type=int, default=256)
ap.add_argument("--temp", type=float, default=1.0)
ap.add_argument("--loss", default="listnet")
ap.add_argument("--w", type=float, default=0.6, help="BM25 weight of the teacher hybrid")
ap.add_argument("--bi", default="minilm-l6")
ap.add_argument("--no-train-queries", action="store_true")
ap.add_argument("--bf16", type=int, default=1)
ap.add_argument("--out", default="bench-cache/distill-exp")
ap.add_argument("--save", default="")
a = ap.parse_args()
torch.set_num_threads(2)

from finerank.io.collection import load
from finerank.data.split import split_dataset
from finerank.data.candidates import Candidates
from finerank.retrieval.bm25 import index_for, rescore_lists, candidates as bm25_run
from finerank.retrieval.mine import candidate_pairs
from finerank.retrieval.dense import BiEncoder
from finerank.retrieval.hybrid import fuse
from finerank.scorers.cross_encoder import Reranker
from finerank.core.metrics import aggregate, query_dependence
from finerank.evaluation.dependence import wrong_query_lists
from finerank.core.records import Collection
from finerank.io.models import resolve_model

t0 = time.time()
ds = load("cranfield"); coll = ds.collection
parts = split_dataset(ds, val_fraction=0.1, test_fraction=0.2, seed=42)
train_q = sorted({p.query_id for p in parts.train}); dev_q = sorted({p.query_id for p in parts.val})
test_q = sorted({p.query_id for p in parts.test})
index = index_for(coll.corpus)

# ---- distillation lists
rng = random.Random(0)
docs = [d for d in coll.corpus.values() if d.title.strip()]
rng.shuffle(docs)
pq = {f"pq-{d.doc_id}": d.title.strip() for d in docs[: a.n_pseudo]}
src = {f"pq-{d.doc_id}": d.doc_id for d in docs[: a.n_pseudo]}
queries = dict(pq)
if not a.no_train_queries:
    queries.update({q: coll.queries[q] for q in train_q})
run = index.search(queries, a.top_k)
lists = {}
for q, ranked in run.items():
    lst = []
    for d in sorted(ranked, key=lambda d: -ranked[d]):
        text = coll.corpus[d].full_text
        if src.get(q) == d:  # the pseudo-query's own document: its title removed
            title = coll.corpus[d].title.strip()
            text = text[len(title):].strip() if text.startswith(title) else text
        lst.append((d, text))
    lists[q] = lst
bm = rescore_lists(queries, lists)
bi = BiEncoder(a.bi, cache_documents=True)
cands = Candidates(queries, lists, bm, {}, "distill")
cos = bi.score_candidates(cands)
teacher = fuse({"bm25": bm, "bi": cos}, {"bm25": a.w, "bi": 1 - a.w})
print(f"lists {len(lists)} ({sum(len(v) for v in lists.values())} pairs), teacher scored in {time.time()-t0:.0f}s", flush=True)

# ---- held-out lists
def held(qids, k=20):
    r = bm25_run(coll, top_k=k, query_ids=qids, index=index)
    c = Candidates.from_pairs(candidate_pairs(coll, r))
    c.qrels = {q: dict(coll.qrels[q]) for q in c.queries}
    return c
dev, test = held(dev_q), held(test_q)

def hybrid_eval(c):
    r = fuse({"bm25": c.first_stage_run(), "bi": bi.score_candidates(c)}, {"bm25": a.w, "bi": 1 - a.w})
    return aggregate(c.qrels, r, ["nDCG@10"])["nDCG@10"]
print(f"teacher hybrid dev {hybrid_eval(dev):.4f} test {hybrid_eval(test):.4f}; bm25 dev "
      f"{aggregate(dev.qrels, dev.first_stage_run(), ['nDCG@10'])['nDCG@10']:.4f} test "
      f"{aggregate(test.qrels, test.first_stage_run(), ['nDCG@10'])['nDCG@10']:.4f}", flush=True)

# ---- student
from datasets import Dataset as HFDataset
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments, losses
torch.manual_seed(42)
student = CrossEncoder(resolve_model("minilm-l6"), num_labels=1, max_length=a.max_length)
qids = list(lists)
rng.shuffle(qids)
if a.loss == "listnet":
    data = {"query": [queries[q] for q in qids], "docs": [[t for _, t in lists[q]] for q in qids],
            "labels": [[teacher[q][d] / a.temp for d, _ in lists[q]] for q in qids]}
    loss = losses.ListNetLoss(student, mini_batch_size=-1)
    bs = a.batch
elif a.loss == "margin":
    rows = {"query": [], "pos": [], "neg": [], "label": []}
    for q in qids:
        lst = lists[q]
        r2 = random.Random(q)
        for _ in range(len(lst) // 2):
            (d1, t1), (d2, t2) = r2.sample(lst, 2)
            if teacher[q][d1] < teacher[q][d2]:
                (d1, t1), (d2, t2) = (d2, t2), (d1, t1)
            rows["query"].append(queries[q]); rows["pos"].append(t1); rows["neg"].append(t2)
            rows["label"].append(teacher[q][d1] - teacher[q][d2])
    data = rows
    loss = losses.MarginMSELoss(student)
    bs = a.batch * a.top_k // 2
elif a.loss == "mse":
    rows = {"query": [], "doc": [], "label": []}
    for q in qids:
        for d, t in lists[q]:
            rows["query"].append(queries[q]); rows["doc"].append(t); rows["label"].append(teacher[q][d])
    data = rows
    loss = losses.MSELoss(student)
    bs = a.batch * a.top_k
hf = HFDataset.from_dict(data)
args = CrossEncoderTrainingArguments(output_dir=a.out, num_train_epochs=a.epochs, per_device_train_batch_size=bs,
                                     learning_rate=a.lr, warmup_steps=0.1, weight_decay=0.01, bf16=bool(a.bf16), use_cpu=not torch.cuda.is_available(),
                                     save_strategy="no", logging_steps=20, report_to="none", seed=42,
                                     dataloader_num_workers=0, disable_tqdm=True)
trainer = CrossEncoderTrainer(model=student, args=args, train_dataset=hf, loss=loss)
t1 = time.time()
trainer.train()
secs = time.time() - t1
npairs = sum(len(v) for v in lists.values()) * a.epochs
print(f"trained {trainer.state.global_step} steps in {secs:.0f}s ({npairs/secs:.1f} pairs/s)", flush=True)
if a.save:
    student.save_pretrained(a.save)

rr = Reranker(student, batch_size=32, fuse=False)
res = {}
for name, c in (("dev", dev), ("test", test)):
    r = rr.score_candidates(c)
    res[name] = aggregate(c.qrels, r, ["nDCG@10"])["nDCG@10"]
    w = wrong_query_lists(c, 20, 0)
    dep = query_dependence(r, rr.score_candidates(w), c.qrels)
    res[name + "_corr"] = dep["rank_correlation"]
    # student + first stage fused (training-free weights equal)
    for wce in (0.5,):
        f = fuse({"ce": r, "bm25": c.first_stage_run(), "bi": bi.score_candidates(c)}, {"ce": wce, "bm25": (1-wce)*a.w, "bi": (1-wce)*(1-a.w)})
        res[name + f"_fused{wce}"] = aggregate(c.qrels, f, ["nDCG@10"])["nDCG@10"]
res.update(vars(a)); res["train_seconds"] = round(secs); res["steps"] = trainer.state.global_step
print("RESULT", json.dumps(res), flush=True)
