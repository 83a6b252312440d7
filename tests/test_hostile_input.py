"""Issue 26, second pass: the new surface (export, card, report, ids, outputs) under hostile input.

Each reproducer of the issue is a case: a bad call exits 2 naming the path (and line and field), never exit 0 with
damage, never a traceback. The table runs through the CLI's entry point in this process (``cli`` of
test_robustness), so that the tiny model loads once."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from test_robustness import _rows, _write, cli


@pytest.fixture(scope="module")
def bed(tiny_model, tmp_path_factory):
    """A folder with candidates and a copy of the tiny model."""
    d = tmp_path_factory.mktemp("hostile")
    _write(d / "cands.jsonl", _rows())
    shutil.copytree(tiny_model, d / "model")
    return d


# ----------------------------------------------------------------- 1. export removes only what its manifest lists
def _forged_export(tmp: Path, manifest: dict | None) -> Path:
    """The issue's folder: an export.json, a note, a FIFO and a subfolder with a file."""
    d = tmp / "D"
    d.mkdir()
    (d / "export.json").write_text(json.dumps(manifest) if manifest is not None else "{}")
    (d / "notes.txt").write_text("x\n")
    os.mkfifo(d / "p")
    (d / "sub").mkdir()
    (d / "sub" / "keep.txt").write_text("mine\n")
    return d


def _untouched(d: Path) -> None:
    assert (d / "notes.txt").read_text() == "x\n" and stat.S_ISFIFO(os.lstat(d / "p").st_mode)
    assert (d / "sub" / "keep.txt").read_text() == "mine\n"
    assert not list(d.glob("onnx")) and not list(d.parent.glob(".D.*"))  # no export landed, no temp left


def case_export_json_without_files(bed, tmp):
    return _forged_export(tmp, None), "has no 'files' list"


def case_export_json_lists_some(bed, tmp):
    return _forged_export(tmp, {"files": ["export.json", "notes.txt"]}), "export.json lists (p, sub)"


def case_export_json_lists_outside(bed, tmp):
    return _forged_export(tmp, {"files": ["../elsewhere", "notes.txt", "p", "sub/keep.txt"]}), "has no 'files' list"


def case_export_json_lists_a_fifo(bed, tmp):  # listed, but not a regular file: never its own
    listed = ["export.json", "notes.txt", "p", "sub/keep.txt"]
    return _forged_export(tmp, {"files": listed}), "is not a file its export.json lists (p)"


def case_export_json_is_a_fifo(bed, tmp):
    d = tmp / "D"
    d.mkdir()
    os.mkfifo(d / "export.json")
    return d, "exists and is not an earlier export"


EXPORT_CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_export")]


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[c.__name__[5:] for c in EXPORT_CASES])
def test_export_never_removes_what_it_did_not_write(case, bed, tmp_path, capsys):
    d, message = case(bed, tmp_path)
    before = sorted(p.name for p in d.iterdir())
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 2, output
    assert f"{d}:" in output and message in output.replace("\n", ""), output
    assert "Traceback" not in output, output
    assert sorted(p.name for p in d.iterdir()) == before
    if (d / "notes.txt").exists():
        _untouched(d)


def test_export_writes_a_manifest_and_replaces_only_its_files(bed, tmp_path, capsys):
    d = tmp_path / "e"
    d.mkdir()  # an empty folder is taken
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    meta = json.loads((d / "export.json").read_text())
    on_disk = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert meta["files"] == on_disk and "export.json" in on_disk and "onnx/model.onnx" in on_disk
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check", "--quantize", "int8")
    assert code == 0, output  # an earlier export with its manifest: replaced
    assert (d / "onnx" / "model_int8.onnx").exists() and not (d / "onnx" / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # the old export removed, no temp left

    (d / "notes.txt").write_text("mine\n")  # a file of the user's in an export folder: refused, kept
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 2 and "is not a file its export.json lists (notes.txt)" in output, output
    assert (d / "notes.txt").read_text() == "mine\n" and (d / "onnx" / "model_int8.onnx").exists()


def test_removing_an_earlier_export_spares_what_came_after_the_check(tmp_path):
    """The manifest's files go, folders only when empty: a file that appears after the check is kept."""
    from finerank.serving.export import _remove_listed

    old = tmp_path / "old"
    (old / "onnx").mkdir(parents=True)
    for f in ("export.json", "onnx/model.onnx", "config.json"):
        (old / f).write_text("x")
    (old / "onnx" / "late.txt").write_text("late")
    os.mkfifo(old / "config.json.fifo")
    assert _remove_listed(old, ["config.json", "export.json", "onnx/model.onnx", "config.json.fifo"]) is False
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*")) == ["config.json.fifo", "onnx",
                                                                               "onnx/late.txt"]
    (old / "onnx" / "late.txt").unlink()
    os.unlink(old / "config.json.fifo")
    assert _remove_listed(old, ["onnx/late.txt"]) is True and not old.exists()


