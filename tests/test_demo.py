"""finerank demo end to end with a tiny random model: every step runs, the tuned bi-encoder and its hybrid are
evaluated beside the other systems, and the artefacts land in the demo's folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from finerank.demo import DemoConfig, demo


def test_demo_runs_every_step_and_shows_the_tuned_bi_encoder(tiny_bi, tmp_path):
    lines: list[str] = []
    res = demo(DemoConfig(out=str(tmp_path / "demo"), model=tiny_bi, bi_model=tiny_bi, max_train_queries=12,
                          max_steps=4, eval_steps=2, max_length=64, bi_max_length=64, query_check=5), log=lines.append)
    assert set(res.steps) == {"inspect", "split", "mine", "train", "train bi-encoder", "evaluate"}
    names = [s.name for s in res.report.systems]
    for system in ("bm25", "bi-encoder", "hybrid", "base", "bi-encoder (tuned)", "hybrid (tuned)"):
        assert system in names, names
    tuned = res.report.system("bi-encoder (tuned)")
    assert tuned.model == res.bi_train.best_dir and Path(tuned.model, "modules.json").exists()
    assert all(math.isfinite(v) for s in res.report.systems for v in s.metrics.values())
    record = json.loads(Path(res.bi_train.record).read_text())
    assert record["arch"] == "bi-encoder" and record["data"]["train"]["path"].endswith("train-mined.jsonl")
    assert record["retrieval"]["best"]["R@100"] >= 0 and record["hybrid"]["best"]["weights"]
    weight = record["hybrid"]["best"]["weights"]["bm25"]  # the hybrid (tuned) is scored at its selection weight
    hybrid = res.report.system("hybrid (tuned)")
    assert hybrid.scorer["weight"] == weight and hybrid.model == res.bi_train.best_dir
    assert any(line.startswith("5/6 tuning the bi-encoder") for line in lines)
    assert (tmp_path / "demo" / "eval" / "report.html").exists()


def test_demo_without_the_bi_encoder_step(tiny_bi, tmp_path):
    res = demo(DemoConfig(out=str(tmp_path / "demo"), model=tiny_bi, bi_model=tiny_bi, max_train_queries=6,
                          max_steps=2, eval_steps=2, max_length=64, query_check=0, bi_encoder=False),
               log=lambda m: None)
    assert res.bi_train is None and "train bi-encoder" not in res.steps
    assert not any("(tuned)" in s.name for s in res.report.systems)
