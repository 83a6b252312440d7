"""The typed records that flow between finerank's stages.

Every stage takes and returns these plain dataclasses (or writes them through :mod:`finerank.io`), so a
notebook user can build, inspect and hand them on without touching any stage's internals.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Pair:
    """One (query, document) pair. ``label`` is a graded (0-4) or binary (0/1) relevance (None only in candidate
    lists read without labels, see :meth:`finerank.data.candidates.Candidates.from_file`); ``score`` is the first-stage
    retriever's score when the pair came from a candidate list (BM25), else None."""

    query_id: str
    query: str
    doc_id: str
    document: str
    label: float | None
    score: float | None = None

    def to_dict(self) -> dict:
        row = {"query_id": self.query_id, "query": self.query, "doc_id": self.doc_id, "document": self.document}
        if self.label is not None:
            row["label"] = int(self.label) if float(self.label).is_integer() else self.label
        if self.score is not None:
            row["score"] = self.score
        return row


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """Title and text as one string, the way BEIR rerankers see a document (the title once)."""
        if not self.title or self.text.startswith(self.title):
            return self.text
        return f"{self.title} {self.text}".strip()


@dataclass
class Collection:
    """A BEIR-style test collection: corpus, queries and graded judgments (qrels)."""

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""

    def pairs(self) -> Iterator[Pair]:
        """The judged pairs, in qrels order."""
        for qid, docs in self.qrels.items():
            for did, label in docs.items():
                yield Pair(qid, self.queries[qid], did, self.corpus[did].full_text, float(label))

    def subset(self, query_ids: Iterable[str]) -> "Collection":
        """The same corpus with only the given queries (and their judgments)."""
        keep = [q for q in query_ids if q in self.queries]
        return Collection(
            corpus=self.corpus,
            queries={q: self.queries[q] for q in keep},
            qrels={q: dict(self.qrels.get(q, {})) for q in keep},
            name=self.name,
        )


@dataclass(frozen=True)
class Skipped:
    """A row that ``skip_invalid`` passed over, and why."""

    path: str
    line: int
    field: str
    reason: str


@dataclass
class Dataset:
    """What a loader returns: the pairs, the rows skipped (with ``skip_invalid``), and the collection when the
    source was one (BEIR folder or TREC qrels), so that later stages can retrieve over its corpus."""

    pairs: list[Pair]
    source: str
    format: str
    skipped: list[Skipped] = field(default_factory=list)
    collection: Collection | None = None
    sha256: str | None = None  # of the bytes the loader read, as it read them (not the file as it is later)

    def __len__(self) -> int:
        return len(self.pairs)

    def skipped_reasons(self) -> dict[str, int]:
        """Why rows were skipped: reason -> count, most common first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def by_query(self) -> dict[str, list[Pair]]:
        groups: dict[str, list[Pair]] = defaultdict(list)
        for p in self.pairs:
            groups[p.query_id].append(p)
        return dict(groups)

    @property
    def queries(self) -> dict[str, str]:
        return {p.query_id: p.query for p in self.pairs}

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        """Labels as qrels (query_id -> doc_id -> integer gain); the last label wins on duplicates."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for p in self.pairs:
            out[p.query_id][p.doc_id] = int(round(p.label))
        return dict(out)


Run = dict[str, dict[str, float]]
"""A ranking: query_id -> doc_id -> score (higher is better), the shape ir-measures and pytrec_eval take."""