# ------------------------------------------------------- 2. the model card: names escaped, markers unforgeable
FORGED = "<!-- finerank:evaluation -->"
HTML_NAME = "A<img src=x onerror=alert(1)>"


def _record(train_name: str, arch: str | None = None) -> dict:
    data = {"path": f"/data/{train_name}", "sha256": "ab" * 32, "pairs": 8, "queries": 2, "labels": [0, 1]}
    return {"arch": arch, "config": {"model": "minilm-l6", "lr": 3e-5}, "loss": "bce", "global_step": 2,
            "data": {"train": data, "val": dict(data, candidates="BM25 top 10 over cranfield")}, "versions": {}}


def _sections(card: str) -> list[str]:
    return [line for line in card.splitlines() if line.startswith("#")]


def test_a_forged_marker_in_a_file_name_leaves_the_card_whole(bed, tmp_path, capsys):
    """A training file named `<!-- finerank:evaluation -->.jsonl` and a run folder named with HTML: evaluate keeps
    every section of the card, replaces only its evaluation, and no raw HTML from a name reaches the card."""
    from finerank.report.card import EVAL_END, EVAL_START

    run = tmp_path / HTML_NAME
    shutil.copytree(bed / "model", run / "best")
    (run / "finerank-run.json").write_text(json.dumps(_record(f"{FORGED}.jsonl")))
    code, output = cli(capsys, "evaluate", "--model", run / "best", "--dataset", bed / "cands.jsonl",
                       "--query-check", "0")
    assert code == 0, output
    card = (run / "best" / "README.md").read_text()
    assert _sections(card) == ["# A&lt;img src=x onerror=alert(1)&gt;: a fine-tuned cross-encoder reranker",
                               "## Base model", "## Training data", "## Recipe", "## Validation history",
                               "## Evaluation", "## Usage", "## Versions"]
    assert "<img" not in card and "<!-- finerank:evaluation -->.jsonl" not in card
    assert "&lt;\\!-- finerank:evaluation --&gt;.jsonl" in card  # the file is still named, escaped
    lines = card.splitlines()
    assert lines.count(EVAL_START) == 1 and lines.count(EVAL_END) == 1
    section = card.split(f"\n{EVAL_START}\n")[1].split(f"\n{EVAL_END}\n")[0]
    assert "A&lt;img src=x onerror=alert(1)&gt;/best |" in section  # the system's row (its path), escaped
    code, output = cli(capsys, "evaluate", "--model", f"again={run / 'best'}", "--dataset", bed / "cands.jsonl",
                       "--query-check", "0")
    assert code == 0, output  # a second evaluation replaces the first, and only it
    again = (run / "best" / "README.md").read_text()
    assert again.split(EVAL_START)[0] == card.split(EVAL_START)[0] and "| again |" in again
    assert "A&lt;img" not in again.split(EVAL_START)[1].split(EVAL_END)[0]


def test_markers_count_only_as_whole_lines(tmp_path):
    """A card written before names were escaped, with a marker inside a table row: only the marker lines count."""
    from finerank.report.card import EVAL_END, EVAL_START, update_evaluation

    old = ["# run", "", "## Training data", "", f"| train | `{FORGED}.jsonl` | `{EVAL_END}` |", "",
           "## Evaluation", "", EVAL_START, "not yet", EVAL_END, "", "## Usage", ""]
    (tmp_path / "README.md").write_text("\n".join(old))
    text = update_evaluation(tmp_path, "the results").read_text()
    assert text == "\n".join(old[:9] + ["the results"] + old[10:])


@pytest.mark.parametrize("name", ["a`b\n# Injected heading.jsonl", "x\r\n## Injected\u2028.jsonl",
                                  "```\n<script>alert(1)<\\script>", "a|b|c.jsonl"],
                         ids=["backtick-newline", "crlf-u2028", "fence-script", "pipes"])
@pytest.mark.parametrize("arch", ["bi-encoder", "cross-encoder"])
def test_a_file_name_adds_no_heading_and_no_html_to_a_card(name, arch, tmp_path):
    from finerank.report.card import render_card

    card = render_card(tmp_path / "run" / "best", _record(name, arch))
    assert not any("Injected" in h for h in _sections(card)), _sections(card)
    assert "<script" not in card and "\r" not in card and "\u2028" not in card
    rows = [line for line in card.splitlines() if line.startswith("| train |")]
    assert len(rows) == 1 and rows[0].replace("\\|", "").count("|") == 7  # one row of 6 cells, whole


