"""Pairs files (JSONL, CSV, TSV) and their labels, validated row by row.

- ``jsonl``: one pair a line: ``query``, ``document`` (or ``text``/``doc``/``passage``), ``label``, optional
  ``query_id``/``doc_id`` (ids default to a stable hash of the text) and ``score`` (a first-stage score).
- ``csv`` / ``tsv``: the same columns, with a header row.

Labels are numbers in 0..``max_label`` (default 4) on every path; an id names one text (a query_id, doc_id or
``_id`` given again with another text is an error naming the first line). Every bad row raises
:class:`~finerank.core.errors.DataError` naming file, line, field, value and what was expected; with
``skip_invalid=True`` the row is recorded in ``Dataset.skipped`` instead.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Iterator

from ..core.errors import DataError, FinerankError
from ..core.records import Pair, Skipped
from ..core.text import normalize_query
from .files import (DEFAULT_MAX_LABEL, MAX_TEXT_CHARS, Skipper, bad_key, check_id, check_length, detect_format,
                    finite_score, json_objects, lines_skipping, resolve_path, stable_id)

DOC_KEYS = ("document", "text", "doc", "passage")
QID_KEYS = ("query_id", "qid")
DID_KEYS = ("doc_id", "did", "pid", "docid")


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


def _opt_id(row: dict, keys: tuple[str, ...], path, line) -> str | None:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip() != "":
            return check_id(str(v), path, line, k)
    return None


def _pair(row: dict, path, line, max_label, require_label: bool = True, max_chars: int | None = MAX_TEXT_CHARS) -> Pair:
    query = check_length(_text(row, ("query",), path, line, "query"), max_chars, path, line, "query")
    doc = check_length(_text(row, DOC_KEYS, path, line, "document"), max_chars, path, line,
                       next(k for k in DOC_KEYS if k in row))
    if "label" not in row and require_label:
        raise DataError(path, line, "label", None, "a 'label' field (a number, graded 0-4 or binary 0/1)",
                        hint=f"the row has: {', '.join(map(str, row)) or 'nothing'}")
    unlabeled = row.get("label") in (None, "") and not require_label
    label = None if unlabeled else parse_label(row["label"], path, line, max_label)
    qid = _opt_id(row, QID_KEYS, path, line) or stable_id("q", query)
    did = _opt_id(row, DID_KEYS, path, line) or stable_id("d", doc)
    score = row.get("score")
    score = None if score is None or score == "" else finite_score(score, path, line)
    return Pair(qid, query, did, doc, label, score)


# ----------------------------------------------------------------------------------------------- readers
def same_document(text: str) -> str:
    """When two document texts are the same document: equal once runs of whitespace are collapsed."""
    return " ".join(text.split())


class SameText:
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


class SameQuery:
    """Within one pairs file, a query_id names one query and a doc_id one document: a row that reuses an id with
    another text is a DataError (ids made from the text are consistent by construction)."""

    def __init__(self, unit: str = "line"):
        self.queries = SameText("query", "query_id", normalize_query, unit)
        self.docs = SameText("document", "doc_id", same_document, unit)

    def __call__(self, pair: Pair, path, line) -> Pair:
        self.queries.check(pair.query_id, pair.query, path, line, "query")
        self.docs.check(pair.doc_id, pair.document, path, line, "document")
        return pair


class SameGrade:
    """A (query_id, doc_id) pair given again with another label is a DataError naming both lines (the same label
    again is a harmless repeat): one judgment cannot hold two grades. ``on=False`` lets them through (``data
    inspect`` reports them as label noise)."""

    def __init__(self, on: bool = True, what: str = "label"):
        self.on, self.what = on, what
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def check(self, qid: str, did: str, label, path, line: int, field: str | None = None) -> None:
        if label is None or not self.on:
            return
        first = self.seen.setdefault((qid, did), (label, line))
        if first[0] != label:
            raise DataError(path, line, field or self.what, label,
                            f"the {self.what} {first[0]:g} that line {first[1]} gives query {qid}, document {did}",
                            hint="one judgment a (query, document) pair: remove one of the two lines, or fix its grade")


def check_ids(pairs: Iterable[Pair], source: str = "pairs") -> None:
    """Pairs built in memory obey the loaders' rule: a query_id names one query, a doc_id one document (a
    DataError naming the 1-based row and the row that first gave the id)."""
    same = SameQuery(unit="row")
    for i, p in enumerate(pairs, start=1):
        same(p, source, i)


def iter_jsonl_pairs(path, *, max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None,
                     require_label: bool = True, digest=None, max_chars: int | None = MAX_TEXT_CHARS,
                     one_grade: bool = True) -> Iterator[Pair]:
    path = Path(path)
    sk = Skipper(skip_invalid, skipped)
    same, grade = SameQuery(), SameGrade(one_grade)
    for n, row in json_objects(path, sk, expected="a JSON object with query, document and label", digest=digest):
        with sk.row():
            pair = same(_pair(row, path, n, max_label, require_label, max_chars), path, n)
            grade.check(pair.query_id, pair.doc_id, pair.label, path, n)
            yield pair



def iter_csv_pairs(path, *, delimiter=",", max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None,
                   require_label: bool = True, digest=None, max_chars: int | None = MAX_TEXT_CHARS,
                   one_grade: bool = True) -> Iterator[Pair]:
    path = Path(path)
    sk = Skipper(skip_invalid, skipped)
    same, grade = SameQuery(), SameGrade(one_grade)
    state: dict = {"n": 0, "header": None}

    def locate(text: str) -> str | None:  # the column that holds undecodable bytes
        fields = next(csv.reader([text], delimiter=delimiter))
        return bad_key(dict(zip(state["header"] or [], fields)))

    lines = lines_skipping(path, sk, locate, digest)

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
            pair = same(_pair(dict(zip(header, fields)), path, start, max_label, require_label, max_chars), path, start)
            grade.check(pair.query_id, pair.doc_id, pair.label, path, start)
            yield pair



def iter_pairs(path, format: str | None = None, *, max_label=DEFAULT_MAX_LABEL, skip_invalid=False,
               skipped: list[Skipped] | None = None, require_label: bool = True, digest=None,
               max_chars: int | None = MAX_TEXT_CHARS, one_grade: bool = True) -> Iterator[Pair]:
    """Stream the pairs of a JSONL/CSV/TSV pairs file, validating each row (``require_label=False``: a row may
    leave its label out, as candidate lists to rerank do; its Pair has label None). ``digest`` (a hashlib object)
    gets the bytes as they are read. A query or document over ``max_chars`` characters (None: no cap), or a
    (query_id, doc_id) pair given again with another label (unless ``one_grade`` is false), is a DataError naming
    its line."""
    path = resolve_path(path)
    fmt = format or detect_format(path)
    kw = dict(max_label=check_max_label(max_label), skip_invalid=skip_invalid, skipped=skipped, require_label=require_label,
              digest=digest, max_chars=max_chars, one_grade=one_grade)
    if fmt == "jsonl":
        return iter_jsonl_pairs(path, **kw)
    if fmt in ("csv", "tsv"):
        return iter_csv_pairs(path, delimiter="," if fmt == "csv" else "\t", **kw)
    raise FinerankError(f"{path}: format '{fmt}' holds a collection, not a pairs file", hint="use load() instead")

