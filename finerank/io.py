"""Loaders and writers for every format finerank reads, with validation.

Formats (chosen from the path, or forced with ``format=``):

- ``jsonl``: one pair a line: ``query``, ``document`` (or ``text``/``doc``/``passage``), ``label``, optional
  ``query_id``/``doc_id`` (ids default to a stable hash of the text) and ``score`` (a first-stage score).
- ``csv`` / ``tsv``: the same columns, with a header row.
- ``beir``: a folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv`` or ``qrels/<split>.tsv``.
- ``trec``: TREC qrels (``qid 0 docid rel``) with a corpus and queries (BEIR jsonl) given beside it.

Every bad row raises :class:`~finerank.errors.DataError` naming file, line, field, value and what was expected;
with ``skip_invalid=True`` the row is recorded in ``Dataset.skipped`` instead. Writers are atomic: a temp file in
the same folder renamed over the target, so a half-written output never replaces a good one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DataError, FinerankError
from .records import Collection, Dataset, Document, Pair, Run, Skipped
from .text import normalize_query

DOC_KEYS = ("document", "text", "doc", "passage")
QID_KEYS = ("query_id", "qid")
DID_KEYS = ("doc_id", "did", "pid", "docid")
FORMATS = ("jsonl", "csv", "tsv", "beir", "trec")
DEFAULT_MAX_LABEL = 4.0
EMBEDDED = {"cranfield": Path(__file__).parent / "datasets" / "cranfield"}
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
class _SameQuery:
    """A query_id names one query (texts compared by :func:`finerank.text.normalize_query`): a row that reuses an
    id with another query is a DataError."""

    def __init__(self):
        self.seen: dict[str, str] = {}

    def __call__(self, pair: Pair, path, line) -> Pair:
        if self.seen.setdefault(pair.query_id, normalize_query(pair.query)) != normalize_query(pair.query):
            raise DataError(path, line, "query", pair.query,
                            f"the same query text as earlier rows of query_id {pair.query_id}")
        return pair


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
    for n, row in _read_jsonl_objects(path, "document", ("_id",), sk):
        with sk.row():
            title = row.get("title") or ""
            text = row.get("text") or ""
            if not isinstance(text, str) or not isinstance(title, str):
                raise DataError(path, n, "text", text, "a string")
            if not (title.strip() or text.strip()):
                raise DataError(path, n, "text", text, "a non-empty document (title or text)")
            corpus[str(row["_id"])] = Document(str(row["_id"]), text, title)
    return corpus


def read_queries(path, *, skip_invalid=False, skipped=None) -> dict[str, str]:
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    queries: dict[str, str] = {}
    for n, row in _read_jsonl_objects(path, "query", ("_id", "text"), sk):
        with sk.row():
            text = row["text"]
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, n, "text", text, "a non-empty query")
            queries[str(row["_id"])] = text
    return queries


def read_qrels(path, corpus: dict | None = None, queries: dict | None = None, *, max_label=None,
               skip_invalid=False, skipped=None) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (with a ``query-id corpus-id score`` header) or TREC qrels (``qid 0 docid rel``)."""
    path = Path(path)
    sk = _Skipper(skip_invalid, skipped)
    qrels: dict[str, dict[str, int]] = {}
    for n, text in _lines_skipping(path, sk):
        if not text.strip():
            continue
        parts = text.split()
        if n == 1 and parts and parts[0].lower() in ("query-id", "query_id", "qid"):
            continue  # header
        with sk.row():
            if len(parts) == 4:
                qid, _, did, rel = parts
            elif len(parts) == 3:
                qid, did, rel = parts
            else:
                raise DataError(path, n, None, text.strip(), "'query-id corpus-id score' (BEIR) or 'qid 0 docid rel' (TREC)")
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
                    max_label=None, skip_invalid=False, skipped=None) -> Collection:
    """A BEIR folder (``path`` is the folder), or TREC/BEIR qrels at ``path`` with ``corpus_path``/``queries_path``
    (by default ``corpus.jsonl`` and ``queries.jsonl`` beside it). Only judged queries are kept."""
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
    kw = dict(max_label=max_label, skip_invalid=skip_invalid, skipped=skipped, require_label=require_label)
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


# ----------------------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file beside ``path`` and rename it over ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
        run.setdefault(parts[0], {})[parts[2]] = score
    return run
