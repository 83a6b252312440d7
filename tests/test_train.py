"""finerank train: checkpoints that load as they are, best kept, guardrails, honest summary, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.core.records import Pair


def _lists(n_queries: int, negatives: int = 3, offset: int = 0) -> list[Pair]:
    """Cranfield queries with up to 4 judged documents each plus random unjudged ones (label 0)."""
    import random

    ds = load("cranfield")
    rng = random.Random(offset)
    docs = sorted({p.doc_id: p.document for p in ds.pairs}.items())
    by_q = ds.by_query()
    out = []
    for qid in sorted(by_q, key=int)[offset : offset + n_queries]:
        rel = by_q[qid]
        judged = {p.doc_id for p in rel}
        out += rel[:4]
        negs = [(d, t) for d, t in rng.sample(docs, negatives + 10) if d not in judged][:negatives]
        out += [Pair(qid, rel[0].query, d, t, 0.0) for d, t in negs]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-data")
    write_pairs(d / "train.jsonl", _lists(40, offset=0))
    write_pairs(d / "val.jsonl", _lists(10, offset=100))
    return d


def _train(tiny_model, data, out, *extra):
    return run_cli("train", "--model", tiny_model, "--train", data / "train.jsonl", "--val", data / "val.jsonl",
                   "--out", out, "--max-length", "64", "--batch-size", "8", "--eval-steps", "5", *extra)


def test_train_writes_loadable_checkpoints_best_and_record(tiny_model, data, tmp_path):
    from sentence_transformers import CrossEncoder

    r = _train(tiny_model, data, tmp_path / "run", "--max-steps", "10", "--loss", "bce")
    assert r.returncode == 0, r.stderr
    ckpts = sorted(tmp_path.glob("run/checkpoint-*"))
    assert ckpts, "no checkpoint written"
    for c in ckpts:
        score = CrossEncoder(str(c)).predict([("query text", "document text")])
        assert score.shape == (1,)
    best = CrossEncoder(str(tmp_path / "run" / "best"))
    assert type(best.activation_fn).__name__ == "Sigmoid"  # BCE scores mean probabilities when reloaded
    record = json.loads((tmp_path / "run" / "finerank-run.json").read_text())
    assert record["base"]["nDCG@10"] > 0 and record["best"]["nDCG@10"] > 0
    assert record["global_step"] == 10
    assert record["data"]["train"]["pairs"] == len(load(data / "train.jsonl").pairs)
    assert len(record["data"]["train"]["sha256"]) == 64
    assert [h["step"] for h in record["eval_history"]] == [5, 10]
    assert record["train_pairs_per_second"] > 0
    assert "validation: base vs best" in r.stdout
    assert (tmp_path / "run" / "finerank-config.yaml").exists()
    assert record["data"]["train"]["balancing_negatives"] > 0  # the default: positives also other queries' negatives
    assert f"added {record['data']['train']['balancing_negatives']} balancing negatives" in r.stdout
    dep = record["query_dependence"]  # the kept model on validation, also under other queries' texts
    assert dep["lists"] == 10 and 0 <= dep["nDCG@10_wrong_query"] <= 1 and -1 <= dep["rank_correlation"] <= 1
    assert "query dependence on validation (10 lists" in r.stdout


def test_lambda_loss_for_graded_labels_saves_identity(tiny_model, data, tmp_path):
    from sentence_transformers import CrossEncoder

    r = _train(tiny_model, data, tmp_path / "run", "--max-steps", "3")
    assert r.returncode == 0, r.stderr
    assert "lambda loss" in r.stdout  # cranfield grades 0-4 choose the listwise loss
    assert type(CrossEncoder(str(tmp_path / "run" / "best")).activation_fn).__name__ == "Identity"


def test_learning_rate_warning_and_honest_summary(tiny_model, data, tmp_path):
    r = _train(tiny_model, data, tmp_path / "run", "--max-steps", "5", "--lr", "1e-3", "--loss", "bce")
    assert r.returncode == 0, r.stderr
    assert "learning rate 0.001 is outside" in r.stderr
    record = json.loads((tmp_path / "run" / "finerank-run.json").read_text())
    improved = record["best"]["nDCG@10"] > record["base"]["nDCG@10"]
    assert record["improved"] == improved
    assert ("NOT better than the base" in r.stderr) == (not improved)


def test_require_improvement_exits_1_when_not_better(tiny_model, data, tmp_path):
    # lr 0: the weights never move, so the best cannot beat the base
    r = _train(tiny_model, data, tmp_path / "run", "--max-steps", "5", "--lr", "0", "--loss", "bce",
               "--require-improvement")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT better than the base" in r.stderr


def test_guardrails(tiny_model, data, tmp_path):
    from finerank.training.config import TrainConfig, guardrails

    train = load(data / "train.jsonl")
    cfg = TrainConfig(lr=1e-4, epochs=5, max_length=16)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    noisy = train.pairs + [Pair(train.pairs[0].query_id, train.pairs[0].query, train.pairs[0].doc_id,
                                train.pairs[0].document, 0.0)]
    from finerank.core.records import Dataset

    w = " | ".join(guardrails(cfg, Dataset(noisy, "x", "jsonl"), Dataset(train.pairs[:5], "y", "jsonl"), tok))
    for needle in ("learning rate", "epochs", "fewer than 500", "leakage", "conflicting labels", "max_length=16"):
        assert needle in w, needle
    clean = guardrails(TrainConfig(), load(data / "train.jsonl"), load(data / "val.jsonl"))
    assert len(clean) == 1 and "fewer than 500" in clean[0]  # the small fixture; nothing else to warn about


def test_config_file_and_cli_override(tiny_model, data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {tiny_model}\ntrain: {data / 'train.jsonl'}\nval: {data / 'val.jsonl'}\n"
                   f"out: {tmp_path / 'run'}\nmax-length: 64\nbatch_size: 8\neval_steps: 5\nmax_steps: 4\nloss: bce\n"
                   "lr: 4.0e-5\n")
    r = run_cli("train", "--config", cfg, "--lr", "2e-5")
    assert r.returncode == 0, r.stderr
    import yaml

    eff = yaml.safe_load((tmp_path / "run" / "finerank-config.yaml").read_text())
    assert eff["lr"] == 2e-5 and eff["batch_size"] == 8 and eff["max_steps"] == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 3e-5\n")
    r = run_cli("train", "--config", bad)
    assert r.returncode == 2 and "unknown option 'learning_rat'" in r.stderr and "Traceback" not in r.stderr


def test_resume_after_sigkill(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "finerank", "train", "--model", tiny_model, "--train", str(data / "train.jsonl"),
           "--val", str(data / "val.jsonl"), "--out", str(out), "--max-length", "64", "--batch-size", "4",
           "--eval-steps", "4", "--max-steps", "40", "--loss", "bce", "--patience", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("checkpoint-*/.finerank-complete")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/.finerank-complete"))
    assert done and done[-1] < 40
    (out / "checkpoint-999").mkdir()  # a half-written checkpoint must never be resumed from
    (out / "checkpoint-999" / "config.json").write_text("{")
    r = run_cli("train", *cmd[cmd.index("--model"):], "--resume")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "finerank-run.json").read_text())
    assert record["resumed_from"].endswith(f"checkpoint-{done[-1]}")
    assert record["global_step"] == 40
    assert not (out / "checkpoint-999").exists()
    assert (out / "best" / "config.json").exists()


@pytest.mark.slow
def test_real_backbone_beats_fresh_head_on_cranfield(tmp_path):
    """The integration test: minilm-l6 on a cranfield split from data split + data mine, BM25 validation lists."""
    from finerank.retrieval.mine import mine
    from finerank.data.split import split_dataset

    ds = load("cranfield")
    parts = split_dataset(ds, val_fraction=0.2, seed=1)
    coll = ds.collection
    train_q = sorted({p.query_id for p in parts.train})[:60]
    val_q = sorted({p.query_id for p in parts.val})[:20]
    write_pairs(tmp_path / "train.jsonl", mine(coll, query_ids=train_q, negatives=3, ranks=(1, 30), seed=0))
    write_pairs(tmp_path / "val.jsonl", [p for p in parts.val if p.query_id in val_q])
    r = run_cli("train", "--model", "minilm-l6", "--train", tmp_path / "train.jsonl", "--val", tmp_path / "val.jsonl",
                "--val-corpus", "cranfield", "--val-top-k", "15", "--out", tmp_path / "run", "--max-length", "128",
                "--eval-steps", "20", "--max-steps", "40", "--lr", "5e-5", "--loss", "bce")
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "run" / "finerank-run.json").read_text())
    assert record["best"]["nDCG@10"] > record["base"]["nDCG@10"], record["eval_history"]


def test_hybrid_warning_when_the_training_free_hybrid_is_as_good():
    from finerank.training.cross_encoder import hybrid_warning
    from finerank.training.run import TrainResult

    def result(fusion):
        return TrainResult("o", "o/best", None, {}, {}, True, [], [], 10, 1.0, 1.0, "bce", fusion)

    def info(ce, fusion, hybrid):
        return {"systems": {"cross-encoder": {"nDCG@10": ce}, "fusion": {"nDCG@10": fusion},
                            "hybrid": {"nDCG@10": hybrid}},
                "weights": {"fusion": {"ce": 0.5, "bm25": 0.5, "bi": 0.0}, "hybrid": {"bm25": 0.6, "bi": 0.4}}}

    msg = hybrid_warning(result(info(0.30, 0.41, 0.41)))
    assert msg is not None and "0.4100" in msg and "bm25 0.6" in msg
    assert hybrid_warning(result(info(0.30, 0.42, 0.41))) is None  # the fusion beats it: nothing to say
    assert hybrid_warning(result(info(0.45, 0.44, 0.41))) is None
    assert hybrid_warning(result(None)) is None  # no fusion was tried (no first-stage scores)
    assert hybrid_warning(result({"skipped": "no first-stage scores"})) is None
    noisy = {**info(0.30, 0.42, 0.41), "queries": 22, "vs_hybrid": {"delta": 0.01, "p": 0.4, "wins": 6, "losses": 5}}
    msg = hybrid_warning(result(noisy))  # it wins on validation, but not significantly: said, with the numbers
    assert msg is not None and "not significantly" in msg and "p 0.4" in msg and "22 validation queries" in msg
    assert hybrid_warning(result({**noisy, "vs_hybrid": {**noisy["vs_hybrid"], "p": 0.01}})) is None


def test_fusion_searches_the_line_through_the_tuned_hybrid(monkeypatch):
    """fit tunes the hybrid's BM25 weight first, then only the cross-encoder's weight against it: the saved weights
    keep the hybrid's proportions, the cross-encoder always has a weight, and the shipped model is tested against
    the hybrid on the same queries."""
    from finerank.data.candidates import Candidates
    from finerank.training import fit as fit_mod

    rng = __import__("random").Random(0)
    qrels, bm25, bi, ce, rows = {}, {}, {}, {}, []
    for q in range(12):
        qid = f"q{q}"
        qrels[qid] = {f"d{q}_{i}": int(i < 2) for i in range(8)}
        for i in range(8):
            rel = i < 2
            bm25.setdefault(qid, {})[f"d{q}_{i}"] = rng.random() + (0.3 if rel else 0.0)
            bi.setdefault(qid, {})[f"d{q}_{i}"] = rng.random() + (0.8 if rel else 0.0)
            ce.setdefault(qid, {})[f"d{q}_{i}"] = rng.random() + (0.5 if rel else 0.0)

    class FakeBi:
        name = "fake-bi"

        def score_candidates(self, cands):
            return bi

    class FakeCands:
        scored = True

        def __init__(self):
            self.qrels = qrels

        def first_stage_run(self):
            return bm25

    monkeypatch.setattr(fit_mod, "BiEncoder", FakeBi)  # fit takes a given bi-encoder as it is
    spec, info = fit_mod.fit(FakeCands(), ce, bi_encoder=FakeBi(), step=0.1)
    hw, fw = info["weights"]["hybrid"], info["weights"]["fusion"]
    assert fw["ce"] >= 0.1
    assert abs(sum(fw.values()) - 1.0) < 1e-3
    if fw["ce"] < 1.0 and hw["bi"]:
        assert abs(fw["bm25"] / fw["bi"] - hw["bm25"] / hw["bi"]) < 1e-2  # the hybrid's proportions kept
    assert set(info["vs_hybrid"]) == {"delta", "p", "wins", "losses"} and 0 < info["vs_hybrid"]["p"] <= 1
    assert (spec is not None) == (info["systems"]["fusion"]["nDCG@10"] > info["systems"]["cross-encoder"]["nDCG@10"])


def test_a_third_recipe_plugs_into_the_skeleton(tiny_model, data, tmp_path):
    """A trainer the package does not have (a cross-encoder with MSE on label/4 and a config of its own) needs only
    its hooks: the skeleton runs it with the run folder, the record and the card, and its config validates its own
    field beside TrainConfig's."""
    from dataclasses import dataclass

    from finerank.core.errors import FinerankError
    from finerank.training.config import TrainConfig
    from finerank.training.cross_encoder import CrossEncoderRecipe, training_examples
    from finerank.training.skeleton import load_data, run_recipe

    @dataclass
    class MSEConfig(TrainConfig):
        LOSSES = ("mse",)
        loss: str = "mse"
        scale: float = 4.0

        def validate(self) -> "MSEConfig":
            super().validate()
            if self.scale <= 0:
                raise FinerankError(f"option scale: got {self.scale:g}, expected a number above 0")
            return self

    class MSERecipe(CrossEncoderRecipe):
        def data(self, ctx):
            ctx.train_ds, ctx.val_ds = load_data(ctx.cfg)
            ctx.loss_name, ctx.extra["max_label"] = "mse", ctx.cfg.scale

        def examples(self, ctx):
            return training_examples(ctx.train_ds.pairs, "bce", ctx.cfg.scale)  # (query, document, label / scale)

        def step_batch(self, ctx):
            return ctx.cfg.batch_size

        def loss(self, ctx):
            from sentence_transformers.cross_encoder import losses

            return losses.MSELoss(ctx.model)

    with pytest.raises(FinerankError, match="option scale"):
        MSEConfig(scale=-1).validate()
    with pytest.raises(FinerankError, match="expected a finite number"):
        MSEConfig(scale="x").validate()  # the subclass's field is type-checked by TrainConfig.validate
    with pytest.raises(FinerankError, match="option loss"):
        MSEConfig(loss="bce").validate()
    cfg = MSEConfig(model=tiny_model, train=str(data / "train.jsonl"), val=str(data / "val.jsonl"),
                    out=str(tmp_path / "run"), max_length=64, batch_size=8, eval_steps=2, max_steps=2, query_check=0)
    result = run_recipe(MSERecipe(), cfg, progress=False)
    record = json.loads((tmp_path / "run" / "finerank-run.json").read_text())
    assert result.loss == record["loss"] == "mse" and record["global_step"] == 2
    assert record["config"]["scale"] == 4.0 and record["label_scale_max"] == 4.0
    assert [h["step"] for h in record["eval_history"]] == [2] and (tmp_path / "run" / "best" / "README.md").exists()
    assert "scale: 4.0" in (tmp_path / "run" / "finerank-config.yaml").read_text()
