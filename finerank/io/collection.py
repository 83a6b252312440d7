"""Collections: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` or ``qrels/<split>.tsv``) or TREC
qrels (``qid 0 docid rel``, 4 columns) with a corpus and queries (BEIR jsonl) beside them; and :func:`load`, the one
reader of every source (a pairs file or a collection, the format chosen from the path or forced with ``format=``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..core.errors import DataError, FinerankError
from ..core.records import Collection, Dataset, Document, Skipped
from ..core.text import normalize_query
from .files import (DEFAULT_MAX_LABEL, FORMATS, MAX_TEXT_CHARS, Skipper, check_id, check_length, detect_format,
                    json_objects, lines_skipping, resolve_path)
from .pairs import SameGrade, SameText, check_max_label, iter_pairs, parse_label, same_document


def read_corpus(path, *, skip_invalid=False, skipped=None, digest=None,
                max_chars: int | None = MAX_TEXT_CHARS) -> dict[str, Document]:
    path = Path(path)
    sk = Skipper(skip_invalid, skipped)
    corpus: dict[str, Document] = {}
    same = SameText("document", "_id", lambda title_text: same_document(" ".join(title_text)))
    for n, row in json_objects(path, sk, "document", required=("_id",), digest=digest):
        with sk.row():
            title = row.get("title") or ""
            text = row.get("text") or ""
            if not isinstance(text, str) or not isinstance(title, str):
                raise DataError(path, n, "text", text, "a string")
            if not (title.strip() or text.strip()):
                raise DataError(path, n, "text", text, "a non-empty document (title or text)")
            check_length(title, max_chars, path, n, "title")
            check_length(text, max_chars, path, n, "text")
            doc = Document(check_id(str(row["_id"]), path, n, "_id"), text, title)
            same.check(doc.doc_id, (title, text), path, n, "text", shown=text)  # a repeated _id repeats the text
            corpus.setdefault(doc.doc_id, doc)
    return corpus


def read_queries(path, *, skip_invalid=False, skipped=None, digest=None,
                 max_chars: int | None = MAX_TEXT_CHARS) -> dict[str, str]:
    path = Path(path)
    sk = Skipper(skip_invalid, skipped)
    queries: dict[str, str] = {}
    same = SameText("query", "_id", normalize_query)
    for n, row in json_objects(path, sk, "query", required=("_id", "text"), digest=digest):
        with sk.row():
            text = row["text"]
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, n, "text", text, "a non-empty query")
            check_id(str(row["_id"]), path, n, "_id")
            check_length(text, max_chars, path, n, "text")
            same.check(str(row["_id"]), text, path, n, "text")  # a repeated _id must repeat the text
            queries.setdefault(str(row["_id"]), text)
    return queries


QRELS_HEADER = ("query-id", "query_id", "qid")
BEIR_QRELS = "'query-id corpus-id score' (BEIR qrels: 3 columns, as the header says)"
TREC_QRELS = "'qid 0 docid rel' (TREC qrels: 4 columns)"


def read_qrels(path, corpus: dict | None = None, queries: dict | None = None, *, max_label=DEFAULT_MAX_LABEL,
               skip_invalid=False, skipped=None, digest=None) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (the header ``query-id corpus-id score``, then 3 columns a line) or TREC qrels (no header,
    ``qid 0 docid rel``: 4 columns a line). The header decides which, never the ids: a line with another number of
    columns is a DataError, whatever the corpus holds."""
    path = Path(path)
    sk = Skipper(skip_invalid, skipped)
    qrels: dict[str, dict[str, int]] = {}
    grade = SameGrade(what="score")
    expected = TREC_QRELS
    for n, text in lines_skipping(path, sk, digest=digest):
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
            grade.check(qid, did, int(label), path, n)
            qrels.setdefault(qid, {})[did] = int(label)
    return qrels


def load_collection(path, *, split: str | None = None, qrels_path=None, corpus_path=None, queries_path=None,
                    max_label=DEFAULT_MAX_LABEL, skip_invalid=False, skipped=None, digest=None,
                    max_chars: int | None = MAX_TEXT_CHARS) -> Collection:
    """A BEIR folder (``path`` is the folder), or TREC/BEIR qrels at ``path`` with ``corpus_path``/``queries_path``
    (by default ``corpus.jsonl`` and ``queries.jsonl`` beside it). Only judged queries are kept; judgments are
    integers in 0..``max_label``, one a (query, document) pair; texts hold at most ``max_chars`` characters. ``digest`` (a hashlib object) gets the bytes read: corpus, queries, qrels."""
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
    corpus = read_corpus(corpus_path, skip_invalid=skip_invalid, skipped=skipped, digest=digest, max_chars=max_chars)
    queries = read_queries(queries_path, skip_invalid=skip_invalid, skipped=skipped, digest=digest, max_chars=max_chars)
    qrels = read_qrels(qrels_path, corpus, queries, max_label=max_label, skip_invalid=skip_invalid, skipped=skipped,
                       digest=digest)
    name = folder.name if path.is_dir() else Path(qrels_path).stem
    return Collection(corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels,
                      name=name + (f"/{split}" if split else ""))


def load(path, format: str | None = None, *, split: str | None = None, corpus=None, queries=None,
         max_label: float | None = DEFAULT_MAX_LABEL, skip_invalid: bool = False, one_grade: bool = True) -> Dataset:
    """Load pairs from any supported source, validated. The same rows come out whatever the format. The Dataset's
    ``sha256`` is of the bytes read, as they were read (a collection: its corpus, queries and qrels, in that order).
    ``one_grade=False`` lets a pairs file give a (query_id, doc_id) pair two labels (``data inspect`` reports them)."""
    path = resolve_path(path)
    fmt = format or detect_format(path)
    check_max_label(max_label)
    if fmt not in FORMATS:
        raise FinerankError(f"unknown format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    skipped: list[Skipped] = []
    digest = hashlib.sha256()
    if fmt in ("beir", "trec"):
        coll = load_collection(path, split=split, corpus_path=corpus, queries_path=queries, max_label=max_label,
                               skip_invalid=skip_invalid, skipped=skipped, digest=digest)
        pairs = list(coll.pairs())
        if not pairs:
            raise DataError(path, None, None, "", "at least one judgment (a qrels line naming a known query and "
                            "document)" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
        return Dataset(pairs, str(path), fmt, skipped, coll, sha256=digest.hexdigest())
    pairs = list(iter_pairs(path, fmt, max_label=max_label, skip_invalid=skip_invalid, skipped=skipped, digest=digest,
                            one_grade=one_grade))
    if not pairs:
        raise DataError(path, None, None, "", "at least one valid pair" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
    return Dataset(pairs, str(path), fmt, skipped, sha256=digest.hexdigest())


