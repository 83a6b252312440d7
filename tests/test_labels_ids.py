"""One label rule and one meaning per id in every loader (pairs, candidates, BEIR, TREC qrels), and TREC qrels that
need their four columns: bad data is an error naming file, line, field and value, never a silent choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from finerank.data.candidates import Candidates
from finerank.core.errors import DataError, FinerankError
from finerank.io.collection import load, load_collection
from finerank.io.pairs import label_scale
from finerank.core.records import Pair
from finerank.training.config import TrainConfig, guardrails
from finerank.training.cross_encoder import choose_loss
from finerank.training.skeleton import load_data


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _binary_rows(n_queries: int = 4, bad: dict | None = None) -> list[dict]:
    rows = [{"query_id": f"q{q}", "query": f"query {q}", "doc_id": f"d{q}-{i}", "document": f"doc {i} of {q}",
             "label": int(i == 0)} for q in range(n_queries) for i in range(4)]
    if bad:
        rows[5] = {**rows[5], **bad}  # line 6
    return rows


def _beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: str, name: str = "qrels.tsv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _jsonl(folder / "corpus.jsonl", corpus)
    _jsonl(folder / "queries.jsonl", queries)
    (folder / name).write_text(qrels, encoding="utf-8")
    return folder


CORPUS = [{"_id": "0", "title": "", "text": "the zero document"}, {"_id": "184", "title": "", "text": "wings"},
          {"_id": "185", "title": "", "text": "drag"}]
QUERIES = [{"_id": "1", "text": "what is lift"}, {"_id": "2", "text": "what is drag"}]


# ------------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("label, shown", [(10, "10"), (1e308, "1e+308"), (5, "5")])
def test_train_refuses_a_label_off_the_scale_before_training(tmp_path, label, shown):
    """A typo'd label in binary data stopped nothing before: train loaded with no upper bound."""
    path = _jsonl(tmp_path / "train.jsonl", _binary_rows(bad={"label": label}))
    with pytest.raises(DataError) as ei:
        load_data(TrainConfig(train=str(path)))
    e = ei.value
    assert (e.path, e.line, e.field) == (str(path), 6, "label") and shown in str(e) and "0..4" in str(e)
    assert "--max-label" in str(e)
    if label < 100:  # a wider scale, said on purpose, accepts it
        assert max(p.label for p in load_data(TrainConfig(train=str(path), max_label=10))[0].pairs) == label


def test_train_checks_the_validation_file_too(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", _binary_rows())
    val = _jsonl(tmp_path / "val.jsonl", _binary_rows(bad={"label": 7}))
    with pytest.raises(DataError) as ei:
        load_data(TrainConfig(train=str(train), val=str(val)))
    assert ei.value.path == str(val) and ei.value.line == 6 and "a label in 0..4" in str(ei.value)


def test_cli_train_exits_2_naming_the_row(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", _binary_rows(bad={"label": 10}))
    r = run_cli("train", "--model", "minilm-l6", "--train", path, "--out", tmp_path / "run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and f"{path}:6:" in r.stderr and "field 'label'" in r.stderr
    assert "0..4" in r.stderr
    assert not (tmp_path / "run" / "checkpoint-1").exists()
    r = run_cli("train", "--model", "minilm-l6", "--train", path, "--out", tmp_path / "run", "--max-label", "1")
    assert r.returncode == 2 and "0..1" in r.stderr


def _pairs(labels) -> list[Pair]:
    return [Pair(f"q{i % 3}", f"query {i % 3}", f"d{i}", f"doc {i}", float(x)) for i, x in enumerate(labels)]


def test_auto_loss_comes_from_the_validated_scale():
    assert choose_loss(_pairs([0, 1, 0, 1]), "auto") == "bce"
    assert choose_loss(_pairs([0, 1, 2, 3]), "auto") == "lambda"
    # one typo'd 10 in binary data was a silent switch to LambdaLoss; now it is an error naming it
    with pytest.raises(FinerankError, match=r"label 10\.0 is outside the label scale 0\.\.4"):
        choose_loss(_pairs([0, 1, 0, 1, 10]), "auto")
    with pytest.raises(FinerankError, match="outside the label scale 0..1"):
        choose_loss(_pairs([0, 1, 2]), "auto", max_label=1)
    with pytest.raises(FinerankError, match="outside"):
        choose_loss(_pairs([0, 1, float("nan")]), "bce")
    assert choose_loss(_pairs([0, 1, 7]), "auto", max_label=10) == "lambda"


def test_bce_targets_use_the_scale_not_a_stray_value():
    assert label_scale([0.0, 1.0]) == ("binary", 1.0)
    assert label_scale([0.0, 0.5, 1.0], max_label=1) == ("binary", 1.0)
    assert label_scale([0.0, 1.0, 3.0]) == ("graded", 3.0)
    assert label_scale([0.0, 1.0, 2.0], max_label=4) == ("graded", 4.0)
    with pytest.raises(FinerankError):
        label_scale([0.0, 1.0, 1e308])
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(FinerankError, match="max_label"):
            label_scale([0.0], max_label=bad)


def test_a_few_grades_in_binary_data_are_flagged():
    rows = _pairs([0, 1] * 200 + [2])
    cfg = TrainConfig(train="x")
    from finerank.core.records import Dataset

    warns = guardrails(cfg, Dataset(rows, "x", "jsonl"), None)
    assert any("only 1 of 401 training pairs carry a label above 1" in w for w in warns), warns
    graded = _pairs([0, 1, 2, 3] * 100)
    assert not any("label above 1" in w for w in guardrails(cfg, Dataset(graded, "x", "jsonl"), None))


@pytest.mark.parametrize("label, expected", [(1e308, "a label in 0..4"), (10, "a label in 0..4")])
def test_candidates_for_rerank_and_evaluate_check_labels(tmp_path, label, expected):
    rows = [{"query_id": "q", "query": "q", "doc_id": "a", "document": "x", "label": 1},
            {"query_id": "q", "query": "q", "doc_id": "b", "document": "y", "label": label}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataError) as ei:
        Candidates.from_file(path)
    assert ei.value.line == 2 and ei.value.field == "label" and expected in str(ei.value)
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"query": "q", "document": "x"}])
    assert Candidates.from_file(unlabeled).n_pairs == 1  # labels stay optional in candidate lists


