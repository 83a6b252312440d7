"""Loaders and writers for every format finerank reads, with validation.

Formats (chosen from the path, or forced with ``format=``):

- ``jsonl``: one pair a line: ``query``, ``document`` (or ``text``/``doc``/``passage``), ``label``, optional
  ``query_id``/``doc_id`` (ids default to a stable hash of the text) and ``score`` (a first-stage score).
- ``csv`` / ``tsv``: the same columns, with a header row.
- ``beir``: a folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv`` or ``qrels/<split>.tsv``.
- ``trec``: TREC qrels (``qid 0 docid rel``, 4 columns) with a corpus and queries (BEIR jsonl) given beside it.

Labels are numbers in 0..``max_label`` (default 4) on every path; an id names one text (a query_id, doc_id or
``_id`` given again with another text is an error naming the first line).
Every bad row raises :class:`~finerank.core.errors.DataError` naming file, line, field, value and what was expected;
with ``skip_invalid=True`` the row is recorded in ``Dataset.skipped`` instead. Writers are atomic: a temp file in
the same folder renamed over the target, so a half-written output never replaces a good one; they follow the one
output policy (see "outputs" below: :func:`check_outputs` before any work, :func:`written_together` for a
command's files).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..core.errors import DataError, FinerankError, OutputError
from ..core.records import Collection, Dataset, Document, Pair, Run, Skipped
from ..core.text import normalize_query

DOC_KEYS = ("document", "text", "doc", "passage")
QID_KEYS = ("query_id", "qid")
DID_KEYS = ("doc_id", "did", "pid", "docid")
FORMATS = ("jsonl", "csv", "tsv", "beir", "trec")
DEFAULT_MAX_LABEL = 4.0
EMBEDDED = {"cranfield": Path(__file__).parents[1] / "datasets" / "cranfield"}
# the files of a run folder (finerank train --out DIR)
RUN_RECORD = "finerank-run.json"       # what the run did: data hashes, versions, timings, metrics
RUN_CONFIG = "finerank-config.yaml"    # the effective configuration, reusable with --config
COMPLETE = ".finerank-complete"        # written into a checkpoint once the Trainer has finished saving it


# ----------------------------------------------------------------------------------------------------- paths
def resolve_path(path: str | os.PathLike) -> Path:
    """A path, or the name of an embedded collection (``cranfield``)."""
    p = Path(path)
    if not p.exists() and str(path) in EMBEDDED:
        return EMBEDDED[str(path)]
    if not p.exists():
        names = ", ".join(EMBEDDED)
        raise FinerankError(f"{path}: no such file or folder", hint=f"give a path, or an embedded collection: {names}")
    return p


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "beir"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline().lower()
        return "trec" if "query-id" in header or "corpus-id" in header else "tsv"
    if suffix in (".qrels", ".trec", ".txt", ".run"):
        return "trec"
    raise FinerankError(
        f"{path}: cannot tell the format from the extension '{suffix}'",
        hint=f"pass --format with one of: {', '.join(FORMATS)}",
    )


def stable_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- line reader
_SURROGATE = re.compile("[\udc80-\udcff]")
UTF8_EXPECTED = "UTF-8 text (undecodable bytes)"


def _undecodable(path, n: int, raw: bytes, e: UnicodeDecodeError, locate=None) -> DataError:
    """The DataError for a line that is not UTF-8, naming the field that holds the bad bytes when ``locate``
    (a function of the line decoded with surrogateescape) can tell."""
    field = None
    if locate is not None:
        with contextlib.suppress(Exception):
            field = locate(raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff"))
    bad = raw[max(0, e.start - 10) : e.end + 10]
    return DataError(path, n, field, bad, UTF8_EXPECTED,
                     hint=f"byte {e.start + 1} of the line is not UTF-8: re-encode the file as UTF-8, "
                          "e.g. iconv -f latin1 -t utf-8")


def _bad_key(row) -> str | None:
    """The first key of a parsed row whose value holds undecodable bytes (as surrogateescape characters)."""
    if isinstance(row, dict):
        for k, v in row.items():
            if isinstance(v, str) and _SURROGATE.search(v):
                return str(k)
    return None


def _locate_json(text: str) -> str | None:
    return _bad_key(json.loads(text))


def _lines(path: Path, locate=None) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) without reading the file into memory; bad UTF-8 is a DataError."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise _undecodable(path, n, raw, e, locate) from None
            yield n, text


def _json_error(path, n: int, text: str, e: json.JSONDecodeError, what: str) -> DataError:
    """Malformed JSON: the text around the error and its column."""
    shown = text if len(text) <= 80 else text[max(0, e.pos - 40) : e.pos + 30]
    return DataError(path, n, None, shown, f"a JSON {what} ({e.msg} at column {e.colno})")


class _Skipper:
    """Raises, or records the bad row when skipping."""

    def __init__(self, skip_invalid: bool, skipped: list[Skipped] | None):
        self.skip = skip_invalid
        self.skipped = skipped if skipped is not None else []

    @contextlib.contextmanager
    def row(self):
        try:
            yield
        except DataError as e:
            if not self.skip:
                raise
            self.skipped.append(Skipped(e.path, e.line or 0, e.field or "row", e.reason))


# ---------------------------------------------------------------------------------------------- validation
def parse_label(value, path, line, max_label: float | None, field: str = "label") -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise DataError(path, line, field, value, "a number")
    try:
        label = float(value)
    except (TypeError, ValueError):
        raise DataError(path, line, field, value, "a number") from None
    if math.isnan(label) or math.isinf(label):
        raise DataError(path, line, field, value, "a finite number (not NaN or infinity)")
    if label < 0:
        raise DataError(path, line, field, value, "a label >= 0")
    if max_label is not None and label > max_label:
        raise DataError(path, line, field, value, f"a label in 0..{max_label:g}",
                        hint="labels are graded 0-4 or binary 0/1; pass --max-label to widen the scale")
    return label


def check_max_label(max_label: float | None) -> float | None:
    """``max_label`` (the top of the label scale; None = no bound) if it is a positive finite number."""
    if max_label is not None and (isinstance(max_label, bool) or not isinstance(max_label, (int, float))
                                  or not 0 < max_label < math.inf):
        raise FinerankError(f"max_label must be a positive finite number, got {max_label!r}",
                            hint="labels are graded 0-4 (--max-label 4) or binary (--max-label 1)")
    return max_label


def label_scale(labels: Iterable[float], max_label: float | None = None) -> tuple[str, float]:
    """The scale of validated labels: ``("binary", 1.0)`` when ``max_label`` is 1 or every label is 0 or 1, else
    ``("graded", top)`` with top = ``max_label``, or the highest label when ``max_label`` is None. A label outside
    0..``max_label`` (default 4) is a FinerankError, so one typo can never change the scale."""
    top = DEFAULT_MAX_LABEL if check_max_label(max_label) is None else float(max_label)
    values = set(labels)
    bad = sorted((x for x in values if not isinstance(x, (int, float)) or not 0 <= x <= top), key=repr)
    if bad:
        raise FinerankError(f"label {bad[0]!r} is outside the label scale 0..{top:g}",
                            hint="labels are graded 0-4 or binary 0/1; pass --max-label to widen the scale")
    if top <= 1 or values <= {0.0, 1.0}:
        return "binary", 1.0
    return "graded", top if max_label is not None else max(max(values), 1.0)


def _text(row: dict, keys: tuple[str, ...], path, line, field: str) -> str:
    for k in keys:
        if k in row:
            value = row[k]
            if not isinstance(value, str):
                raise DataError(path, line, k, value, "a string")
            if not value.strip():
                raise DataError(path, line, k, value, f"a non-empty {field}")
            return value
    alts = f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""
    raise DataError(path, line, field, None, f"a '{keys[0]}' field{alts}",
                    hint=f"the row has: {', '.join(map(str, row)) or 'nothing'}")


def _opt_id(row: dict, keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip() != "":
            return str(v)
    return None


def _pair(row: dict, path, line, max_label, require_label: bool = True) -> Pair:
    query = _text(row, ("query",), path, line, "query")
    doc = _text(row, DOC_KEYS, path, line, "document")
    if "label" not in row and require_label:
        raise DataError(path, line, "label", None, "a 'label' field (a number, graded 0-4 or binary 0/1)",
                        hint=f"the row has: {', '.join(map(str, row)) or 'nothing'}")
    unlabeled = row.get("label") in (None, "") and not require_label
    label = None if unlabeled else parse_label(row["label"], path, line, max_label)
    qid = _opt_id(row, QID_KEYS) or stable_id("q", query)
    did = _opt_id(row, DID_KEYS) or stable_id("d", doc)
    score = row.get("score")
    if score is not None and score != "":
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise DataError(path, line, "score", score, "a number (the first-stage retriever's score)") from None
        if math.isnan(score):
            raise DataError(path, line, "score", score, "a finite number")
    else:
        score = None
    return Pair(qid, query, did, doc, label, score)


# ----------------------------------------------------------------------------------------------- readers
def same_document(text: str) -> str:
    """When two document texts are the same document: equal once runs of whitespace are collapsed."""
    return " ".join(text.split())


class _SameText:
    """One id names one text: a row that reuses an id with another text is a DataError naming the row, the id and
    the line that first gave it (queries compared by :func:`finerank.core.text.normalize_query`, documents by
    :func:`same_document`)."""

    def __init__(self, what: str, id_field: str, normalize, unit: str = "line"):
        self.what, self.id_field, self.normalize, self.unit = what, id_field, normalize, unit
        self.seen: dict[str, tuple] = {}  # id -> (the first text, a reference the caller keeps anyway; its line)

    def check(self, id_: str, text, path, line: int, field: str, shown=None) -> None:
        first = self.seen.get(id_)
        if first is None:
            self.seen[id_] = (text, line)
        elif first[0] != text and self.normalize(first[0]) != self.normalize(text):  # normalized only on a change
            raise DataError(path, line, field, text if shown is None else shown,
                            f"the same {self.what} text as {self.unit} {first[1]}, the first with {self.id_field} {id_}",
                            hint=f"an id names one {self.what}: give the other text its own {self.id_field} "
                                 "(--skip-invalid keeps the first and skips the rest, reporting them)")


class _SameQuery:
    """Within one pairs file, a query_id names one query and a doc_id one document: a row that reuses an id with
    another text is a DataError (ids made from the text are consistent by construction)."""

    def __init__(self, unit: str = "line"):
        self.queries = _SameText("query", "query_id", normalize_query, unit)
        self.docs = _SameText("document", "doc_id", same_document, unit)

    def __call__(self, pair: Pair, path, line) -> Pair:
        self.queries.check(pair.query_id, pair.query, path, line, "query")
        self.docs.check(pair.doc_id, pair.document, path, line, "document")
        return pair


def check_ids(pairs: Iterable[Pair], source: str = "pairs") -> None:
    """Pairs built in memory obey the loaders' rule: a query_id names one query, a doc_id one document (a
    DataError naming the 1-based row and the row that first gave the id)."""
    same = _SameQuery(unit="row")
    for i, p in enumerate(pairs, start=1):
        same(p, source, i)


def iter_jsonl_pairs(path, *, max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None,
                     require_label: bool = True) -> Iterator[Pair]:
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    same = _SameQuery()
    for n, text in _lines_skipping(path, sk, _locate_json):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        with sk.row():
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _json_error(path, n, text, e, "object") from None
            if not isinstance(row, dict):
                raise DataError(path, n, None, row, "a JSON object with query, document and label")
            yield same(_pair(row, path, n, max_label, require_label), path, n)


def _lines_skipping(path: Path, sk: _Skipper, locate=None) -> Iterator[tuple[int, str]]:
    """Like _lines, but a line with undecodable bytes is skipped (and recorded) when skipping."""
    if not sk.skip:
        yield from _lines(path, locate)
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                err = _undecodable(path, n, raw, e, locate)
                sk.skipped.append(Skipped(err.path, n, err.field or "row", err.reason))
                continue
            yield n, text


def iter_csv_pairs(path, *, delimiter=",", max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None,
                   require_label: bool = True) -> Iterator[Pair]:
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    same = _SameQuery()
    state: dict = {"n": 0, "header": None}

    def locate(text: str) -> str | None:  # the column that holds undecodable bytes
        fields = next(csv.reader([text], delimiter=delimiter))
        return _bad_key(dict(zip(state["header"] or [], fields)))

    lines = _lines_skipping(path, sk, locate)

    def texts():
        for n, t in lines:
            state["n"] = n
            yield t

    reader = csv.reader(texts(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, 1, None, "", "a header row naming query, document and label") from None
    header = [h.strip() for h in header]
    state["header"] = header
    for field, keys in (("query", ("query",)), ("document", DOC_KEYS), ("label", ("label",))):
        if not any(k in header for k in keys) and (field != "label" or require_label):
            raise DataError(path, 1, field, header, f"a header with a '{keys[0]}' column")
    while True:
        start = state["n"] + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            with sk.row():
                raise DataError(path, start, None, str(e), "a well-formed CSV row")
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        with sk.row():
            if len(fields) != len(header):
                raise DataError(path, start, None, fields, f"{len(header)} fields ({', '.join(header)}), found {len(fields)}")
            yield same(_pair(dict(zip(header, fields)), path, start, max_label, require_label), path, start)


def _read_jsonl_objects(path: Path, what: str, required: tuple[str, ...], sk: _Skipper) -> Iterator[tuple[int, dict]]:
    for n, text in _lines_skipping(path, sk, _locate_json):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        with sk.row():
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _json_error(path, n, text, e, f"{what} object") from None
            if not isinstance(row, dict):
                raise DataError(path, n, None, row, f"a JSON {what} object")
            for k in required:
                if k not in row:
                    raise DataError(path, n, k, None, f"a '{k}' field in every {what}")
            yield n, row


def read_corpus(path, *, skip_invalid=False, skipped=None) -> dict[str, Document]:
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    corpus: dict[str, Document] = {}
    same = _SameText("document", "_id", lambda title_text: same_document(" ".join(title_text)))
    for n, row in _read_jsonl_objects(path, "document", ("_id",), sk):
        with sk.row():
            title = row.get("title") or ""
            text = row.get("text") or ""
            if not isinstance(text, str) or not isinstance(title, str):
                raise DataError(path, n, "text", text, "a string")
            if not (title.strip() or text.strip()):
                raise DataError(path, n, "text", text, "a non-empty document (title or text)")
            doc = Document(str(row["_id"]), text, title)
            same.check(doc.doc_id, (title, text), path, n, "text", shown=text)  # a repeated _id repeats the text
            corpus.setdefault(doc.doc_id, doc)
    return corpus


def read_queries(path, *, skip_invalid=False, skipped=None) -> dict[str, str]:
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    queries: dict[str, str] = {}
    same = _SameText("query", "_id", normalize_query)
    for n, row in _read_jsonl_objects(path, "query", ("_id", "text"), sk):
        with sk.row():
            text = row["text"]
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, n, "text", text, "a non-empty query")
            same.check(str(row["_id"]), text, path, n, "text")  # a repeated _id must repeat the text
            queries.setdefault(str(row["_id"]), text)
    return queries


QRELS_HEADER = ("query-id", "query_id", "qid")
BEIR_QRELS = "'query-id corpus-id score' (BEIR qrels: 3 columns, as the header says)"
TREC_QRELS = "'qid 0 docid rel' (TREC qrels: 4 columns)"


def read_qrels(path, corpus: dict | None = None, queries: dict | None = None, *, max_label=DEFAULT_MAX_LABEL,
               skip_invalid=False, skipped=None) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (the header ``query-id corpus-id score``, then 3 columns a line) or TREC qrels (no header,
    ``qid 0 docid rel``: 4 columns a line). The header decides which, never the ids: a line with another number of
    columns is a DataError, whatever the corpus holds."""
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    qrels: dict[str, dict[str, int]] = {}
    expected = TREC_QRELS
    for n, text in _lines_skipping(path, sk):
        if not text.strip():
            continue
        parts = text.split()
        if n == 1 and parts[0].lower() in QRELS_HEADER:
            if len(parts) != 3:
                raise DataError(path, n, None, text.strip(), "the BEIR qrels header 'query-id corpus-id score'")
            expected = BEIR_QRELS
            continue
        with sk.row():
            if expected is TREC_QRELS and len(parts) == 4:
                qid, _, did, rel = parts
            elif expected is BEIR_QRELS and len(parts) == 3:
                qid, did, rel = parts
            else:
                raise DataError(path, n, None, text.strip(), f"{expected}, found {len(parts)} columns",
                                hint=None if expected is BEIR_QRELS else
                                "a BEIR qrels file starts with the header line 'query-id corpus-id score'")
            if queries is not None and qid not in queries:
                raise DataError(path, n, "query-id", qid, "a query id from the queries file")
            if corpus is not None and did not in corpus:
                raise DataError(path, n, "corpus-id", did, "a document id from the corpus")
            label = parse_label(rel, path, n, max_label, field="score")
            if not label.is_integer():
                raise DataError(path, n, "score", rel, "an integer relevance grade")
            qrels.setdefault(qid, {})[did] = int(label)
    return qrels


