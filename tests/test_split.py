"""Query-level splits: grouping of duplicate queries, stratification, determinism, and the leakage check."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from conftest import run_cli, shared
from finerank.core.errors import FinerankError
from finerank.io.collection import load
from finerank.io.outputs import write_pairs
from finerank.core.records import Dataset
from finerank.data.split import (check_leakage, group_queries, jaccard, near_duplicate_pairs, normalize_query,
                            split_dataset, write_split, _tokens)


@pytest.fixture(scope="module")
def cran() -> Dataset:
    return load("cranfield")


def _sides(result) -> dict[str, set[str]]:
    return {s: {p.query_id for p in getattr(result, s)} for s in ("train", "val", "test")}


def _with_duplicates(ds: Dataset) -> tuple[Dataset, dict[str, str]]:
    """Cranfield plus: query 1 again under id 'dup-1'; query 2 with only case and punctuation changed
    ('dup-2'); query 3 with one word added ('near-3'), each with a copy of the original's pairs."""
    by_q = ds.by_query()
    variants = {
        "dup-1": by_q["1"][0].query,
        "dup-2": by_q["2"][0].query.upper().replace(" ", " ,  ").rstrip(" .") + "?!",
        "near-3": by_q["3"][0].query + " extra",
    }
    extra = []
    for new, text in variants.items():
        src = new.split("-")[1]
        extra += [replace(p, query_id=new, query=text) for p in by_q[src]]
    return Dataset(ds.pairs + extra, ds.source + "+dups", "jsonl"), {"dup-1": "1", "dup-2": "2", "near-3": "3"}


def test_normalize_query_folds_unicode_case_and_punctuation():
    assert normalize_query("Ｗhat  IS—the Flow?!") == "what is the flow"
    assert normalize_query("what is the flow") == normalize_query("WHAT, is the   FLOW.")
    assert normalize_query("Straße") == normalize_query("STRASSE")  # casefold, not lower
    assert normalize_query("flow") != normalize_query("flows")


def test_near_duplicate_pairs_match_brute_force():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(12)]
    texts = [" ".join(rng.sample(vocab, rng.randint(1, 9))) for _ in range(300)]
    texts += [t + " w11" for t in texts[:40]]  # some near copies
    for t in (0.6, 0.8, 0.9):
        sets = [_tokens(normalize_query(x)) for x in texts]
        brute = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if jaccard(sets[i], sets[j]) >= t}
        assert {(i, j) for i, j, _ in near_duplicate_pairs(texts, t)} == brute
        assert brute, "the check needs some near pairs to mean anything"


def test_cranfield_split_is_about_20_percent_disjoint_and_complete(cran):
    r = split_dataset(cran, seed=42)
    sides = _sides(r)
    n = len(cran.queries)
    assert abs(len(sides["val"]) - 0.2 * n) <= 1
    assert not sides["train"] & sides["val"] and not sides["test"]
    assert sides["train"] | sides["val"] == set(cran.queries)
    assert sorted(map(repr, r.train + r.val)) == sorted(map(repr, cran.pairs))  # every pair, once
    assert r.report["sides"]["val"]["queries"] == len(sides["val"])


def test_split_is_deterministic_per_seed(cran):
    a, b, c = (split_dataset(cran, seed=s) for s in (42, 42, 7))
    assert _sides(a) == _sides(b) and a.train == b.train
    assert _sides(a)["val"] != _sides(c)["val"]


def test_split_is_stratified(cran):
    r = split_dataset(cran, seed=3)
    st = r.report["sides"]
    for label, share in st["train"]["label_share"].items():
        assert abs(share - st["val"]["label_share"].get(label, 0.0)) < 0.05, label
    ppq_train, ppq_val = st["train"]["positives_per_query"]["mean"], st["val"]["positives_per_query"]["mean"]
    assert abs(ppq_train - ppq_val) / ppq_train < 0.1


