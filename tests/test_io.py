"""Loaders: the same rows from every format, and an error that tells the user what to fix for every bad row."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from finerank.core.errors import DataError, FinerankError
from finerank.io.collection import load
from finerank.io.files import stable_id

# ------------------------------------------------------------------------------------------------ helpers
PAIRS = [  # explicit ids; texts with commas and quotes, but no tabs or newlines (TSV cannot hold them)
    {"query_id": "q1", "query": "what is lift?", "doc_id": "d1", "document": "Lift, the force on a wing.",
     "label": 2},
    {"query_id": "q1", "query": "what is lift?", "doc_id": "d2", "document": 'Drag is "resistance".', "label": 0},
    {"query_id": "q1", "query": "what is lift?", "doc_id": "d3", "document": "Bernoulli's principle", "label": 1},
    {"query_id": "q2", "query": "boundary layer", "doc_id": "d4", "document": "A thin layer near the wall.",
     "label": 3},
    {"query_id": "q2", "query": "boundary layer", "doc_id": "d1", "document": "Lift, the force on a wing.", "label": 0},
    {"query_id": "q3", "query": "café shock wave", "doc_id": "d5", "document": "Shock waves at Mach 2.", "label": 4},
]
EXPECTED = {(r["query_id"], r["doc_id"], float(r["label"]), r["query"], r["document"]) for r in PAIRS}


def rows_of(ds) -> set:
    return {(p.query_id, p.doc_id, p.label, p.query, p.document) for p in ds.pairs}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_delimited(path: Path, rows, delimiter: str) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_beir(folder: Path, rows, qrels_name: str = "qrels.tsv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = {r["doc_id"]: r["document"] for r in rows}
    queries = {r["query_id"]: r["query"] for r in rows}
    write_jsonl(folder / "corpus.jsonl", [{"_id": d, "title": "", "text": t} for d, t in docs.items()])
    write_jsonl(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    qrels = folder / qrels_name
    qrels.parent.mkdir(parents=True, exist_ok=True)
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{r['query_id']}\t{r['doc_id']}\t{r['label']}\n" for r in rows), encoding="utf-8")
    return folder


def check_error(err: DataError, path: Path, line: int | None, field: str | None, value: str, expected: str):
    """The message names the file, the 1-based line, the field, the value seen and what was expected."""
    msg = str(err)
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    where = f"{path}:{line}" if line is not None else str(path)
    assert msg.startswith(where + ":"), msg
    assert (f"field '{field}'" if field else "row") in msg, msg
    assert value in msg, msg
    assert "expected " + expected in msg, msg


def check_cli_error(args, path: Path, line: int | None, field: str | None, value: str, expected: str):
    r = run_cli("data", "inspect", path, "--model", "", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in r.stderr, r.stderr
    assert (f"field '{field}'" if field else "row") in r.stderr, r.stderr
    assert value in r.stderr, r.stderr
    assert expected in r.stderr, r.stderr


GOOD = '{"query": "q", "document": "d", "label": 1}\n'

# name, file name, content (bytes), load() kwargs / CLI args, line, field, value shown, expected (a fragment)
ERROR_CASES = [
    ("malformed-json", "p.jsonl", (GOOD + '{"query": "q", "document": "d", "label": 1\n').encode(), {}, [],
     2, None, '"label": 1', "a JSON object (Expecting ',' delimiter"),
    ("missing-label", "p.jsonl", (GOOD * 2 + '{"query": "q", "document": "d"}\n').encode(), {}, [],
     3, "label", "None", "a 'label' field"),
    ("missing-document", "p.jsonl", (GOOD + '{"query": "q", "lable": 1}\n').encode(), {}, [],
     2, "document", "None", "a 'document' field (or text, doc, passage)"),
    ("empty-query", "p.jsonl", (GOOD + '{"query": "", "document": "d", "label": 1}\n').encode(), {}, [],
     2, "query", "''", "a non-empty query"),
    ("empty-document", "p.jsonl", (GOOD + '{"query": "q", "passage": "  ", "label": 1}\n').encode(), {}, [],
     2, "passage", "'  '", "a non-empty document"),
    ("label-not-number", "p.jsonl", (GOOD + '{"query": "q", "document": "d", "label": "high"}\n').encode(), {}, [],
     2, "label", "'high'", "a number"),
    ("label-nan", "p.jsonl", (GOOD + '{"query": "q", "document": "d", "label": NaN}\n').encode(), {}, [],
     2, "label", "nan", "a finite number"),
    ("label-nan-string", "p.csv", b"query,document,label\nq,d,1\nq,d,NaN\n", {}, [],
     3, "label", "'NaN'", "a finite number"),
    ("label-negative", "p.jsonl", (GOOD + '{"query": "q", "document": "d", "label": -1}\n').encode(), {}, [],
     2, "label", "-1", "a label >= 0"),
    ("label-above-scale", "p.jsonl", (GOOD + '{"query": "q", "document": "d", "label": 3}\n').encode(),
     {"max_label": 1}, ["--max-label", "1"], 2, "label", "3", "a label in 0..1"),
    ("undecodable-jsonl", "p.jsonl", GOOD.encode() + b'{"query": "q", "document": "caf\xe9 \xff", "label": 1}\n',
     {}, [], 2, "document", "\\xe9", "UTF-8 text (undecodable bytes)"),
    ("undecodable-csv", "p.csv", b"query,document,label\nq,d,1\nq\xe9,d,0\n", {}, [],
     3, "query", "\\xe9", "UTF-8 text (undecodable bytes)"),
    ("csv-too-many-fields", "p.csv", b'query,document,label\nq,d,1\nq,"a, b",0,5\n', {}, [],
     3, None, "'0', '5'", "3 fields (query, document, label), found 4"),
    ("tsv-too-few-fields", "p.tsv", b"query\tdocument\tlabel\nq\td\t1\nq\td\n", {}, [],
     3, None, "['q', 'd']", "3 fields (query, document, label), found 2"),
    ("csv-missing-header-column", "p.csv", b"query,passage,score\nq,d,1\n", {}, [],
     1, "label", "'score'", "a header with a 'label' column"),
    ("csv-empty-document", "p.csv", b"query,text,label\nq,d,1\nq,,1\n", {}, [],
     3, "text", "''", "a non-empty document"),
    ("csv-label-not-number", "p.csv", b"query,document,label\nq,d,1\nq,d,yes\n", {}, [],
     3, "label", "'yes'", "a number"),
]


@pytest.mark.parametrize("name,fname,content,kwargs,args,line,field,value,expected", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_bad_row_names_file_line_field_value_and_expected(tmp_path, name, fname, content, kwargs, args, line,
                                                          field, value, expected):
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(DataError) as ei:
        load(path, **kwargs)
    check_error(ei.value, path, line, field, value, expected)
    check_cli_error(args, path, line, field, value, expected)


def test_missing_label_on_line_three_exits_2(tmp_path):
    """The issue's own example: a JSONL whose third line lacks `label`."""
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"query": "a", "document": "b", "label": 1}, {"query": "a", "document": "c", "label": 0},
                       {"query": "a", "document": "d"}])
    r = run_cli("data", "inspect", path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{path}:3:" in r.stderr and "'label'" in r.stderr
    assert "the row has: query, document" in r.stderr  # the hint shows what the row does hold


def test_malformed_json_points_at_the_column(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "q", "document":\n', encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load(path)
    assert "column 27" in str(ei.value)  # just past the end of the line itself, not "column 1" of the next


def test_label_above_default_scale_and_wider_scale(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "document": "d", "label": 7}])
    with pytest.raises(DataError) as ei:
        load(path)
    check_error(ei.value, path, 1, "label", "7", "a label in 0..4")
    assert "--max-label" in str(ei.value)  # the hint says how to widen the scale
    assert load(path, max_label=10).pairs[0].label == 7.0