def test_md_escape_and_md_code_show_names_literally():
    import html

    from finerank.report.html import _md
    from finerank.report.markdown import md_code, md_escape

    for name in [HTML_NAME, f"{FORGED}.jsonl", "a`b\n# h", "x|y_z*[l](u)", "AT&T &lt;", "plain-name.jsonl"]:
        for md in (md_escape(name), md_code(name)):
            assert "\n" not in md and "<!--" not in md and "<img" not in md
            shown = _md(md)  # report.html's reading of the same markdown shows the name as it was
            assert html.unescape(shown.replace("<code>", "").replace("</code>", "")) == name.replace("\n", "\\n")
    assert md_code("train.jsonl") == "`train.jsonl`"  # an ordinary name stays an ordinary code span


# ----------------------------------------------------------------------------- 3. finite scores, and report.html
def case_score_inf_string(bed, tmp):
    rows = _rows()
    rows[5]["score"] = "inf"
    return _write(tmp / "c.jsonl", rows), 6, "score"


def case_score_nan_literal(bed, tmp):  # Python's json writes NaN, and reads it back
    rows = _rows()
    rows[2]["score"] = float("nan")
    return _write(tmp / "c.jsonl", rows), 3, "score"


def case_score_minus_infinity(bed, tmp):
    rows = _rows()
    rows[0]["score"] = "-Infinity"
    return _write(tmp / "c.jsonl", rows), 1, "score"


def case_trec_run_score_inf(bed, tmp):
    (tmp / "run.trec").write_text("1 Q0 184 1 12.5 bm25\n1 Q0 29 2 inf bm25\n")
    return tmp / "run.trec", 2, "score"


def case_trec_run_score_nan(bed, tmp):
    (tmp / "run.trec").write_text("1 Q0 184 1 NaN bm25\n")
    return tmp / "run.trec", 1, "score"


# ---------------------------------------------------------------------- 6. ids that the outputs can hold
def _bad_id(name: str, row: int, field: str, value: str):
    def case(bed, tmp):
        rows = _rows()
        rows[row][field] = value
        return _write(tmp / "c.jsonl", rows), row + 1, field
    case.__name__ = f"case_{name}"
    return case


case_query_id_with_a_space = _bad_id("query_id_with_a_space", 1, "query_id", "q 0")
case_query_id_with_a_tab = _bad_id("query_id_with_a_tab", 3, "query_id", "q0\t")
case_doc_id_with_a_newline = _bad_id("doc_id_with_a_newline", 4, "doc_id", "q1-d0\n1 Q0 forged 1 99.0 x")
case_doc_id_with_a_space = _bad_id("doc_id_with_a_space", 7, "doc_id", "two words")


def case_query_id_with_a_space_in_csv(bed, tmp):
    (tmp / "c.csv").write_text('query_id,query,doc_id,document,label\nq1,a query,d1,a doc,1\n"q 2",b query,d2,x,0\n')
    return tmp / "c.csv", 3, "query_id"


def case_corpus_id_with_a_space(bed, tmp):
    d = tmp / "beir"
    d.mkdir()
    _write(d / "corpus.jsonl", [{"_id": "d1", "text": "a document"}, {"_id": "d 2", "text": "another"}])
    _write(d / "queries.jsonl", [{"_id": "q1", "text": "a query"}])
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return d, 2, "_id"


def case_queries_id_with_a_newline(bed, tmp):
    d = tmp / "beir"
    d.mkdir()
    _write(d / "corpus.jsonl", [{"_id": "d1", "text": "a document"}])
    _write(d / "queries.jsonl", [{"_id": "q1", "text": "a query"}, {"_id": "q\n2", "text": "b query"}])
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return d, 2, "_id"


INPUT_CASES = [v for k, v in sorted(globals().items())
               if k.startswith("case_") and not k.startswith("case_export") and v.__code__.co_argcount == 2]


