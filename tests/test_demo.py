"""finerank demo end to end with a tiny random model: every step runs, the tuned bi-encoder and its hybrid are
evaluated beside the other systems, and the artefacts land in the demo's folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from finerank.demo import DemoConfig, demo
from finerank.io.collection import load


def test_demo_runs_every_step_and_shows_the_tuned_bi_encoder(tiny_bi, tmp_path):
    lines: list[str] = []
    res = demo(DemoConfig(out=str(tmp_path / "demo"), model=tiny_bi, bi_model=tiny_bi, max_train_queries=12,
                          max_steps=4, eval_steps=2, max_length=64, bi_max_length=64, query_check=5,
                          pseudo_queries=8, distill_top_k=4), log=lines.append)
    assert set(res.steps) == {"inspect", "split", "mine", "train bi-encoder", "distill", "train", "evaluate"}
    names = [s.name for s in res.report.systems]
    for system in ("bm25", "bi-encoder", "hybrid", "base", "distilled (alone)", "bi-encoder (tuned)", "hybrid (tuned)"):
        assert system in names, names
    assert any(n.startswith("distilled + fine-tuned") for n in names), names
    # the teacher is the tuned hybrid; the student saw no held-out query, and the fine-tuning started from it
    teacher = json.loads(Path(res.distill.record).read_text())["teacher"]
    assert teacher["parts"]["model"] == res.bi_train.best_dir and teacher["pseudo"] == 8
    held_out = {p.query_id for p in load(tmp_path / "demo" / "data" / "test.jsonl", max_label=None).pairs}
    rows = (tmp_path / "demo" / "distilled" / "teacher-scores.jsonl").read_text().splitlines()[1:]
    distilled_on = {json.loads(row)["query_id"] for row in rows}
    assert len(distilled_on) == teacher["queries"] and held_out and not distilled_on & held_out
    assert json.loads(Path(res.train.record).read_text())["config"]["model"] == str(tmp_path / "demo" / "distilled" / "best")
    tuned = res.report.system("bi-encoder (tuned)")
    assert tuned.model == res.bi_train.best_dir and Path(tuned.model, "modules.json").exists()
    assert all(math.isfinite(v) for s in res.report.systems for v in s.metrics.values())
    record = json.loads(Path(res.bi_train.record).read_text())
    assert record["arch"] == "bi-encoder" and record["data"]["train"]["path"].endswith("train-mined.jsonl")
    assert record["retrieval"]["best"]["R@100"] >= 0 and record["hybrid"]["best"]["weights"]
    weight = record["hybrid"]["best"]["weights"]["bm25"]  # the hybrid (tuned) is scored at its selection weight
    hybrid = res.report.system("hybrid (tuned)")
    assert hybrid.scorer["weight"] == weight and hybrid.model == res.bi_train.best_dir
    assert any(line.startswith("4/7 tuning the bi-encoder") for line in lines)
    assert (tmp_path / "demo" / "eval" / "report.html").exists()


def test_demo_without_the_bi_encoder_step(tiny_bi, tmp_path):
    res = demo(DemoConfig(out=str(tmp_path / "demo"), model=tiny_bi, bi_model=tiny_bi, max_train_queries=6,
                          max_steps=2, eval_steps=2, max_length=64, query_check=0, bi_encoder=False,
                          distill=False),
               log=lambda m: None)
    assert res.bi_train is None and res.distill is None and {"train bi-encoder", "distill"}.isdisjoint(res.steps)
    assert not any("(tuned)" in s.name for s in res.report.systems)