@pytest.mark.parametrize("label", ["true", "null", '"Infinity"', "[1]"])
def test_other_non_numbers_are_rejected(tmp_path, label):
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "q", "document": "d", "label": %s}\n' % label, encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load(path)
    assert ei.value.field == "label" and ei.value.line == 1


def test_not_an_object_and_bad_score(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load(path)
    assert ei.value.line == 1 and "a JSON object" in str(ei.value)
    path.write_text('{"query": "q", "document": "d", "label": 1, "score": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load(path)
    check_error(ei.value, path, 1, "score", "'x'", "a number")


# ------------------------------------------------------------------------------------------ collections
@pytest.fixture
def beir(tmp_path) -> Path:
    return write_beir(tmp_path / "coll", PAIRS)


@pytest.mark.parametrize("kind,line,field,value,expected", [
    ("query", 3, "query-id", "'q9'", "a query id from the queries file"),
    ("document", 4, "corpus-id", "'d9'", "a document id from the corpus"),
])
def test_qrel_naming_unknown_id(beir, kind, line, field, value, expected):
    qrels = beir / "qrels.tsv"
    lines = qrels.read_text().splitlines(keepends=True)
    lines[line - 1] = "q9\td1\t1\n" if kind == "query" else "q1\td9\t1\n"
    qrels.write_text("".join(lines))
    with pytest.raises(DataError) as ei:
        load(beir)
    check_error(ei.value, qrels, line, field, value, expected)
    r = run_cli("data", "inspect", beir, "--model", "")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{qrels}:{line}:" in r.stderr and field in r.stderr and value in r.stderr and expected in r.stderr


def test_trec_qrel_with_unknown_document(beir):
    qrels = beir / "run.qrels"
    qrels.write_text("q1 0 d1 2\nq2 0 nope 1\n")
    with pytest.raises(DataError) as ei:
        load(qrels)
    check_error(ei.value, qrels, 2, "corpus-id", "'nope'", "a document id from the corpus")


def test_bad_qrels_grade_and_bad_corpus_line(beir):
    qrels = beir / "qrels.tsv"
    good = qrels.read_text()
    qrels.write_text(good + "q1\td2\t1.5\n")
    with pytest.raises(DataError) as ei:
        load(beir)
    check_error(ei.value, qrels, len(PAIRS) + 2, "score", "'1.5'", "an integer relevance grade")
    qrels.write_text(good + "q1\td2\n")
    with pytest.raises(DataError) as ei:
        load(beir)
    assert ei.value.line == len(PAIRS) + 2 and "3 columns, as the header says), found 2" in str(ei.value)
    qrels.write_text(good)
    corpus = beir / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + '{"title": "no id", "text": "x"}\n')
    with pytest.raises(DataError) as ei:
        load(beir)
    check_error(ei.value, corpus, 6, "_id", "None", "a '_id' field in every document")


def test_collection_without_judgments_is_an_error_not_a_crash(beir):
    (beir / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match="at least one judgment"):
        load(beir)
    r = run_cli("data", "inspect", beir, "--model", "")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_missing_path_and_unknown_format(tmp_path):
    r = run_cli("data", "inspect", tmp_path / "nope.jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    r = run_cli("data", "inspect", path, "--format", "parquet")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "unknown format 'parquet'" in r.stderr
    with pytest.raises(FinerankError, match="cannot tell the format"):
        load(write_jsonl(tmp_path / "p.data", PAIRS))


# --------------------------------------------------------------------------------------------- skip-invalid
def test_skip_invalid_goes_on_and_reports_how_many_and_why(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"query": "q", "document": "d1", "label": 1}\n'
        b'{"query": "q", "document": "d2", "label": "x"}\n'
        b'{"query": "q", "document": "d3"\n'
        b'{"query": "q", "document": "d4", "label": 0}\n'
        b'{"query": "q", "document": "\xff", "label": 0}\n'
        b'{"query": "", "document": "d6", "label": 0}\n'
        b'{"query": "q", "document": "d7", "label": "y"}\n')
    ds = load(path, skip_invalid=True)
    assert [p.document for p in ds.pairs] == ["d1", "d4"]
    assert [(s.line, s.field) for s in ds.skipped] == [(2, "label"), (3, "row"), (5, "document"), (6, "query"),
                                                       (7, "label")]
    assert all(s.path == str(path) for s in ds.skipped)
    assert ds.skipped[0].reason == "label: expected a number"
    assert ds.skipped[2].reason == "document: expected UTF-8 text (undecodable bytes)"

    r = run_cli("data", "inspect", path, "--skip-invalid", "--model", "", "--json")
    assert r.returncode == 0, r.stderr
    assert "skipped 5 invalid rows" in r.stderr
    assert "label: expected a number (2)" in r.stderr  # why, grouped, with counts
    report = json.loads(r.stdout)
    assert report["pairs"] == 2 and report["skipped"] == 5
    assert report["skipped_reasons"]["label: expected a number"] == 2
    assert sum(report["skipped_reasons"].values()) == 5  # nothing dropped silently
    assert "skipped" in {w["code"] for w in report["warnings"]}


def test_skip_invalid_csv_and_collection(tmp_path, beir):
    path = tmp_path / "p.csv"
    path.write_bytes(b'query,document,label\nq,d1,1\nq,d2\nq,d3,-2\nq,d4,0\n')
    ds = load(path, skip_invalid=True)
    assert [p.document for p in ds.pairs] == ["d1", "d4"]
    assert [(s.line, s.field) for s in ds.skipped] == [(3, "row"), (4, "label")]

    qrels = beir / "qrels.tsv"
    qrels.write_text(qrels.read_text() + "q1\tghost\t1\nq404\td1\t1\n")
    ds = load(beir, skip_invalid=True)
    assert rows_of(ds) == EXPECTED
    assert [(s.line, s.field) for s in ds.skipped] == [(len(PAIRS) + 2, "corpus-id"), (len(PAIRS) + 3, "query-id")]


def test_skip_invalid_with_nothing_valid_left(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "q", "document": "d", "label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"at least one valid pair \(1 rows skipped\)"):
        load(path, skip_invalid=True)


def test_odd_characters_are_data_not_errors(tmp_path):
    odd = ["caf\ufffd au lait", "cafÃ© mojibake â€™", "zero\u200bwidth", "emoji 🚀 and ñ", "\ufeffBOM inside"]
    rows = [{"query": f"q {i}", "document": t, "label": 1} for i, t in enumerate(odd)]
    ds = load(write_jsonl(tmp_path / "odd.jsonl", rows))
    assert [p.document for p in ds.pairs] == odd
    ds = load(write_delimited(tmp_path / "odd.csv", rows, ","))
    assert [p.document for p in ds.pairs] == odd
    r = run_cli("data", "inspect", tmp_path / "odd.jsonl", "--model", "", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pairs"] == len(odd)


def test_utf8_bom_at_the_start_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffquery,document,label\nq,d,1\n".encode("utf-8"))
    assert load(path).pairs[0].query == "q"


# ---------------------------------------------------------------------------------------- same rows, any format
def test_same_rows_whatever_the_format(tmp_path):
    sources = {
        "jsonl": write_jsonl(tmp_path / "pairs.jsonl", PAIRS),
        "csv": write_delimited(tmp_path / "pairs.csv", PAIRS, ","),
        "tsv": write_delimited(tmp_path / "pairs.tsv", PAIRS, "\t"),
        "beir": write_beir(tmp_path / "beir", PAIRS),
    }
    trec = tmp_path / "trec"
    write_beir(trec, PAIRS)
    (trec / "qrels.tsv").unlink()
    (trec / "judgments.qrels").write_text("".join(f"{r['query_id']} 0 {r['doc_id']} {r['label']}\n" for r in PAIRS))
    sources["trec"] = trec / "judgments.qrels"
    for fmt, path in sources.items():
        ds = load(path)
        assert ds.format == fmt
        assert rows_of(ds) == EXPECTED, fmt
        assert len(ds) == len(PAIRS)
    # TREC qrels with the corpus and queries somewhere else
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text((trec / "judgments.qrels").read_text())
    ds = load(elsewhere, corpus=trec / "corpus.jsonl", queries=trec / "queries.jsonl")
    assert ds.format == "trec" and rows_of(ds) == EXPECTED
    assert ds.collection is not None and set(ds.collection.corpus) == {"d1", "d2", "d3", "d4", "d5"}


def test_trec_qrels_without_a_corpus_says_what_is_missing(tmp_path):
    path = tmp_path / "j.qrels"
    path.write_text("q1 0 d1 1\n")
    r = run_cli("data", "inspect", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corpus file not found" in r.stderr and "--corpus" in r.stderr


def test_csv_quoted_newline_and_line_numbers(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('query,document,label\nq,"two\nlines",1\nq,d,bad\n', encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load(path)
    assert ei.value.line == 4  # the record after a two-line record starts on line 4
    path.write_text('query,document,label\nq,"two\nlines",1\n', encoding="utf-8")
    assert load(path).pairs[0].document == "two\nlines"


@pytest.mark.parametrize("key", ["document", "text", "doc", "passage"])
def test_alternative_document_keys(tmp_path, key):
    rows = [{"query_id": r["query_id"], "query": r["query"], "doc_id": r["doc_id"], key: r["document"],
             "label": r["label"]} for r in PAIRS]
    assert rows_of(load(write_jsonl(tmp_path / "p.jsonl", rows))) == EXPECTED
    assert rows_of(load(write_delimited(tmp_path / "p.csv", rows, ","))) == EXPECTED


def test_ids_from_a_stable_hash_when_absent(tmp_path):
    rows = [{"query": r["query"], "document": r["document"], "label": r["label"]} for r in PAIRS]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    ds = load(path)
    for p in ds.pairs:
        assert p.query_id == stable_id("q", p.query) and p.doc_id == stable_id("d", p.document)
    by_query = ds.by_query()
    assert len(by_query) == 3  # same query text, same id
    assert len({p.doc_id for p in ds.pairs}) == 5  # d1's text appears twice, one id
    # pinned: ids written into splits and qrels must not change between finerank versions
    assert stable_id("q", "what is lift?") == "q135b0b45c290"
    assert stable_id("d", "Lift, the force on a wing.") == "d89825068deb8"
    # the same ids in another process with another hash seed (not Python's salted hash())
    code = ("import json, sys; from finerank.io.collection import load; "
            "print(json.dumps(sorted((p.query_id, p.doc_id) for p in load(sys.argv[1]).pairs)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env=env, check=True).stdout
    assert [tuple(x) for x in json.loads(out)] == sorted((p.query_id, p.doc_id) for p in ds.pairs)
    # and the same ids from the CSV of the same rows
    assert {(p.query_id, p.doc_id) for p in load(write_delimited(tmp_path / "p.csv", rows, ",")).pairs} == \
        {(p.query_id, p.doc_id) for p in ds.pairs}


def test_format_forces_a_format(tmp_path):
    path = write_jsonl(tmp_path / "pairs.txt", PAIRS)  # .txt reads as TREC qrels by default
    with pytest.raises(FinerankError):
        load(path)
    ds = load(path, format="jsonl")
    assert ds.format == "jsonl" and rows_of(ds) == EXPECTED
    tsv_as_txt = write_delimited(tmp_path / "pairs.dat", PAIRS, "\t")
    assert rows_of(load(tsv_as_txt, format="tsv")) == EXPECTED
    r = run_cli("data", "inspect", path, "--format", "jsonl", "--model", "", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pairs"] == len(PAIRS)


def test_beir_split(tmp_path):
    train, test = PAIRS[:4], PAIRS[4:]
    folder = write_beir(tmp_path / "b", PAIRS, "qrels/train.tsv")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{r['query_id']}\t{r['doc_id']}\t{r['label']}\n" for r in test))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{r['query_id']}\t{r['doc_id']}\t{r['label']}\n" for r in train))
    ds = load(folder, split="test")
    assert rows_of(ds) == {x for x in EXPECTED if (x[0], x[1]) in {(r["query_id"], r["doc_id"]) for r in test}}
    assert ds.collection.name == "b/test"
    assert len(load(folder, split="train")) == len(train)
    with pytest.raises(FinerankError, match="several qrels splits") as ei:
        load(folder)
    assert "--split" in str(ei.value)
    with pytest.raises(FinerankError, match="no qrels for split 'dev'") as ei:
        load(folder, split="dev")
    assert "test, train" in str(ei.value)
    r = run_cli("data", "inspect", folder, "--split", "test", "--model", "", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pairs"] == len(test)
    r = run_cli("data", "inspect", folder, "--model", "")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--split" in r.stderr


def test_beir_title_is_part_of_the_document(tmp_path):
    folder = write_beir(tmp_path / "b", PAIRS[:1])
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "Wings", "text": "Lift, the force on a wing."}])
    assert load(folder).pairs[0].document == "Wings Lift, the force on a wing."
