"""benchmarks/quality.py's tables: they show the systems a run produced, no more (a --training-free run has no
trained rows and no cost table)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("quality", Path(__file__).parents[1] / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(SPEC)
sys.modules["quality"] = quality  # its dataclasses look their module up there
SPEC.loader.exec_module(quality)


def _collection(systems, folds=5, train=False):
    out = {s: {"nDCG@10": 0.3 + 0.01 * i, "RR@10": 0.5 + 0.01 * i} for i, s in enumerate(systems)}
    meta = {"folds": folds, "folds_done": folds, "partial": False, "queries_evaluated": 40,
            "std": {s: {"nDCG@10": 0.02, "RR@10": 0.03} for s in systems}}
    if train:
        meta.update({"pairs": 900, "seconds": 12.5, "train_pairs_per_second": 70.0, "throughput": 900.0})
    out["_meta"] = meta
    return out


def test_training_free_tables_have_three_columns_and_no_cost():
    t = quality.tables({"cranfield": _collection(quality.TRAINING_FREE), "_run": {}})
    header = t["nDCG@10"].splitlines()[0]
    assert header == "| collection | protocol | bm25 | bi-encoder | hybrid |"
    assert "**0.320 ± 0.020**" in t["nDCG@10"]  # the row's best (hybrid) in bold, with its spread
    assert "cost" not in t


def test_trained_and_training_free_collections_share_one_table():
    t = quality.tables({"scifact": _collection(quality.SYSTEMS, folds=1, train=True),
                        "cisi": _collection(quality.TRAINING_FREE)})
    lines = t["nDCG@10"].splitlines()
    assert lines[0].count("|") == len(quality.SYSTEMS) + 3
    cisi = next(line for line in lines if line.startswith("| cisi"))
    assert cisi.rstrip(" |").endswith("| - | - | -")  # trained systems it never ran
    assert "| scifact | 900 | 12.5 | 70.0 | 900.0 |" in t["cost"]


@pytest.mark.parametrize("flag", [["--training-free"], []])
def test_training_free_is_an_option(flag):
    args = quality.parse_args(flag + ["--collections", "cranfield"])
    assert args.training_free is bool(flag)