def load_collection(path, *, split: str | None = None, qrels_path=None, corpus_path=None, queries_path=None,
                    max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None) -> Collection:
    """A BEIR folder (``path`` is the folder), or TREC/BEIR qrels at ``path`` with ``corpus_path``/``queries_path``
    (by default ``corpus.jsonl`` and ``queries.jsonl`` beside it). Only judged queries are kept; judgments are
    integers in 0..``max_label``."""
    check_max_label(max_label)
    path = resolve_path(path)
    if path.is_dir():
        folder = path
        if qrels_path is None:
            if split:
                qrels_path = folder / "qrels" / f"{split}.tsv"
                if not qrels_path.exists():
                    have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
                    raise FinerankError(f"{folder}: no qrels for split '{split}' ({qrels_path} is missing)",
                                        hint=f"splits here: {', '.join(have) or 'none (use qrels.tsv without --split)'}")
            elif (folder / "qrels.tsv").exists():
                qrels_path = folder / "qrels.tsv"
            else:
                have = sorted((folder / "qrels").glob("*.tsv"))
                if len(have) == 1:
                    qrels_path = have[0]
                elif have:
                    raise FinerankError(f"{folder}: several qrels splits ({', '.join(p.stem for p in have)})",
                                        hint="pick one with --split")
                else:
                    raise FinerankError(f"{folder}: no qrels.tsv or qrels/<split>.tsv",
                                        hint="a BEIR folder holds corpus.jsonl, queries.jsonl and qrels.tsv")
    else:
        folder = path.parent
        qrels_path = qrels_path or path
    corpus_path = Path(corpus_path) if corpus_path else folder / "corpus.jsonl"
    queries_path = Path(queries_path) if queries_path else folder / "queries.jsonl"
    for need, what in ((corpus_path, "corpus"), (queries_path, "queries")):
        if not Path(need).exists():
            raise FinerankError(f"{need}: {what} file not found",
                                hint=f"qrels need a {what} file: pass --{what} FILE or put {Path(need).name} beside them")
    corpus = read_corpus(corpus_path, skip_invalid=skip_invalid, skipped=skipped)
    queries = read_queries(queries_path, skip_invalid=skip_invalid, skipped=skipped)
    qrels = read_qrels(qrels_path, corpus, queries, max_label=max_label, skip_invalid=skip_invalid, skipped=skipped)
    name = folder.name if path.is_dir() else Path(qrels_path).stem
    return Collection(corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels,
                      name=name + (f"/{split}" if split else ""))


