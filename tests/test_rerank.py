"""Reranker: equals CrossEncoder.predict on short documents, windows long ones with bounded batches, finds a late
relevant passage with max windows that truncation loses, reranks files from the CLI."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest

from finerank.core.errors import DataError, FinerankError
from finerank.data.candidates import Candidates
from finerank.scorers.base import Ranked
from finerank.scorers.cross_encoder import Reranker
from finerank.serving.rerank import rerank_file

from conftest import run_cli

KEYWORDS = "zebra violin copper piano tiger saturn pepper canyon falcon marble".split()
FILLER = "the of and a to in is was for on that with as by at from it an be this which or are were has had".split()


@pytest.fixture(scope="session")
def keyword_model(tmp_path_factory) -> str:
    """The tiny BERT trained (200 steps, seconds) on a task whose scores mean something: a document is relevant
    when it contains the query's keyword. Saved as a CrossEncoder folder with max_length 32."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from finerank.io.models import resolve_model

    out = tmp_path_factory.getbasetemp() / "keyword-ce"  # shared by the test modules that import this fixture
    if (out / "modules.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    rng = random.Random(0)
    torch.manual_seed(0)

    def example():
        k = rng.choice(KEYWORDS)
        words = [rng.choice(FILLER) for _ in range(rng.randint(8, 40))]  # long ones fill all 32 positions
        positive = rng.random() < 0.5
        if positive:
            words.insert(rng.randint(0, min(len(words), 26)), k)  # where truncation to 32 tokens keeps it
        return k, " ".join(words), float(positive)

    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    model = BertForSequenceClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        batch = [example() for _ in range(64)]
        enc = tok([b[0] for b in batch], [b[1] for b in batch], padding=True, truncation=True, max_length=32,
                  return_tensors="pt")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits[:, 0],
                                                                    torch.tensor([b[2] for b in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    CrossEncoder(str(out), num_labels=1, max_length=32).save_pretrained(str(out))
    return str(out)


def _filler(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(FILLER) for _ in range(n)]


class Recorder:
    """Wraps a Reranker's backend and records each batch it is given (sizes and token lengths)."""

    def __init__(self, rr: Reranker):
        self.inner, self.tok, self.batches = rr.backend, rr.tokenizer, []
        rr.backend = self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, pairs):
        lengths = [len(self.tok(q, d)["input_ids"]) for q, d in pairs]
        self.batches.append(lengths)
        return self.inner(pairs)


# ------------------------------------------------------------------------------------------ the long-doc claim
def test_late_passage_found_with_max_windows_lost_with_truncation(keyword_model):
    late = _filler(600, 1)
    late.insert(550, "zebra")  # far past the 32-token limit
    docs = [" ".join(_filler(600, 2)), " ".join(late), " ".join(_filler(600, 3)), " ".join(_filler(50, 4))]
    windows = Reranker(keyword_model, long_docs="max")
    assert windows.max_length == 32
    best = windows.rerank("zebra", docs)
    assert best[0].index == 1 and best[0].score > 0.9, best
    assert all(r.score < 0.5 for r in best[1:]), best

    truncated = Reranker(keyword_model, long_docs="truncate").rerank("zebra", docs)
    late_score = next(r.score for r in truncated if r.index == 1)
    assert late_score < 0.5, truncated
    assert truncated[0].index != 1 or truncated[0].score - truncated[1].score < 0.05

    first = Reranker(keyword_model, long_docs="first").score([("zebra", docs[1])])[0]
    mean = Reranker(keyword_model, long_docs="mean").score([("zebra", docs[1])])[0]
    assert first < 0.5 and first < mean < best[0].score  # one hit among ~40 windows: the mean is diluted


def test_early_keyword_found_by_every_mode(keyword_model):
    doc = "zebra " + " ".join(_filler(600, 5))
    for mode in ("max", "first", "truncate"):
        assert Reranker(keyword_model, long_docs=mode).score([("zebra", doc)])[0] > 0.9, mode


def test_5000_word_document_has_bounded_batches(tiny_model):
    rr = Reranker(tiny_model, max_length=64, batch_size=8)
    rec = Recorder(rr)
    doc = " ".join(_filler(5000, 6))
    scores = rr.score([("a query", doc), ("a query", "a short document")])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    n_tokens = len(rr.tokenizer(doc, add_special_tokens=False)["input_ids"])
    room = 64 - 3 - 2  # specials, query tokens
    expected_windows = 1 + -(-(n_tokens - room) // (room // 2))
    assert sum(len(b) for b in rec.batches) == expected_windows + 1
    assert max(len(b) for b in rec.batches) <= 8
    assert max(max(b) for b in rec.batches) <= 64


def test_batches_are_grouped_by_length(tiny_model):
    rr = Reranker(tiny_model, batch_size=4)
    rec = Recorder(rr)
    rng = random.Random(7)
    docs = [" ".join(_filler(rng.randint(1, 100), i)) for i in range(20)]
    rr.score([("q", d) for d in docs])
    flat = [n for b in rec.batches for n in b]
    assert flat == sorted(flat, reverse=True)


# ------------------------------------------------------------------------------------------ equivalences
def test_scores_equal_cross_encoder_predict(tiny_model):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(tiny_model, num_labels=1, max_length=128)
    pairs = [("what is a wing", "a wing is an airfoil " * k) for k in (1, 3, 10, 60)]  # the last is > 128 tokens
    want = ce.predict(pairs)
    truncate = Reranker(ce, long_docs="truncate").score(pairs)
    np.testing.assert_allclose(truncate, want, atol=1e-5)
    windows = Reranker(ce).score(pairs)
    np.testing.assert_allclose(windows[:3], want[:3], atol=1e-5)  # short documents: one window, the same input


def test_window_spans_cover_the_document(tiny_model):
    rr = Reranker(tiny_model, window=10, stride=4)
    for n in (11, 14, 15, 37, 100):
        spans = rr._spans(n, 10)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(e - s == 10 for s, e in spans)
        assert all(b[0] - a[0] <= 4 for a, b in zip(spans, spans[1:]))
        assert set(range(n)) == {t for s, e in spans for t in range(s, e)}


def test_rerank_order_top_k_and_run(tiny_model):
    rr = Reranker(tiny_model)
    docs = ["alpha beta", "gamma", "delta epsilon zeta", "alpha beta"]
    ranked = rr.rerank("alpha", docs)
    assert sorted(r.index for r in ranked) == [0, 1, 2, 3]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    positions = [r.index for r in ranked]
    assert positions.index(0) < positions.index(3)  # equal documents tie: input order
    assert all(isinstance(r, Ranked) for r in ranked)
    assert rr.rerank("alpha", docs, top_k=2) == ranked[:2]
    assert rr.rerank("alpha", []) == []
    cands = Candidates({"q1": "alpha", "q2": "gamma"},
                       {"q1": [("d1", "alpha beta"), ("d2", "gamma")], "q2": [("d3", "gamma")]}, {"q1": {"d2": 3.5}})
    run = rr.score_candidates(cands)
    assert set(run) == {"q1", "q2"} and len(run["q1"]) == 2 and len(run["q2"]) == 1
    assert run["q1"]["d1"] == pytest.approx(float(rr.score([("alpha", "alpha beta")])[0]))


def test_run_folder_resolves_to_best(tiny_model, tmp_path):
    shutil.copytree(tiny_model, tmp_path / "run" / "best")
    assert Reranker(str(tmp_path / "run")).describe()["model"].endswith("best")


def test_bad_options_are_user_errors(tiny_model):
    for kw in ({"long_docs": "median"}, {"window": 500}, {"window": 20, "stride": 30}, {"max_length": 4096},
               {"batch_size": 0}):
        with pytest.raises(FinerankError):
            Reranker(tiny_model, **kw)
    with pytest.raises(FinerankError, match="strings"):
        Reranker(tiny_model).score([("q", 3)])


# ------------------------------------------------------------------------------------------ files and CLI
def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_candidates_from_file_reports_bad_rows(tmp_path):
    with pytest.raises(DataError) as e:
        Candidates.from_file(_write(tmp_path / "c.jsonl", [{"query": "q", "document": "d"}, {"document": "d"}]))
    assert e.value.line == 2 and e.value.field == "query"
    with pytest.raises(DataError, match="a number"):
        Candidates.from_file(_write(tmp_path / "s.jsonl", [{"query": "q", "document": "d", "score": "high"}]))
    with pytest.raises(DataError) as e:
        Candidates.from_file(_write(tmp_path / "i.jsonl", [{"query_id": "1", "query": "a", "document": "d"},
                                                           {"query_id": "1", "query": "b", "document": "e"}]))
    assert e.value.line == 2 and "same query text" in str(e.value)
    with pytest.raises(FinerankError, match="--collection"):
        (tmp_path / "r.run").write_text("1 Q0 d1 1 3.0 bm25\n")
        Candidates.from_file(tmp_path / "r.run")


def test_candidates_keep_partial_first_stage_scores(tmp_path):
    rows = [{"query_id": "1", "query": "a", "doc_id": "x", "document": "d", "score": 2.0},
            {"query_id": "1", "query": "a", "doc_id": "y", "document": "e"},
            {"query_id": "2", "query": "b", "doc_id": "z", "document": "f", "score": 1.0, "label": 1}]
    c = Candidates.from_file(_write(tmp_path / "p.jsonl", rows))
    assert c.first_stage == {"1": {"x": 2.0}, "2": {"z": 1.0}} and not c.scored
    assert c.first_stage_scores() == [2.0, None, 1.0]
    assert c.first_stage_run() == {"1": {"x": 2.0, "y": 1.0}, "2": {"z": 1.0}}  # rank order where a score is missing
    assert c.qrels == {"2": {"z": 1}}
    assert c.top(1).docs == {"1": [("x", "d")], "2": [("z", "f")]}


def test_rerank_file_with_labels(keyword_model, tmp_path):
    rows = []
    for q, k in (("q1", "zebra"), ("q2", "tiger")):
        for i in range(4):
            words = _filler(20, hash((q, i)) % 1000)
            if i == 3:
                words.insert(10, k)
            rows.append({"query_id": q, "query": k, "doc_id": f"{q}-d{i}", "document": " ".join(words),
                         "label": int(i == 3), "score": 10.0 - i})
    src = _write(tmp_path / "cands.jsonl", rows)
    s = rerank_file(keyword_model, src, tmp_path / "out.jsonl", progress=False)
    assert s.pairs == 8 and s.queries == 2
    assert s.after["nDCG@10"] == pytest.approx(1.0) and s.before["nDCG@10"] < 0.5
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in out if r["rank"] == 1] == ["q1-d3", "q2-d3"]
    assert all(r["first_stage_score"] == 10.0 - int(r["doc_id"][-1]) for r in out)
    trec = (tmp_path / "out.run").read_text().splitlines()
    assert len(trec) == 8 and trec[0].split()[:4] == ["q1", "Q0", "q1-d3", "1"]


def test_cli_rerank_trec_run_with_collection(keyword_model, tmp_path):
    (tmp_path / "in.run").write_text("1 Q0 1 1 9.0 bm25\n1 Q0 2 2 8.0 bm25\n2 Q0 12 1 7.0 bm25\n")
    r = run_cli("rerank", "--model", keyword_model, "--input", tmp_path / "in.run", "--collection", "cranfield",
                "--output", tmp_path / "o.jsonl", "--trec", tmp_path / "o.trec", "--top-k", "1")
    assert r.returncode == 0, r.stderr
    assert "reranked 3 pairs of 2 queries" in r.stdout
    assert len((tmp_path / "o.trec").read_text().splitlines()) == 2
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert {r["query_id"] for r in rows} == {"1", "2"} and all(r["document"] for r in rows)

    bad = run_cli("rerank", "--model", keyword_model, "--input", tmp_path / "in.run", "--output", tmp_path / "x.jsonl")
    assert bad.returncode == 2 and "--collection" in bad.stderr and "Traceback" not in bad.stderr