@pytest.mark.parametrize("case", INPUT_CASES, ids=[c.__name__[5:] for c in INPUT_CASES])
def test_bad_scores_and_ids_are_refused_at_load_naming_file_line_field(case, bed, tmp_path, capsys):
    src, line, field = case(bed, tmp_path)
    argv = ["rerank", "--model", bed / "model", "--input", src, "--output", tmp_path / "o.jsonl"]
    if src.suffix == ".trec":
        argv += ["--collection", "cranfield"]
    if src.is_dir():  # a collection: what every command that reads one reads
        argv = ["data", "inspect", src]
    code, output = cli(capsys, *argv)
    assert code == 2, output
    text = output.replace("\n", "")
    assert f":{line}: field '{field}'" in text and "Traceback" not in output, output
    assert str(src) in text, output
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.run").exists()  # refused before any output


def test_a_query_log_id_with_a_space_is_refused(tmp_path):
    from finerank.core.errors import DataError
    from finerank.data.queries import read_query_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"query": "a query", "query_id": "ok"}\n{"query": "b query", "_id": "not ok"}\n')
    with pytest.raises(DataError) as e:
        read_query_log(log)
    assert (e.value.line, e.value.field) == (2, "_id")


# A DOM just big enough for report.html's script: it runs the page's own code in node, where there is no browser.
_FAKE_DOM = r"""
function Node(tag) {
  this.tag = tag; this.children = []; this.attrs = {}; this.className = ""; this._text = "";
  this.rows = []; this.cells = [];
}
Node.prototype.appendChild = function (c) { this.children.push(c); return c; };
Node.prototype.setAttribute = function (k, v) { this.attrs[k] = String(v); };
Node.prototype.getAttribute = function (k) { return this.attrs[k]; };
Object.defineProperty(Node.prototype, "textContent", {
  get: function () { return this._text + this.children.map(function (c) { return c.textContent; }).join(""); },
  set: function (v) { this._text = String(v); this.children = []; }
});
var ids = {}, page = process.argv[2];
["sysA", "sysB", "pick", "status", "summary"].forEach(function (k) { ids[k] = new Node("x"); });
var pq = ids.perquery = new Node("table");
pq.tHead = new Node("thead"); pq.tBodies = [new Node("tbody")];
ids.summary.tHead = {rows: [{cells: []}]}; ids.summary.tBodies = [new Node("tbody")];
ids.data = new Node("script");
ids.data._text = require("fs").readFileSync(page, "utf8").match(/id='data'>([\s\S]*?)<\/script>/)[1];
global.window = {addEventListener: function () {}};
global.location = {hash: process.argv[3]};
global.document = {
  getElementById: function (k) { return ids[k]; },
  createElement: function (t) { return new Node(t); },
  createTextNode: function (t) { var n = new Node("#text"); n._text = t; return n; },
  body: new Node("body")
};
var js = require("fs").readFileSync(page, "utf8").match(/<script>([\s\S]*?)<\/script>/)[1];
eval(js);
var rows = pq.tBodies[0].children;
console.log(JSON.stringify({ready: document.body.attrs["data-ready"] || null, rows: rows.length,
  open: rows.filter(function (r) { return r.className === "detail"; }).length,
  cells: rows.filter(function (r) { return r.className !== "detail"; }).map(function (r) {
    return r.children.map(function (c) { return c.textContent; }); })}));
"""