def iter_pairs(path, format: str | None = None, *, max_label=DEFAULT_MAX_LABEL, skip_invalid=False,
               skipped: list[Skipped] | None = None, require_label: bool = True) -> Iterator[Pair]:
    """Stream the pairs of a JSONL/CSV/TSV pairs file, validating each row (``require_label=False``: a row may
    leave its label out, as candidate lists to rerank do; its Pair has label None)."""
    path = resolve_path(path)
    fmt = format or detect_format(path)
    kw = dict(max_label=check_max_label(max_label), skip_invalid=skip_invalid, skipped=skipped, require_label=require_label)
    if fmt == "jsonl":
        return iter_jsonl_pairs(path, **kw)
    if fmt in ("csv", "tsv"):
        return iter_csv_pairs(path, delimiter="," if fmt == "csv" else "\t", **kw)
    raise FinerankError(f"{path}: format '{fmt}' holds a collection, not a pairs file", hint="use load() instead")


def load(path, format: str | None = None, *, split: str | None = None, corpus=None, queries=None,
         max_label: float | None = DEFAULT_MAX_LABEL, skip_invalid: bool = False) -> Dataset:
    """Load pairs from any supported source, validated. The same rows come out whatever the format."""
    path = resolve_path(path)
    fmt = format or detect_format(path)
    check_max_label(max_label)
    if fmt not in FORMATS:
        raise FinerankError(f"unknown format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    skipped: list[Skipped] = []
    if fmt in ("beir", "trec"):
        coll = load_collection(path, split=split, corpus_path=corpus, queries_path=queries, max_label=max_label,
                               skip_invalid=skip_invalid, skipped=skipped)
        pairs = list(coll.pairs())
        if not pairs:
            raise DataError(path, None, None, "", "at least one judgment (a qrels line naming a known query and "
                            "document)" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
        return Dataset(pairs, str(path), fmt, skipped, coll)
    pairs = list(iter_pairs(path, fmt, max_label=max_label, skip_invalid=skip_invalid, skipped=skipped))
    if not pairs:
        raise DataError(path, None, None, "", "at least one valid pair" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
    return Dataset(pairs, str(path), fmt, skipped)


# ----------------------------------------------------------------------------------------------- outputs
# The output policy of every command, checked by check_outputs before any work and again by atomic_write:
# - an output is a regular file or a new path; a folder, a device, a FIFO or a socket is refused (a writer replaces
#   the file through a temp file renamed over it, which would turn a device into a file);
# - a symlink is written through: its target is replaced, the link stays (and the target is what is compared);
# - an output is never an input, nor a file an input folder is read from, nor another output of the same command;
# - the nearest existing folder above it must be a folder where a file can be created (missing folders are made);
# - every error names the path the user gave (OutputError, exit 2), never a temp file.
_STAGED: contextvars.ContextVar[list | None] = contextvars.ContextVar("finerank_staged_writes", default=None)
_PROTECTED_MAX = 20_000  # files of one input folder compared with the outputs


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _not_regular(p: Path) -> str | None:
    """What is at ``p`` (following links) when it is not a regular file; None for a regular file or nothing."""
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a path under a file is caught later)
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _creatable_in(user, folder: Path) -> None:
    """The nearest existing folder at or above ``folder`` accepts a new file (tried, not guessed from the mode bits:
    root passes every permission check, and /proc refuses all the same)."""
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise OutputError(user, f"cannot be written: {p} is a file, not a folder",
                          hint="give a path in a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".finerank-probe.", dir=p)
    except OSError as e:
        raise OutputError(user, f"cannot create a file in {p} ({e.strerror or e})",
                          hint="give a path in a folder you can write to") from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


def check_output_file(path) -> Path:
    """``path`` as a writable output file: refused when it is a folder, a device or a FIFO, or when no file can be
    created where it goes. Returns the real path it writes to (a symlink's target)."""
    target = _real(path)
    kind = _not_regular(target)
    if kind is not None:
        hint = "give a file path, e.g. DIR/name.jsonl" if kind == "a folder" else (
            "finerank writes regular files only (through a temp file renamed into place): give a file path")
        raise OutputError(path, f"is {kind}, not a regular file", hint=hint)
    _creatable_in(path, target.parent)
    return target


def check_output_folder(path) -> Path:
    """``path`` as an output folder: a folder or a new path where a folder can be made. Returns its real path."""
    target = _real(path)
    kind = _not_regular(target)
    if os.path.exists(target) and kind != "a folder":
        raise OutputError(path, f"is {kind or 'a file'}, not a folder", hint="give a folder (new or existing)")
    _creatable_in(path, target)
    return target


def _protected(path) -> dict[Path, str]:
    """The real paths an input stands for (itself and, for a folder, the files in it), each with the user's name."""
    if path is None:
        return {}
    p = Path(os.path.expanduser(str(path)))
    if not os.path.exists(p):
        return {}  # a hub id or an embedded collection's name: nothing on disk to overwrite
    real = _real(p)
    out = {real: str(path)}
    if real.is_dir():
        for n, f in enumerate(real.rglob("*")):
            if n >= _PROTECTED_MAX:
                break
            if not f.is_dir():
                out[_real(f)] = str(Path(str(path)) / f.relative_to(real))
    return out


def check_outputs(outputs: Iterable, inputs: Iterable = (), *, folders: Iterable = ()) -> list[Path]:
    """Check every output of a command before it does any work (see the policy above); None entries are skipped.

    ``outputs`` are files, ``folders`` output folders (their own files are checked as outputs by the caller);
    ``inputs`` are what the command reads: files, or folders whose every file is protected. Raises OutputError when
    an output is an input, when two outputs are the same file, or when an output cannot be written. Returns the
    real paths of the output files."""
    protected: dict[Path, str] = {}
    for i in inputs:
        protected.update(_protected(i))
    for d in folders:
        if d is None:
            continue
        real = check_output_folder(d)
        if real in protected:
            raise OutputError(d, f"is an input ({protected[real]}): writing into it could destroy it",
                              hint="write the outputs to another folder")
    seen: dict[Path, str] = {}
    reals = []
    for o in outputs:
        if o is None:
            continue
        real = check_output_file(o)
        if real in protected:
            named = "" if protected[real] == str(o) else f" ({protected[real]})"
            raise OutputError(o, f"is an input{named}: writing it would destroy the input",
                              hint="give the output another path")
        if real in seen:
            raise OutputError(o, f"is also the output {seen[real]}: one output would overwrite the other",
                              hint="give each output its own path")
        seen[real] = str(o)
        reals.append(real)
    return reals


@contextlib.contextmanager
def written_together():
    """Files written by :func:`atomic_write` inside the block land together: each is written and synced to its temp
    file, and only when the whole block succeeds are they renamed into place; when it fails, none is. Yields the
    list of (temp file, target, path given) still pending; :func:`pending_file` finds one."""
    outer = _STAGED.get()
    if outer is not None:  # nested: the outermost block lands them
        yield outer
        return
    pending: list[tuple[str, Path, str]] = []
    token = _STAGED.set(pending)
    try:
        yield pending
    except BaseException:
        for tmp, _, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        _STAGED.reset(token)
    for k, (tmp, target, user) in enumerate(pending):
        try:
            os.replace(tmp, target)
        except OSError as e:
            for rest, _, _ in pending[k:]:
                with contextlib.suppress(OSError):
                    os.unlink(rest)
            raise OutputError(user, f"could not be written ({e.strerror or e})") from None


def pending_file(path) -> Path:
    """Inside :func:`written_together`, the temp file that holds what ``path`` will receive; else ``path``."""
    real = _real(path)
    for tmp, target, _ in _STAGED.get() or ():
        if target == real:
            return Path(tmp)
    return Path(path)


def _mode_for(target: Path) -> int:
    """The permission bits of the file at ``target`` (it is replaced, not rewritten), or a new file's (0666 less the
    umask)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_failed(e: OSError, tmp: str, target: Path) -> bool:
    """Whether an OSError raised inside a write block came from writing the output (a full disk, an I/O error), not
    from something the block itself read."""
    return e.filename in (None, tmp, str(target))


# ----------------------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file beside ``path`` and rename it over ``path`` only when the block succeeds (inside
    :func:`written_together`, when the whole group does). The output policy above applies: a folder, device or FIFO
    is refused, a symlink is written through, and errors name ``path``."""
    user = path
    target = check_output_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, _mode_for(target))  # mkstemp's file is private; the output keeps the mode a file would have
    except OSError as e:
        raise OutputError(user, f"could not be written ({e.strerror or e})") from None
    staged = _STAGED.get()
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if staged is not None:
            staged.append((tmp, target, str(user)))
        else:
            os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and _write_failed(e, tmp, target):
            hint = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
            raise OutputError(user, f"could not be written ({e.strerror or e})", hint=hint) from None
        raise


def write_jsonl(path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_pairs(path, pairs: Iterable[Pair]) -> int:
    return write_jsonl(path, (p.to_dict() for p in pairs))


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def write_trec_run(path, run: Run, tag: str = "finerank") -> None:
    """A TREC run file: ``qid Q0 docid rank score tag``, best first; ties broken by doc id."""
    with atomic_write(path) as f:
        for qid in run:
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def read_trec_run(path) -> Run:
    path = Path(path)
    run: Run = {}
    for n, text in _lines(path):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(path, n, None, text.strip(), "a TREC run line 'qid Q0 docid rank score tag'")
        try:
            score = float(parts[4])
        except ValueError:
            raise DataError(path, n, "score", parts[4], "a number") from None
        docs = run.setdefault(parts[0], {})
        if parts[2] in docs:  # a dict keeps one score a document: a repeat would silently drop a row
            raise DataError(path, n, "docid", parts[2], f"each docid once per query (query {parts[0]} lists it "
                            "twice)", hint="remove the repeated line, or give the documents distinct ids")
        docs[parts[2]] = score
    return run
