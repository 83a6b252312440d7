"""Length-bucketed training batches: every row once an epoch, batches of similar length, never in length order,
the same batches for the same seed and epoch; and `train --length-buckets` trains through the sampler."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("sentence_transformers")

from finerank.training.callbacks import LengthBucketSampler


def _sampler(lengths, batch_size=8, drop_last=False, seed=3, pool=4):
    return LengthBucketSampler(list(range(len(lengths))), batch_size=batch_size, drop_last=drop_last, seed=seed,
                               lengths=lengths, pool=pool)


def test_every_row_once_in_batches_of_similar_length_shuffled_by_batch():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(203)]
    s = _sampler(lengths)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert len(batches) == len(s) == 26
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    rand = [list(range(203))[k: k + 8] for k in range(0, 203, 8)]
    rand_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in rand) / len(rand)
    assert spread < rand_spread / 2  # padding to the longest of a batch wastes far less
    means = [sum(lengths[i] for i in b) / len(b) for b in batches]
    assert means != sorted(means) and means != sorted(means, reverse=True)  # not in length order
    assert [list(b) for b in _sampler(lengths)] == batches  # same seed and epoch: same batches
    s.set_epoch(1)
    assert list(s) != batches  # a new epoch: a new order


def test_drop_last_keeps_only_full_batches():
    s = _sampler([3] * 21, batch_size=4, drop_last=True, pool=2)
    batches = list(s)
    assert len(batches) == len(s) == 5 and all(len(b) == 4 for b in batches)


def test_train_with_length_buckets_batches_through_the_sampler(tiny_model, tmp_path, monkeypatch):
    from finerank.io.outputs import write_pairs
    from finerank.training import callbacks
    from finerank.training.config import TrainConfig
    from finerank.training.train import train
    from test_train import _lists

    write_pairs(tmp_path / "train.jsonl", _lists(20, offset=0))
    write_pairs(tmp_path / "val.jsonl", _lists(5, offset=100))
    seen = []
    real = callbacks.LengthBucketSampler.__iter__

    def spy(self):
        for b in real(self):
            seen.append([self.lengths[i] for i in b])
            yield b

    monkeypatch.setattr(callbacks.LengthBucketSampler, "__iter__", spy)
    cfg = TrainConfig(model=tiny_model, train=str(tmp_path / "train.jsonl"), val=str(tmp_path / "val.jsonl"),
                      out=str(tmp_path / "run"), max_length=64, batch_size=8, eval_steps=3, max_steps=3,
                      query_check=0, length_buckets=True, fusion="off", loss="bce")
    train(cfg, progress=False)
    assert seen and all(len(b) <= 8 for b in seen)
    record = json.loads((tmp_path / "run" / "finerank-run.json").read_text())
    assert record["config"]["length_buckets"] is True and record["global_step"] == 3
