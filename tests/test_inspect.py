"""``data inspect``: the counts of the shared collections, and the warnings that save a training run."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED, run_cli, shared
from finerank.data.inspect import inspect
from finerank.io.collection import load
from finerank.core.records import Dataset, Pair

# judged pairs, queries and label histogram, from ../shared/data/README.md (checked against each qrels.tsv)
COLLECTIONS = {
    "scifact": (1258, 1109, {"1": 1258}),
    "cisi": (3114, 76, {"1": 3114}),
    "medline": (696, 30, {"1": 696}),
}


def inspect_json(*args) -> dict:
    r = run_cli("data", "inspect", *map(str, args), "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)  # one object, nothing else on stdout


@pytest.mark.shared
def test_cranfield_counts_grades_and_token_lengths():
    path = shared("cranfield")
    report = inspect_json(path)  # with the default tokenizer (minilm-l6)
    assert report["pairs"] == 1611
    assert report["queries"] == 225
    assert report["label_scale"] == "graded 1-4"
    assert report["label_histogram"] == {"1": 363, "2": 733, "3": 387, "4": 128}
    assert report["queries_without_positive"] == 0
    assert report["positives_per_query"]["min"] >= 1
    tokens = report["tokens"]
    assert tokens["measured_pairs"] == 1611
    assert 0 < tokens["p50"] <= tokens["p95"] <= tokens["max"]
    assert 0 <= tokens["truncated_share"] < 0.10  # Cranfield abstracts mostly fit 512 tokens
    codes = {w["code"] for w in report["warnings"]}
    assert "no-negatives" in codes  # qrels list only the judged-relevant documents
    assert "few-pairs" not in codes


@pytest.mark.shared
def test_cranfield_counts_agree_with_its_qrels_file():
    """The expected numbers above, recounted from the file itself rather than trusted."""
    lines = (shared("cranfield") / "qrels.tsv").read_text().splitlines()[1:]
    grades: dict[str, int] = {}
    for line in lines:
        grades[line.split("\t")[2]] = grades.get(line.split("\t")[2], 0) + 1
    assert len(lines) == 1611 and len({x.split("\t")[0] for x in lines}) == 225
    assert grades == {"1": 363, "2": 733, "3": 387, "4": 128}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(COLLECTIONS))
def test_shared_collections_match_their_readme(name):
    pairs, queries, hist = COLLECTIONS[name]
    report = inspect_json(shared(name), "--model", "")
    assert (report["pairs"], report["queries"]) == (pairs, queries)
    assert report["label_scale"] == "binary"
    assert report["label_histogram"] == hist
    assert report["tokens"] is None


@pytest.mark.shared
@pytest.mark.parametrize("split,pairs,queries", [("test", 339, 300), ("train", 919, 809)])
def test_scifact_splits(split, pairs, queries):
    report = inspect_json(shared("scifact"), "--split", split, "--model", "")
    assert (report["pairs"], report["queries"]) == (pairs, queries)


@pytest.mark.shared
def test_readme_table_still_says_so():
    readme = SHARED / "README.md"
    if not readme.exists():
        pytest.skip("../shared/data/README.md is absent")
    rows = {cells[1].strip(): cells for cells in (line.split("|") for line in readme.read_text().splitlines())
            if len(cells) > 6}
    assert rows["cranfield"][4].strip() == "225" and rows["cranfield"][5].strip() == "1611"
    for name, (pairs, queries, _) in COLLECTIONS.items():
        assert rows[name][4].strip().startswith(str(queries)) and rows[name][5].strip().startswith(str(pairs))


def test_embedded_cranfield_by_name():
    ds = load("cranfield")
    assert len(ds) == 1611 and len(ds.queries) == 225
    report = inspect(ds, model=None)
    assert report.label_histogram == {"1": 363, "2": 733, "3": 387, "4": 128}


# -------------------------------------------------------------------------------------------- crafted data
def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


LONG = "the boundary layer separates from the wing surface at high angles of attack " * 4


@pytest.fixture
def crafted(tmp_path):
    """Positives only, an exact duplicate, one (query, document) judged twice with different labels, long texts."""
    rows = [
        {"query_id": "q1", "query": "flow separation", "doc_id": "d1", "document": LONG, "label": 2},
        {"query_id": "q1", "query": "flow separation", "doc_id": "d1", "document": LONG, "label": 2},  # duplicate
        {"query_id": "q1", "query": "flow separation", "doc_id": "d2", "document": "stall " + LONG, "label": 1},
        {"query_id": "q1", "query": "Flow  Separation", "doc_id": "d2", "document": "stall " + LONG, "label": 3},
        {"query_id": "q2", "query": "shock waves", "doc_id": "d3", "document": "oblique shocks " + LONG, "label": 1},
    ]
    return write_jsonl(tmp_path / "crafted.jsonl", rows)


def test_inspect_finds_duplicates_conflicts_and_warns(crafted):
    report = inspect_json(crafted, "--max-length", "16")
    assert report["pairs"] == 5 and report["queries"] == 2 and report["documents"] == 3
    assert report["label_scale"] == "graded 1-3"
    assert report["label_histogram"] == {"1": 2, "2": 2, "3": 1}
    assert report["duplicate_pairs"] == 1
    assert report["duplicate_examples"][0]["copies"] == 2
    assert report["conflicting_pairs"] == 1  # the same text up to case and spaces, labels 1 and 3
    ex = report["conflict_examples"][0]
    assert ex["labels"] == [1.0, 3.0] and (ex["query_id"], ex["doc_id"]) == ("q1", "d2")
    assert report["tokens"]["max_length"] == 16
    assert report["tokens"]["truncated_share"] == 1.0
    warnings = {w["code"]: w for w in report["warnings"]}
    assert {"few-pairs", "no-negatives", "label-noise", "duplicates", "truncation"} <= set(warnings)
    for w in warnings.values():  # a reason and a remedy
        assert w["message"] and w["remedy"]
    assert "500" in warnings["few-pairs"]["message"]
    assert "mine" in warnings["no-negatives"]["remedy"]
    assert "--max-length" in warnings["truncation"]["remedy"]


def test_inspect_human_output(crafted):
    r = run_cli("data", "inspect", crafted, "--model", "")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "5 / 2 / 3" in text
    assert "graded 1-3" in text
    assert "conflict query q1 doc d2" in text
    assert text.count("warning") >= 4 and "remedy:" in text
    assert "fewer than 500" in text and "no pair has label 0" in text


def test_no_warnings_for_healthy_data():
    pairs = [Pair(f"q{i // 6}", f"query {i // 6}", f"d{i}", f"document {i}", float(i % 6 == 0)) for i in range(600)]
    report = inspect(Dataset(pairs, "mem", "jsonl"), model=None)
    assert report.warnings == []
    assert report.label_scale == "binary" and report.label_histogram == {"0": 500, "1": 100}
    assert report.positives_per_query == {"min": 1, "median": 1, "max": 1}


def test_queries_without_positive():
    pairs = [Pair("q1", "a", "d1", "x", 1.0), Pair("q2", "b", "d1", "x", 0.0), Pair("q2", "b", "d2", "y", 0.0)]
    report = inspect(Dataset(pairs, "mem", "jsonl"), model=None)
    assert report.queries_without_positive == 1
    assert report.queries_without_positive_examples == ["q2"]
    assert report.positives_per_query["min"] == 0


def test_empty_dataset_does_not_crash():
    report = inspect(Dataset([], "mem", "jsonl"), model=None)
    assert report.pairs == 0 and "few-pairs" in {w.code for w in report.warnings}
