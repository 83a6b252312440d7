"""Candidate lists, the one type a reranker reranks and an evaluation scores: each query's documents in
first-stage order, the first-stage scores that are known (all, some or none), and the judgments.

One reader for every source: a pairs file (JSONL/CSV/TSV; a query's rows are its list, ``label`` and ``score``
optional), a TREC run over a collection, BM25 over a collection, or records in memory.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from ..core.errors import DataError, FinerankError
from ..io.collection import load_collection
from ..io.files import DEFAULT_MAX_LABEL, MAX_TEXT_CHARS, detect_format, resolve_path
from ..io.pairs import iter_pairs
from ..io.runs import read_trec_run
from ..core.records import Collection, Pair, Run
from ..retrieval.bm25 import candidates as bm25_run
from ..retrieval.mine import candidate_pairs

PAIR_FORMATS = ("jsonl", "csv", "tsv")


@dataclass
class Candidates:
    """Each query's candidate list: texts, first-stage scores (where known) and the judgments."""

    queries: dict[str, str]
    docs: dict[str, list[tuple[str, str]]]                            # qid -> [(doc_id, text)], first-stage order
    first_stage: dict[str, dict[str, float]] = field(default_factory=dict)  # qid -> doc_id -> score, where known
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)    # qid -> doc_id -> gain, where judged
    source: str = ""
    sha256: str | None = None  # of the file's bytes as they were read (a pairs file), None where not read from one

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_pairs(cls, pairs, source: str = "") -> "Candidates":
        """Lists from Pair records: a query's pairs, in their order, are its list; labels become judgments."""
        out = cls({}, {}, {}, {}, source)
        for p in pairs:
            out.queries[p.query_id] = p.query
            out.docs.setdefault(p.query_id, []).append((p.doc_id, p.document))
            if p.label is not None:
                out.qrels.setdefault(p.query_id, {})[p.doc_id] = int(round(p.label))
            if p.score is not None:
                out.first_stage.setdefault(p.query_id, {})[p.doc_id] = float(p.score)
        return out

    @classmethod
    def from_run(cls, run: Run, collection: Collection, *, source: str = "", path=None,
                 skip_unknown: bool = False) -> "Candidates":
        """Lists from a run over ``collection`` (best first); judgments from the collection. A query or document
        the collection lacks is a DataError naming ``path``, or (queries, ``skip_unknown``) left out."""
        where = path or source or "run"
        pairs = []
        for qid, docs in run.items():
            if qid not in collection.queries:
                if skip_unknown:
                    continue
                raise DataError(where, None, "qid", qid, f"a query of the collection {collection.name or ''}".strip())
            for did, score in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])):
                if did not in collection.corpus:
                    raise DataError(where, None, "docid", did,
                                    f"a document of the collection {collection.name or ''}".strip())
                pairs.append(Pair(qid, collection.queries[qid], did, collection.corpus[did].full_text, None, score))
        if not pairs:
            raise FinerankError(f"{where}: no query of the run is in {collection.name or 'the collection'}",
                                hint=f"run queries: {', '.join(list(run)[:5])}")
        cands = cls.from_pairs(pairs, source or str(where))
        cands.qrels = {q: dict(collection.qrels[q]) for q in cands.queries if q in collection.qrels}
        return cands

    @classmethod
    def from_file(cls, path, *, collection=None, split: str | None = None, top_k: int | None = None,
                  format: str | None = None, skip_unknown: bool = False,
                  max_label: float | None = DEFAULT_MAX_LABEL,
                  max_chars: int | None = MAX_TEXT_CHARS) -> "Candidates":
        """Lists from a pairs file (JSONL/CSV/TSV, labels optional, in 0..``max_label`` where given), or from a TREC
        run whose texts and judgments come from ``collection`` (a BEIR folder, TREC qrels, an embedded name, or a
        Collection); a text over ``max_chars`` characters (None: no cap) is refused naming its line."""
        path = resolve_path(path)
        fmt = format or ("trec" if collection is not None else detect_format(path))
        if fmt in PAIR_FORMATS and collection is None:
            digest = hashlib.sha256()
            rows = iter_pairs(path, fmt, max_label=max_label, require_label=False, digest=digest, max_chars=max_chars)
            cands = cls.from_pairs(_once_per_query(rows, path, fmt), str(path))
            cands.sha256 = digest.hexdigest()
            if not cands.docs:
                raise DataError(path, None, None, "", "at least one (query, document) row")
        elif fmt == "trec" and collection is not None:
            coll = (collection if isinstance(collection, Collection)
                    else load_collection(collection, split=split, max_label=max_label, max_chars=max_chars))
            cands = cls.from_run(read_trec_run(path), coll, source=f"{path} over {coll.name or collection}",
                                 path=path, skip_unknown=skip_unknown)
        elif fmt == "trec":
            raise FinerankError(f"{path}: a TREC file names documents by id only",
                                hint="pass the collection that holds their texts (--collection, or --dataset "
                                     "COLLECTION --candidates RUN)")
        else:
            raise FinerankError(f"{path}: a collection, not candidate lists",
                                hint="make lists with finerank data candidates (BM25), then pass the pairs JSONL, "
                                     "or a collection together with a TREC run of candidates")
        return cands.top(top_k) if top_k is not None else cands

    @classmethod
    def from_bm25(cls, pairs, collection, top_k: int, split: str | None = None) -> "Candidates":
        """BM25 top-k over a collection's corpus for the queries of ``pairs``; their labels are the judgments."""
        base = cls.from_pairs(pairs)
        corpus = (collection if isinstance(collection, Collection)  # only the corpus is used: any judgments do
                  else load_collection(collection, split=split, max_label=None)).corpus
        coll = Collection(corpus, base.queries, base.qrels)
        cands = cls.from_pairs(candidate_pairs(coll, bm25_run(coll, top_k=top_k)), f"BM25 top {top_k} of {collection}")
        cands.qrels = base.qrels
        return cands

    # ------------------------------------------------------------------------------------------ derived lists
    def with_judgments(self, collection, split: str | None = None,
                       max_label: float | None = DEFAULT_MAX_LABEL) -> "Candidates":
        """Take every judgment of these queries from a collection, so that relevant documents the first stage
        missed still count in the ideal ranking (a candidates file only knows the documents it lists)."""
        coll = (collection if isinstance(collection, Collection)
                else load_collection(collection, split=split, max_label=max_label))
        missing = [q for q in self.queries if q not in coll.qrels]
        if missing:
            raise FinerankError(f"{len(missing)} queries of {self.source} have no judgments in {coll.name or collection}",
                                hint=f"for example: {', '.join(missing[:5])}")
        self.qrels = {q: dict(coll.qrels[q]) for q in self.queries}
        return self

    def top(self, k: int) -> "Candidates":
        """The first ``k`` candidates of each list (first-stage order)."""
        if k < 1:
            raise FinerankError(f"top_k must be at least 1, got {k}")
        docs = {q: ds[:k] for q, ds in self.docs.items()}
        keep = {q: {d for d, _ in ds} for q, ds in docs.items()}
        first = {q: {d: s for d, s in sc.items() if d in keep[q]} for q, sc in self.first_stage.items()}
        return Candidates(self.queries, docs, first, self.qrels, self.source, self.sha256)

    def subset(self, query_ids) -> "Candidates":
        """The lists of ``query_ids`` only (in that order)."""
        keep = [q for q in query_ids if q in self.docs]
        return Candidates({q: self.queries[q] for q in keep}, {q: self.docs[q] for q in keep},
                          {q: self.first_stage[q] for q in keep if q in self.first_stage},
                          {q: self.qrels[q] for q in keep if q in self.qrels}, self.source)

    def deranged(self, seed: int = 0) -> "Candidates":
        """The same lists, each under another list's query text (a fixed derangement: the queries in a seeded
        random order, each list given the next one's text). A reranker that reads the query must rank them worse;
        one that scores documents alone ranks them as before. First-stage scores are dropped (they belong to the
        true queries); judgments stay those of the true queries."""
        qids = list(self.docs)
        if len(qids) < 2:
            raise FinerankError("the query-dependence check needs at least two candidate lists")
        order = qids[:]
        random.Random(seed).shuffle(order)
        other = {q: order[(i + 1) % len(order)] for i, q in enumerate(order)}
        return Candidates({q: self.queries[other[q]] for q in qids}, dict(self.docs), {}, self.qrels,
                          f"{self.source} (deranged queries, seed {seed})")

    # ------------------------------------------------------------------------------------------ views
    @property
    def n_pairs(self) -> int:
        return sum(len(v) for v in self.docs.values())

    @property
    def scored(self) -> bool:
        """Whether every candidate carries a first-stage score (BM25, the hybrid and fusion need them)."""
        return bool(self.docs) and all(len(self.first_stage.get(q, {})) == len(ds) for q, ds in self.docs.items())

    def flat(self) -> list[tuple[str, str, str, str]]:
        """(query_id, doc_id, query, document) of every candidate, list by list."""
        return [(q, d, self.queries[q], t) for q, ds in self.docs.items() for d, t in ds]

    def first_stage_scores(self) -> list[float | None] | None:
        """The first-stage score of every candidate in :meth:`flat` order (None where unknown); None if none is."""
        if not self.first_stage:
            return None
        return [self.first_stage.get(q, {}).get(d) for q, ds in self.docs.items() for d, _ in ds]

    def first_stage_run(self) -> Run:
        """The input order as a run: a list's first-stage scores where all of them are known, else rank order."""
        run: Run = {}
        for q, ds in self.docs.items():
            known = self.first_stage.get(q, {})
            if len(known) == len(ds):
                run[q] = {d: float(known[d]) for d, _ in ds}
            else:
                run[q] = {d: float(len(ds) - i) for i, (d, _) in enumerate(ds)}
        return run

    def has_negatives(self) -> bool:
        return any(self.qrels.get(q, {}).get(d, 0) <= 0 for q, ds in self.docs.items() for d, _ in ds)

    def run_of(self, scores) -> Run:
        """A run from one score a candidate, in :meth:`flat` order."""
        run: Run = {}
        for (q, d, _, _), s in zip(self.flat(), scores):
            run.setdefault(q, {})[d] = float(s)
        return run


def _once_per_query(pairs, path, fmt: str):
    """The pairs of a candidates file, each (query_id, doc_id) once: a list holds a document once (a run keeps one
    score a document, so a repeat would silently lose a row). A repeat is a DataError naming its line."""
    first: dict[tuple[str, str], int] = {}
    for k, p in enumerate(pairs, start=1):
        key = (p.query_id, p.doc_id)
        if key in first:
            raise DataError(path, _row_line(path, fmt, k), "doc_id", p.doc_id,
                            f"each doc_id once per query (query_id {p.query_id} lists it on line "
                            f"{_row_line(path, fmt, first[key])} already)",
                            hint="remove the repeated row, or give the documents distinct doc_ids")
        first[key] = k
        yield p


def _row_line(path, fmt: str, k: int) -> int | None:
    """The line of the k-th data row (1-based) of a pairs file: blank lines hold no row, a CSV header is line 1."""
    import csv

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        if fmt == "jsonl":
            rows = 0
            for n, text in enumerate(f, start=1):
                rows += bool(text.strip())
                if rows == k:
                    return n
            return None
        reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
        rows = -1  # the header
        for fields in reader:
            rows += bool(fields and any(x.strip() for x in fields))
            if rows == k:
                return reader.line_num
    return None