def test_duplicates_stay_on_one_side(cran):
    ds, dups = _with_duplicates(cran)
    groups, merged = group_queries(ds.queries)
    merged_sets = [set(g["query_ids"]) for g in merged]
    for new, old in dups.items():
        assert {new, old} in merged_sets
    reasons = {lk["b"]: lk["reason"] for g in merged for lk in g["links"]}
    assert reasons["dup-2"] == "same normalized text" and reasons["near-3"] == "near-duplicate"
    for seed in range(8):
        r = split_dataset(ds, seed=seed)
        where = {q: s for s, qs in _sides(r).items() for q in qs}
        for new, old in dups.items():
            assert where[new] == where[old], (seed, new)
        assert len(r.report["duplicate_groups"]) == 3
        assert check_leakage(r.train, r.val).ok


def test_write_split_and_cli_check_leakage(cran, tmp_path):
    ds, _ = _with_duplicates(cran)
    r = split_dataset(ds, val_fraction=0.2, test_fraction=0.1, seed=1)
    report = write_split(r, tmp_path / "s")
    assert report["leakage"]["ok"] and set(report["leakage"]["checks"]) == {"train-val", "train-test", "val-test"}
    on_disk = json.loads((tmp_path / "s" / "split-report.json").read_text())
    assert on_disk["sides"]["test"]["queries"] == len(_sides(r)["test"]) > 0
    assert len(load(tmp_path / "s" / "val.jsonl").pairs) == len(r.val)

    ok = run_cli("data", "check-leakage", tmp_path / "s" / "train.jsonl", tmp_path / "s" / "val.jsonl")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no leakage" in ok.stdout

    # a val file that shares one query (under another id, changed case) with train
    val = load(tmp_path / "s" / "val.jsonl").pairs
    leaked = [replace(p, query_id="leak-9", query=p.query.upper()) for p in r.train if p.query_id == r.train[0].query_id]
    write_pairs(tmp_path / "val2.jsonl", val + leaked)
    bad = run_cli("data", "check-leakage", tmp_path / "s" / "train.jsonl", tmp_path / "val2.jsonl")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "leak-9" in bad.stdout and r.train[0].query_id in bad.stdout
    assert f"{len(leaked)} shared (query, document) pairs" in " ".join(bad.stdout.split())


def test_cli_split_writes_outputs(tmp_path):
    res = run_cli("data", "split", "cranfield", "--out", tmp_path / "s", "--seed", "5", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["leakage"]["ok"] and report["seed"] == 5
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"train.jsonl", "val.jsonl", "split-report.json"}
    ids = {s: {p.query_id for p in load(tmp_path / "s" / f"{s}.jsonl").pairs} for s in ("train", "val")}
    assert ids["val"] == set(report["query_ids"]["val"]) and not ids["train"] & ids["val"]


def test_check_leakage_near_duplicates_and_colliding_ids(cran):
    by_q = cran.by_query()
    a = by_q["5"] + by_q["6"]
    b = [replace(p, query_id="x", query=p.query + " please") for p in by_q["5"]]  # near-duplicate of 5
    b += [replace(p, query_id="6", query="an unrelated question about kittens") for p in by_q["7"]]
    rep = check_leakage(a, b)
    assert not rep.ok
    assert [(s["a_id"], s["b_id"], s["kind"]) for s in rep.shared_queries] == [("5", "x", "near-duplicate")]
    assert rep.shared_pairs == len(by_q["5"])
    assert rep.shared_ids_other_text == ["6"]
    assert check_leakage(by_q["5"], by_q["6"]).ok


def test_split_rejects_bad_fractions_and_tiny_data(cran):
    with pytest.raises(FinerankError):
        split_dataset(cran, val_fraction=0.7, test_fraction=0.4)
    with pytest.raises(FinerankError):
        split_dataset(cran, val_fraction=1.2)
    one_query = Dataset(cran.by_query()["1"], "one", "jsonl")
    with pytest.raises(FinerankError, match="cannot be split"):
        split_dataset(one_query)


@pytest.mark.shared
def test_scifact_train_split_merges_its_duplicate_claims():
    ds = load(shared("scifact"), split="train")
    r = split_dataset(ds, seed=0)
    where = {q: s for s, qs in _sides(r).items() for q in qs}
    groups = r.report["duplicate_groups"]
    assert groups, "scifact's train split holds repeated claims"
    for g in groups:
        assert len({where[q] for q in g["query_ids"]}) == 1
    assert check_leakage(r.train, r.val).ok
    assert abs(len(_sides(r)["val"]) - 0.2 * len(ds.queries)) <= 1
