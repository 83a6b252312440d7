"""First-stage retrieval with BM25: an index over a corpus, each query's candidate list, and its metrics.

BM25 is bm25s (Lucene variant, k1=1.5, b=0.75) over each document's title and text, tokenized with bm25s's
English stop words and the PyStemmer English (Snowball) stemmer. A document that shares no term with the query
scores 0 and is not returned, so a candidate list may be shorter than ``top_k``. Mining and candidate files:
:mod:`finerank.retrieval.mine`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..core.errors import FinerankError
from ..core.metrics import aggregate, parse_metric
from ..core.records import Collection, Dataset, Document, Run
from ..io.collection import load_collection

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")


def _stemmer():
    try:
        import Stemmer
    except ImportError:
        raise FinerankError("BM25 needs PyStemmer", hint="pip install PyStemmer") from None
    return Stemmer.Stemmer("english")


class BM25Index:
    """A BM25 index over a corpus, built once; :meth:`search` reuses it for any number of queries."""

    def __init__(self, corpus: dict[str, Document], *, k1: float = 1.5, b: float = 0.75,
                 show_progress: bool = False):
        import bm25s
        import numpy as np

        if not corpus:
            raise FinerankError("cannot build a BM25 index over an empty corpus")
        self.corpus = corpus
        self.doc_ids = list(corpus)
        self._stem = _stemmer()
        verbose = show_progress and len(corpus) > 50_000  # bm25s's own bars, only where indexing takes a while
        tokens = self._tokenize([corpus[d].full_text for d in self.doc_ids], verbose)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(tokens, show_progress=verbose)
        self._empty_token = self._bm25.vocab_dict.get("")
        # for tie-breaking by doc id (ascending), as write_trec_run does
        self._id_rank = np.argsort(np.argsort(np.array(self.doc_ids, dtype=object)))

    def __len__(self) -> int:
        return len(self.doc_ids)

    def _tokenize(self, texts: list[str], show_progress: bool = False) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stem, return_ids=False,
                              show_progress=show_progress)

    def scores(self, query: str):
        """BM25 score of every document (numpy array aligned with ``doc_ids``) for one query."""
        import numpy as np

        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in self._tokenize([query])[0] if t in vocab and t != ""]
        if not ids:
            return np.zeros(len(self.doc_ids), dtype="float32")
        return self._bm25.get_scores_from_ids(ids)

    def search(self, queries: dict[str, str], top_k: int = 100, *, show_progress: bool = False) -> Run:
        """The ``top_k`` best documents of each query, best first (ties by doc id); zero-score docs left out."""
        import numpy as np
        from tqdm.auto import tqdm

        if top_k < 1:
            raise FinerankError(f"top_k must be at least 1, got {top_k}")
        run: Run = {}
        for qid, text in tqdm(queries.items(), desc="BM25", disable=not show_progress, unit="q"):
            s = self.scores(text)
            hits = np.flatnonzero(s > 0)
            if len(hits) > top_k:
                # keep every doc tied with the k-th score, then cut after the deterministic sort
                kth = np.partition(s[hits], len(hits) - top_k)[len(hits) - top_k]
                hits = hits[s[hits] >= kth]
            order = hits[np.lexsort((self._id_rank[hits], -s[hits]))][:top_k]
            run[qid] = {self.doc_ids[i]: float(s[i]) for i in order}
        return run


_LAST_INDEX: BM25Index | None = None


def index_for(corpus: dict[str, Document], *, show_progress: bool = False) -> BM25Index:
    """A BM25 index for ``corpus``, reusing the last one built when it was built over this very dict."""
    global _LAST_INDEX
    if _LAST_INDEX is not None and _LAST_INDEX.corpus is corpus and len(_LAST_INDEX) == len(corpus):
        return _LAST_INDEX
    _LAST_INDEX = BM25Index(corpus, show_progress=show_progress)
    return _LAST_INDEX


# ----------------------------------------------------------------------------------------------- inputs
def as_collection(source, *, split: str | None = None) -> Collection:
    """A Collection from a Collection, a Dataset loaded from a collection, or a path (BEIR folder, 'cranfield')."""
    if isinstance(source, Collection):
        return source
    if isinstance(source, Dataset):
        if source.collection is None:
            raise FinerankError(f"{source.source}: a pairs file has no corpus to retrieve from",
                                hint="give a BEIR folder (corpus.jsonl, queries.jsonl, qrels) or 'cranfield'")
        return source.collection

    return load_collection(source, split=split)


def select_queries(coll: Collection, query_ids: Iterable[str] | None) -> dict[str, str]:
    if query_ids is None:
        return dict(coll.queries)
    ids = list(dict.fromkeys(query_ids))
    unknown = [q for q in ids if q not in coll.queries]
    if unknown:
        raise FinerankError(f"{len(unknown)} query ids are not in {coll.name or 'the collection'} "
                            f"(first: {', '.join(unknown[:5])})")
    return {q: coll.queries[q] for q in ids}


# ------------------------------------------------------------------------------------------- candidates
def candidates(collection, *, top_k: int = 100, query_ids: Iterable[str] | None = None,
               index: BM25Index | None = None, show_progress: bool = False) -> Run:
    """BM25's top ``top_k`` documents for the collection's queries (or ``query_ids``): the lists a reranker reranks."""
    coll = as_collection(collection)
    queries = select_queries(coll, query_ids)
    index = index or index_for(coll.corpus, show_progress=show_progress)
    return index.search(queries, top_k, show_progress=show_progress)


def rescore_lists(queries: dict[str, str], docs: dict[str, list[tuple[str, str]]]) -> Run:
    """BM25 scores of each list's documents for the list's query, with an index over all the lists' documents (the
    statistics of that pool, not of a whole corpus): a first stage for lists whose query text changed."""
    pool = {d: Document(d, t) for lst in docs.values() for d, t in lst}
    index = BM25Index(pool)
    pos = {d: i for i, d in enumerate(index.doc_ids)}
    run: Run = {}
    for q, lst in docs.items():
        s = index.scores(queries[q])
        run[q] = {d: float(s[pos[d]]) for d, _ in lst}
    return run


def run_metrics(run: Run, qrels: dict[str, dict[str, int]], measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each ir-measures measure over the queries of ``qrels`` (one missing from the run counts 0): pass
    the qrels of just the queries that were searched. The same scoring as evaluation (finerank.core.metrics)."""
    if not qrels:
        return {m: 0.0 for m in measures}
    values = aggregate(qrels, run, measures)
    return {m: values[str(parse_metric(m))] for m in measures}