def test_cli_evaluate_and_rerank_refuse_a_huge_label(tmp_path, tiny_model):
    """Label 1e308 reached pytrec_eval and crashed it; now both commands stop at the row, before any scoring."""
    rows = [{"query_id": "q", "query": "q", "doc_id": "a", "document": "x", "label": 1},
            {"query_id": "q", "query": "q", "doc_id": "b", "document": "y", "label": 1e308}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    for args in (("evaluate", "--model", tiny_model, "--dataset", path),
                 ("rerank", "--model", tiny_model, "--input", path, "--output", tmp_path / "o.jsonl")):
        r = run_cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and f"{path}:2:" in r.stderr and "0..4" in r.stderr, r.stderr


def test_collections_check_grades_on_every_path(tmp_path):
    coll = _beir(tmp_path / "c", CORPUS, QUERIES, "query-id\tcorpus-id\tscore\n1\t184\t1\n2\t185\t9\n")
    with pytest.raises(DataError) as ei:
        load_collection(coll)  # data candidates / data mine / --judgments / --val-corpus read collections this way
    assert ei.value.line == 3 and ei.value.field == "score" and "0..4" in str(ei.value)
    assert load_collection(coll, max_label=9).qrels["2"]["185"] == 9
    with pytest.raises(DataError):
        Candidates.from_file(_jsonl(tmp_path / "c.jsonl", [{"query_id": "1", "query": "what is lift", "doc_id": "184",
                                                            "document": "wings", "label": 1}])).with_judgments(coll)
    r = run_cli("data", "candidates", coll, "--out", tmp_path / "cands.jsonl")
    assert r.returncode == 2 and f"{coll / 'qrels.tsv'}:3:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "cands.jsonl").exists()


# ---------------------------------------------------------------------------------------------------- ids
def test_a_doc_id_reused_with_another_text_is_an_error(tmp_path):
    rows = _binary_rows(bad={"doc_id": "d0-0", "document": "a different text"})  # line 6 reuses line 1's doc_id
    for path in (_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "p.csv"):
        if path.suffix == ".csv":
            import csv

            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        line = 6 if path.suffix == ".jsonl" else 7
        with pytest.raises(DataError) as ei:
            load(path)
        e = ei.value
        assert (e.line, e.field) == (line, "document") and "a different text" in str(e)
        assert f"line {line - 5}, the first with doc_id d0-0" in str(e)
        with pytest.raises(DataError):
            Candidates.from_file(path)  # rerank / evaluate read the same way
        r = run_cli("data", "inspect", path, "--model", "")
        assert r.returncode == 2 and f"{path}:{line}:" in r.stderr and "doc_id d0-0" in r.stderr, r.stderr


def test_the_same_doc_id_with_the_same_text_is_fine(tmp_path):
    rows = _binary_rows()
    rows[5] = {**rows[5], "doc_id": "d0-0", "document": "doc  0 of 0 "}  # whitespace aside, line 1's text
    ds = load(_jsonl(tmp_path / "p.jsonl", rows))
    assert sum(1 for p in ds.pairs if p.doc_id == "d0-0") == 2


def test_a_query_id_reused_with_another_text_names_the_first_line(tmp_path):
    rows = _binary_rows(bad={"query_id": "q0", "query": "another question"})
    with pytest.raises(DataError) as ei:
        load(_jsonl(tmp_path / "p.jsonl", rows))
    assert ei.value.line == 6 and ei.value.field == "query" and "line 1, the first with query_id q0" in str(ei.value)


@pytest.mark.parametrize("which", ["corpus", "queries"])
def test_a_duplicate_underscore_id_in_beir_files_names_both_lines(tmp_path, which):
    corpus, queries = list(CORPUS), list(QUERIES)
    if which == "corpus":
        corpus.append({"_id": "184", "title": "", "text": "not about wings"})  # line 4 repeats line 2's _id
        first, line = 2, 4
    else:
        queries.append({"_id": "1", "text": "how do birds fly"})  # line 3 repeats line 1's _id
        first, line = 1, 3
    coll = _beir(tmp_path / "c", corpus, queries, "query-id\tcorpus-id\tscore\n1\t184\t1\n")
    with pytest.raises(DataError) as ei:
        load(coll)
    e = ei.value
    assert e.path == str(coll / f"{which}.jsonl") and e.line == line and f"line {first}" in str(e), str(e)
    r = run_cli("data", "inspect", coll, "--model", "")
    assert r.returncode == 2 and f"{coll / (which + '.jsonl')}:{line}:" in r.stderr and f"line {first}" in r.stderr
    # the same _id repeating the same text is no conflict
    (coll / f"{which}.jsonl").write_text((coll / f"{which}.jsonl").read_text().rsplit("\n", 2)[0] + "\n" +
                                         json.dumps((corpus if which == "corpus" else queries)[first - 1]) + "\n")
    assert len(load(coll).pairs) == 1


# --------------------------------------------------------------------------------------------- TREC qrels
def test_three_column_trec_qrels_are_an_error_even_when_doc_0_exists(tmp_path):
    """'1 0 184' (the relevance column lost) was read as BEIR: judgment (1, doc '0') = 184, and every system
    scored 0.0000. A TREC qrels line has four columns, whatever the corpus holds."""
    coll = _beir(tmp_path / "c", CORPUS, QUERIES, "1 0 184\n2 0 185\n", name="j.qrels")
    with pytest.raises(DataError) as ei:
        load(coll / "j.qrels")
    e = ei.value
    assert (e.path, e.line) == (str(coll / "j.qrels"), 1) and "4 columns" in str(e) and "found 3" in str(e)
    r = run_cli("data", "inspect", coll / "j.qrels", "--model", "", "--max-label", "1000")
    assert r.returncode == 2 and f"{coll / 'j.qrels'}:1:" in r.stderr and "4 columns" in r.stderr
    (coll / "j.qrels").write_text("1 0 184 1\n2 0 185 1\n")
    assert {(p.query_id, p.doc_id) for p in load(coll / "j.qrels").pairs} == {("1", "184"), ("2", "185")}


def test_a_short_line_in_trec_qrels_and_a_long_line_in_beir_qrels(tmp_path):
    coll = _beir(tmp_path / "c", CORPUS, QUERIES, "1 0 184 1\n2 185 1\n", name="j.qrels")
    with pytest.raises(DataError) as ei:
        load(coll / "j.qrels")
    assert ei.value.line == 2 and "found 3" in str(ei.value)
    (coll / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\t184\t1\n2\t0\t185\t1\n")
    with pytest.raises(DataError) as ei:
        load(coll)
    assert ei.value.line == 3 and "3 columns" in str(ei.value) and "found 4" in str(ei.value)


def test_inspect_refuses_pairs_built_in_memory_that_reuse_an_id():
    from finerank.data.inspect import inspect
    from finerank.core.records import Dataset

    pairs = [Pair("q1", "what is lift", "d1", "wings", 1.0), Pair("q1", "what is lift", "d2", "drag", 0.0),
             Pair("q2", "what is drag", "d1", "a different document", 0.0)]
    with pytest.raises(DataError) as ei:
        inspect(Dataset(pairs, "mem", "jsonl"), model=None)
    assert ei.value.line == 3 and "as row 1, the first with doc_id d1" in str(ei.value)
    pairs[2] = Pair("q2", "what is drag", "d1", "wings", 0.0)
    assert inspect(Dataset(pairs, "mem", "jsonl"), model=None).pairs == 3


def test_skip_invalid_keeps_the_first_text_of_an_id(tmp_path):
    rows = _binary_rows(bad={"doc_id": "d0-0", "document": "a different text"})
    path = _jsonl(tmp_path / "p.jsonl", rows)
    ds = load(path, skip_invalid=True)
    assert len(ds.pairs) == len(rows) - 1 and {p.document for p in ds.pairs if p.doc_id == "d0-0"} == {"doc 0 of 0"}
    assert ds.skipped[0].line == 6 and "the same document text as line 1" in ds.skipped[0].reason
    r = run_cli("data", "inspect", path, "--model", "", "--skip-invalid")
    assert r.returncode == 0 and "skipped 1 invalid rows" in r.stderr, r.stderr
