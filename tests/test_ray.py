"""Offline scoring on Ray (finerank.scorers.on_ray): a local Ray with 2 CPUs gives the one-process run, order
included, for a cross-encoder and a hybrid; rerank --ray writes the same files; the distillation teacher streams
into its cache and resumes; without Ray the flag says how to install it."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import run_cli
from finerank.core.errors import FinerankError
from finerank.data.candidates import Candidates
from finerank.io.collection import load_collection
from finerank.scorers.load import load_scorer
from finerank.io.outputs import write_pairs
from finerank.training import teacher as teacher_mod
from finerank.training.distill import DistillConfig, distill, distillation_lists
from finerank.training.teacher import CACHE, teacher_scores


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is an extra: pip install 'finerank[ray]'")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cands():
    """BM25 top 8 of 10 Cranfield queries."""
    coll = load_collection("cranfield")
    qids = sorted(coll.queries, key=int)[:10]
    return Candidates.from_bm25([p for p in coll.pairs() if p.query_id in set(qids)], coll, top_k=8)


def _same(a: dict, b: dict, tol: float = 1e-5) -> None:
    """The same lists in the same order, the same documents in the same order, scores equal to float rounding."""
    assert list(a) == list(b)
    for q in a:
        assert list(a[q]) == list(b[q])
        assert max(abs(a[q][d] - b[q][d]) for d in a[q]) < tol, q


def test_without_ray_the_flag_says_how_to_install(monkeypatch, tiny_model):
    from finerank.scorers.on_ray import RayScorer

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(FinerankError) as e:
        RayScorer(tiny_model)
    assert "finerank[ray]" in str(e.value.hint)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_worker_counts_are_refused(tiny_model, bad):
    from finerank.scorers.on_ray import RayScorer

    with pytest.raises(FinerankError, match="Ray workers"):
        RayScorer(tiny_model, workers=bad)


@pytest.mark.parametrize("spec", ["tiny", "hybrid"])
def test_ray_gives_the_one_process_run(ray_local, cands, tiny_model, tiny_bi, spec):
    """Two actors, batches of 3 lists (so each actor gets several, and the last batch is short): the run is the
    one-process run, lists and documents in the input's order. The hybrid z-scores within each list, so a list split
    between actors would differ: whole lists only."""
    from finerank.scorers.on_ray import RayScorer

    spec = tiny_model if spec == "tiny" else f"hybrid:0.5@{tiny_bi}"
    one = load_scorer(spec).score_candidates(cands)
    scorer = RayScorer(spec, workers=2, lists_per_batch=3)
    assert scorer.name == load_scorer(spec).name and scorer.describe() == load_scorer(spec).describe()
    _same(scorer.score_candidates(cands), one)


class _Killed:
    """A teacher whose second call is a kill."""

    def __init__(self, inner):
        self.inner, self.calls, self.name, self.scale = inner, 0, inner.name, inner.scale

    def describe(self):
        return self.inner.describe()

    def score_candidates(self, cands, *, progress=False):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt("killed")
        return self.inner.score_candidates(cands)


def test_teacher_on_ray_resumes_a_killed_cache(ray_local, cands, tiny_model, tmp_path, monkeypatch):
    """A one-process teacher is killed after 4 of 10 lists; the same teacher on Ray scores only the other 6 (the
    cache is the teacher's, wherever it ran), and the whole run equals the one-process run."""
    from finerank.scorers.on_ray import RayScorer

    monkeypatch.setattr(teacher_mod, "CHUNK", 4)
    path = tmp_path / CACHE
    with pytest.raises(KeyboardInterrupt):
        teacher_scores(_Killed(load_scorer(tiny_model)), cands, path)
    assert len(path.read_text().splitlines()) == 1 + 4
    run, cached = teacher_scores(RayScorer(tiny_model, workers=2, lists_per_batch=2), cands, path)
    assert cached == 4 and len(path.read_text().splitlines()) == 1 + 10
    _same(run, load_scorer(tiny_model).score_candidates(cands))


def test_distill_with_a_teacher_on_ray(ray_local, tiny_model, tmp_path):
    coll = load_collection("cranfield")
    log = tmp_path / "log.txt"
    log.write_text("\n".join(coll.queries[q] for q in sorted(coll.queries, key=int)[:6]) + "\n")
    cfg = DistillConfig(model=tiny_model, teacher=tiny_model, queries=str(log), corpus="cranfield", top_k=4,
                        out=str(tmp_path / "run"), max_length=64, batch_size=8, max_steps=2, eval_steps=2,
                        query_check=0, fusion="off", ray=True, ray_workers=2)
    result = distill(cfg, progress=False)
    lines = (tmp_path / "run" / CACHE).read_text().splitlines()
    assert len(lines) == 1 + 6 and result.teacher["queries"] == 6 and result.train_pairs > 0
    one = load_scorer(tiny_model).score_candidates(distillation_lists(cfg)[0])
    got = {r["query_id"]: r["scores"] for r in map(json.loads, lines[1:])}
    _same({q: got[q] for q in one}, one)


def test_rerank_cli_with_ray_writes_the_same_files(tiny_model, tmp_path):
    """``finerank rerank --ray`` (its own local Ray) writes the rows and the TREC run of ``finerank rerank``."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'finerank[ray]'")
    coll = load_collection("cranfield")
    qids = sorted(coll.queries, key=int)[:6]
    write_pairs(tmp_path / "in.jsonl", [p for p in coll.pairs() if p.query_id in set(qids)])
    common = ("rerank", "--model", tiny_model, "--input", tmp_path / "in.jsonl", "--max-length", "64")
    r = run_cli(*common, "--output", tmp_path / "one.jsonl")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(*common, "--output", tmp_path / "ray.jsonl", "--ray", "--ray-workers", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "scored on Ray by 2 actors" in r.stdout
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    ray = [json.loads(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [(x["query_id"], x["doc_id"], x["rank"]) for x in ray] == [(x["query_id"], x["doc_id"], x["rank"])
                                                                      for x in one]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(one, ray)) < 1e-5
    trec = lambda p: [line.split()[:4] for line in p.read_text().splitlines()]  # noqa: E731 (qid Q0 doc rank)
    assert trec(tmp_path / "ray.run") == trec(tmp_path / "one.run")
    r = run_cli(*common, "--output", tmp_path / "x.jsonl", "--ray-workers", "2")  # no --ray
    assert r.returncode == 2 and "need --ray" in r.stderr and "Traceback" not in r.stderr


def test_a_fresh_head_is_refused(tiny_bi):
    """An embedding model loaded as a cross-encoder gets a random head at each load: actors would disagree."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'finerank[ray]'")
    from finerank.scorers.on_ray import RayScorer

    with pytest.raises(FinerankError, match="fresh, untrained head"):
        RayScorer(f"cross:{tiny_bi}")
