"""Queries without labels, for distillation: a query log read from a file, and pseudo-queries made from a corpus.

A query log is a text file (one query a line) or JSONL (``{"query"|"text", "query_id"|"_id"?}`` a line). Pseudo-queries
come from the corpus alone, never from judged queries (GPL / the inverse cloze task):

- ``title``: a document's title is the query; in the document's own text the title is removed, so that the match
  has to be made on the body (a copied title would teach string matching, not relevance).
- ``sentence``: a sentence of the document (seeded pick among those of 4 to 40 words) is the query, and it is removed
  from the document's text (the inverse cloze task).
- ``auto``: the title where a document has one, else a sentence.

:func:`drop_held_out` removes every query whose text (normalized as everywhere, :func:`finerank.core.text.
normalize_query`) is that of a held-out query, so that no held-out query reaches a student.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError, FinerankError
from ..core.records import Document
from ..core.text import normalize_query
from ..io.files import check_id

PSEUDO_KINDS = ("auto", "title", "sentence")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MIN_WORDS, MAX_WORDS = 4, 40


@dataclass(frozen=True)
class PseudoQuery:
    """A query made from document ``doc_id``, and that document's text with the query's words taken out."""

    query_id: str
    text: str
    doc_id: str
    document: str
    kind: str


def read_query_log(path) -> dict[str, str]:
    """query id -> text from a query log (text lines, or JSONL objects with ``query`` or ``text``). Blank lines are
    skipped; a repeated text is kept once; ids are made (``log-N``) where a row has none."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FinerankError(f"{path}: cannot read the query file ({getattr(e, 'strerror', None) or e})",
                            hint="--queries takes a text file (a query a line) or JSONL with a 'query' field") from None
    out: dict[str, str] = {}
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        qid, text = _query_row(path, n, line)
        key = normalize_query(text)
        if key in seen:
            continue
        seen.add(key)
        qid = qid or f"log-{n}"
        if qid in out:
            raise DataError(path, n, "query_id", qid, "each query id once")
        out[qid] = text
    if not out:
        raise DataError(path, None, None, "", "at least one query")
    return out


def _query_row(path: Path, n: int, line: str) -> tuple[str | None, str]:
    if not line.lstrip().startswith("{"):
        return None, line.strip()
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(path, n, None, line[:80], f"a JSON object ({e.msg})") from None
    text = row.get("query", row.get("text")) if isinstance(row, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, n, "query", text, "a non-empty query text (field 'query' or 'text')")
    key = "query_id" if "query_id" in row else "_id"
    qid = row.get(key)
    return (None if qid is None else check_id(str(qid), path, n, key)), text.strip()


def pseudo_queries(corpus: dict[str, Document], n: int, *, kind: str = "auto", seed: int = 42) -> list[PseudoQuery]:
    """Up to ``n`` pseudo-queries, from as many documents (a seeded sample of the corpus); see the module's
    docstring for the kinds. Documents that give no query of the kind (no title, no sentence of 4-40 words) are
    passed over."""
    if kind not in PSEUDO_KINDS:
        raise FinerankError(f"unknown pseudo-query kind {kind!r}", hint=f"choose one of: {', '.join(PSEUDO_KINDS)}")
    if n < 0:
        raise FinerankError(f"the number of pseudo-queries must be 0 or more, got {n}")
    ids = sorted(corpus)
    rng = random.Random(seed)
    rng.shuffle(ids)
    out: list[PseudoQuery] = []
    for did in ids:
        if len(out) >= n:
            break
        pq = _from_document(corpus[did], kind, random.Random(f"{seed}:{did}"))
        if pq is not None:
            out.append(pq)
    return out


def _from_document(doc: Document, kind: str, rng: random.Random) -> PseudoQuery | None:
    title = doc.title.strip()
    if kind in ("title", "auto") and len(title.split()) >= 2:
        body = doc.text.strip()
        body = body[len(title):].strip() if body.startswith(title) else body
        if body:
            return PseudoQuery(f"pq-title-{doc.doc_id}", title, doc.doc_id, body, "title")
        return None
    if kind == "title":
        return None
    sentences = [s for s in _SENTENCE.split(doc.full_text.strip()) if s.strip()]
    usable = [i for i, s in enumerate(sentences) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
    if len(sentences) < 2 or not usable:
        return None
    i = rng.choice(usable)
    rest = " ".join(sentences[:i] + sentences[i + 1:])
    return PseudoQuery(f"pq-sent-{doc.doc_id}", sentences[i].strip(), doc.doc_id, rest, "sentence")


def drop_held_out(queries: dict[str, str], held_out: dict[str, str] | None) -> tuple[dict[str, str], int]:
    """``queries`` without any whose normalized text is a held-out query's; (kept, number dropped)."""
    if not held_out:
        return dict(queries), 0
    banned = {normalize_query(t) for t in held_out.values()}
    kept = {q: t for q, t in queries.items() if normalize_query(t) not in banned}
    return kept, len(queries) - len(kept)