def test_report_html_renders_non_finite_metrics_and_any_hash(bed, tmp_path):
    """A metric that is NaN or infinite reaches the page as null (strict JSON) and shows as '–'; #q=50%off (a '%'
    that does not percent-decode) opens that query instead of stopping the script."""
    node = shutil.which("node")
    from finerank.evaluation.evaluate import evaluate
    from finerank.report.html import render_html
    from finerank.report.markdown import report_notes, summary_table

    rows = [dict(r, query_id="50%off" if r["query_id"] == "q0" else r["query_id"]) for r in _rows()]
    rep = evaluate(["bm25"], str(_write(tmp_path / "c.jsonl", rows)), query_check=0, log=lambda m: None)
    s = rep.systems[0]
    s.per_query[rep.metrics[0]]["50%off"] = float("nan")
    s.run["q1"]["q1-d0"] = float("inf")
    head, table = summary_table(rep)
    page = render_html(rep, head, table, report_notes(rep), [])
    raw = page.split("id='data'>", 1)[1].split("</script>", 1)[0]

    def refuse(name):
        raise AssertionError(f"{name} in the page's JSON")

    data = json.loads(raw, parse_constant=refuse)  # strict: no NaN, no Infinity
    q = next(x for x in data["queries"] if x["id"] == "50%off")
    assert q["m"] == [None] and [h[2] for h in data["queries"][1]["top"][0]][0] is None
    if node is None:
        pytest.skip("no node on PATH to run the page's script")
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "dom.js").write_text(_FAKE_DOM)
    for hash_, opened in (("#q=50%off", 1), ("#q=50%25off", 1), ("#q=%E0%A4%A", 0), ("", 0)):
        r = subprocess.run([node, str(tmp_path / "dom.js"), str(tmp_path / "report.html"), hash_],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["ready"] == "1" and out["rows"] == 2 + opened and out["open"] == opened, (hash_, out)
        assert ["50%off", "query about topic 0", "1", "–", "–"] in out["cells"], out["cells"]


# ------------------------------------------------------------------ 7. every output checked before any work
def _tune(bed, out, *extra):
    return ["cascade", "tune", "--model", bed / "model", "--dataset", bed / "cands.jsonl", "--out", out,
            "--n2", "2", "--cheap", "bm25", "--latency-queries", "1", *extra]


def _evaluate(bed, out):
    return ["evaluate", "--model", f"tiny={bed / 'model'}", "--dataset", bed / "cands.jsonl", "--out", out,
            "--query-check", "0", "--no-card"]


def out_tune_into_the_dataset(bed, tmp):
    return _tune(bed, bed / "cands.jsonl"), f"{bed / 'cands.jsonl'}: is a file, not a folder"


def out_tune_into_a_file(bed, tmp):
    (tmp / "f.txt").write_text("mine\n")
    return _tune(bed, tmp / "f.txt"), f"{tmp / 'f.txt'}: is a file, not a folder"


def out_tune_into_a_device(bed, tmp):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    return _tune(bed, "/dev/null"), "/dev/null: is a device, not a folder"


def out_tune_into_the_model(bed, tmp):
    return _tune(bed, bed / "model"), f"{bed / 'model'}: is an input"


def out_tune_plot_is_a_folder(bed, tmp):
    (tmp / "t" / "cascade-tuning.png").mkdir(parents=True)
    return _tune(bed, tmp / "t"), f"{tmp / 't' / 'cascade-tuning.png'}: is a folder, not a regular file"


def out_tune_table_is_a_fifo(bed, tmp):
    (tmp / "t").mkdir()
    os.mkfifo(tmp / "t" / "cascade-tuning.json")
    return _tune(bed, tmp / "t"), "cascade-tuning.json: is a FIFO (named pipe), not a regular file"


def out_evaluate_runs_is_a_file(bed, tmp):
    (tmp / "ev").mkdir()
    (tmp / "ev" / "runs").write_text("mine\n")
    return _evaluate(bed, tmp / "ev"), f"{tmp / 'ev' / 'runs' / 'bm25.trec'}: cannot be written: "


def out_evaluate_run_file_is_a_folder(bed, tmp):
    (tmp / "ev" / "runs" / "tiny.trec").mkdir(parents=True)
    return _evaluate(bed, tmp / "ev"), f"{tmp / 'ev' / 'runs' / 'tiny.trec'}: is a folder, not a regular file"


def out_evaluate_plot_is_a_fifo(bed, tmp):
    (tmp / "ev").mkdir()
    os.mkfifo(tmp / "ev" / "metrics.png")
    return _evaluate(bed, tmp / "ev"), "metrics.png: is a FIFO (named pipe), not a regular file"


def out_evaluate_delta_plot_is_a_folder(bed, tmp):
    (tmp / "ev" / "per-query-delta.png").mkdir(parents=True)
    return _evaluate(bed, tmp / "ev"), "per-query-delta.png: is a folder, not a regular file"


OUT_CASES = [v for k, v in sorted(globals().items()) if k.startswith("out_")]


@pytest.mark.parametrize("case", OUT_CASES, ids=[c.__name__[4:] for c in OUT_CASES])
def test_outputs_are_checked_before_any_model_is_loaded(case, bed, tmp_path, capsys):
    before = (bed / "cands.jsonl").read_bytes()
    argv, message = case(bed, tmp_path)
    code, output = cli(capsys, *argv)
    assert code == 2, output
    assert message in output.replace("\n", ""), output
    assert "Traceback" not in output and "internal error" not in output, output
    assert "cascade tuning:" not in output and "scoring" not in output, output  # refused before the work
    assert (bed / "cands.jsonl").read_bytes() == before


def test_json_outputs_are_strict(tmp_path):
    """metrics.json and every JSON finerank writes: a non-finite number becomes null, never NaN/Infinity."""
    from finerank.io.outputs import write_json

    write_json(tmp_path / "m.json", {"nDCG@10": float("nan"), "runs": [1.5, float("inf"), {"x": float("-inf")}]})
    text = (tmp_path / "m.json").read_text()
    got = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert got == {"nDCG@10": None, "runs": [1.5, None, {"x": None}]}
