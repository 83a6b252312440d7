"""Candidate lists: what a reranker reranks and an evaluation scores (queries, documents in first-stage order,
first-stage scores when known, judgments)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FinerankError
from .records import Pair


@dataclass
class Candidates:
    """Each query's candidate list: texts, first-stage scores (when known) and the judgments."""

    queries: dict[str, str]
    docs: dict[str, list[tuple[str, str]]]           # qid -> [(doc_id, text)] in first-stage order
    first_stage: dict[str, dict[str, float]] | None  # qid -> doc_id -> score, when the candidates carry scores
    qrels: dict[str, dict[str, int]]
    source: str = ""

    @classmethod
    def from_pairs(cls, pairs: list[Pair], source: str = "") -> "Candidates":
        queries, docs, scores, qrels = {}, {}, {}, {}
        for p in pairs:
            queries[p.query_id] = p.query
            docs.setdefault(p.query_id, []).append((p.doc_id, p.document))
            qrels.setdefault(p.query_id, {})[p.doc_id] = int(round(p.label))
            if p.score is not None:
                scores.setdefault(p.query_id, {})[p.doc_id] = p.score
        complete = scores and all(len(scores.get(q, {})) == len(ds) for q, ds in docs.items())
        return cls(queries, docs, scores if complete else None, qrels, source)

    @classmethod
    def load(cls, dataset: str, *, run: str | None = None, split: str | None = None, top_k: int | None = None,
             format: str | None = None) -> "Candidates":
        """Pairs JSONL (a query's rows are its list), or a collection with a TREC run (``data candidates``)."""
        from .io import load, load_collection, read_trec_run

        if run:
            coll = load_collection(dataset, split=split)
            trec = read_trec_run(run)
            missing = [q for q in trec if q not in coll.queries]
            pairs = []
            for qid, ranked in trec.items():
                if qid not in coll.queries:
                    continue
                order = sorted(ranked.items(), key=lambda kv: (-kv[1], kv[0]))[: top_k or None]
                for did, score in order:
                    if did not in coll.corpus:
                        raise FinerankError(f"{run}: document '{did}' of query '{qid}' is not in the corpus of {dataset}")
                    pairs.append(Pair(qid, coll.queries[qid], did, coll.corpus[did].full_text,
                                      float(coll.qrels.get(qid, {}).get(did, 0)), score))
            if not pairs:
                raise FinerankError(f"{run}: no query of the run is judged in {dataset}",
                                    hint=f"run queries: {', '.join(missing[:5])}")
            cands = cls.from_pairs(pairs, f"{dataset} + {run}")
            cands.qrels = {q: coll.qrels[q] for q in cands.queries}
            return cands
        ds = load(dataset, format, split=split, max_label=None)
        if ds.collection is not None:
            raise FinerankError(f"{dataset} is a collection: evaluation needs candidate lists",
                                hint="make them with finerank data candidates (BM25), then pass --dataset PAIRS.jsonl "
                                     "or --dataset COLLECTION --candidates RUN.trec")
        return cls.from_pairs(ds.pairs, dataset)

    @classmethod
    def from_bm25(cls, pairs: list[Pair], collection: str, top_k: int, split: str | None = None) -> "Candidates":
        """BM25 top-k over a collection's corpus for the queries of ``pairs``; their labels are the judgments."""
        from .io import load_collection
        from .records import Collection
        from .retrieval import candidate_pairs, candidates

        base = cls.from_pairs(pairs)
        coll = Collection(load_collection(collection, split=split).corpus, base.queries, base.qrels)
        cands = cls.from_pairs(candidate_pairs(coll, candidates(coll, top_k=top_k)), f"BM25 top {top_k} of {collection}")
        cands.qrels = base.qrels
        return cands

    def with_judgments(self, collection: str, split: str | None = None) -> "Candidates":
        """Take every judgment of these queries from a collection, so that relevant documents the first stage
        missed still count in the ideal ranking (a candidates file only knows the documents it lists)."""
        from .io import load_collection

        coll = load_collection(collection, split=split)
        missing = [q for q in self.queries if q not in coll.qrels]
        if missing:
            raise FinerankError(f"{len(missing)} queries of {self.source} have no judgments in {collection}",
                                hint=f"for example: {', '.join(missing[:5])}")
        self.qrels = {q: dict(coll.qrels[q]) for q in self.queries}
        return self

    @property
    def n_pairs(self) -> int:
        return sum(len(v) for v in self.docs.values())

    def flat(self) -> list[tuple[str, str, str, str]]:
        return [(q, d, self.queries[q], t) for q, ds in self.docs.items() for d, t in ds]

    def has_negatives(self) -> bool:
        return any(self.qrels.get(q, {}).get(d, 0) <= 0 for q, ds in self.docs.items() for d, _ in ds)
