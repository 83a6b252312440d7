"""The bi-encoder signal: cosine of a sentence-transformers embedding model's normalized query and document
embeddings, on one scale ([-1, 1]) for every baseline, hybrid, fusion and mining step that uses one.

Dense retrieval (:meth:`BiEncoder.search`) is exact: every document's embedding held in memory as one float32
matrix and every query scored against all of them with numpy. Memory is N x dim x 4 bytes (384 dimensions for
minilm-l6: 300,000 documents take about 460 MB, 3 million about 4.6 GB), and each query costs N x dim
multiply-adds: fine up to a few hundred thousand documents; beyond that use an approximate index (faiss, hnswlib).

:class:`BiEncoder` is a Scorer (:mod:`finerank.scorers.base`): name, scale ``cosine``, :meth:`~BiEncoder.describe`,
:meth:`~BiEncoder.cost`, :meth:`~BiEncoder.score_candidates`.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from ..io.models import OFFLINE_BACKBONE, load_bi_encoder, model_ref
from ..core.records import Document, Run

class BiEncoder:
    """Scores (query, document) pairs by the cosine of their embeddings. ``model``: a name or path (loaded on first
    use), or a loaded ``SentenceTransformer``. With ``cache_documents`` a document text is encoded once for the
    life of the object (a benchmark that scores the same corpus fold after fold, or an evaluation whose bi-encoder
    and hybrid share it)."""

    scale = "cosine"

    def __init__(self, model=OFFLINE_BACKBONE, *, batch_size: int = 64, device: str | None = None,
                 cache_documents: bool = False):
        self.name = model_ref(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        self._model = None if isinstance(model, (str, os.PathLike)) else model
        self.batch_size, self.device = batch_size, device
        self._cache: dict[str, np.ndarray] | None = {} if cache_documents else None
        self._corpus: tuple[int, int, list[str], np.ndarray] | None = None  # (id, size, doc ids, matrix) of the last
        self._lock = threading.RLock()  # a served model's requests encode from many threads; a tokenizer takes one

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = load_bi_encoder(self.name, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Normalized float32 embeddings, one row a text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress)
        return np.asarray(vecs, dtype=np.float32)

    def _documents(self, texts: list[str], progress: bool) -> dict[str, np.ndarray]:
        cache = self._cache if self._cache is not None else {}
        need = [t for t in dict.fromkeys(texts) if t not in cache]
        if need:
            cache.update(zip(need, self.encode(need, progress=progress)))
        return cache

    def score(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """One cosine a pair; each distinct query and document text is encoded once."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        qv = dict(zip(queries, self.encode(queries)))
        dv = self._documents([d for _, d in pairs], progress)
        return np.fromiter((float(qv[q] @ dv[d]) for q, d in pairs), dtype=np.float32, count=len(pairs))

    def describe(self) -> dict:
        return {"kind": "bi-encoder", "model": self.name, "scale": self.scale}

    def cost(self, cands) -> int:
        """Model inputs: one a candidate document (the queries, one a list, are short and few)."""
        return cands.n_pairs

    def score_candidates(self, cands, *, progress: bool = False) -> Run:
        """Every candidate list (a :class:`finerank.data.candidates.Candidates`, which sits above this layer)
        scored: query id -> doc id -> cosine."""
        flat = cands.flat()
        return cands.run_of(self.score([(qt, dt) for _, _, qt, dt in flat], progress=progress))

    def corpus_matrix(self, corpus: dict[str, Document], *, progress: bool = False) -> tuple[list[str], np.ndarray]:
        """(doc ids, their normalized embeddings as an N x dim float32 matrix) of a whole corpus; the last corpus is
        kept, so that searching it again encodes nothing."""
        key = (id(corpus), len(corpus))
        if self._corpus is None or self._corpus[:2] != key:
            ids = list(corpus)
            texts = [corpus[d].full_text for d in ids]
            if self._cache is not None:  # with cache_documents the corpus and the candidate lists share encodings
                vecs = self._documents(texts, progress)
                matrix = np.stack([vecs[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)
            else:
                matrix = self.encode(texts, progress=progress)
            self._corpus = (*key, ids, matrix)
        return self._corpus[2], self._corpus[3]

    def search(self, queries: dict[str, str], corpus: dict[str, Document], top_k: int = 100, *,
               progress: bool = False) -> Run:
        """Dense retrieval, exact: each query's ``top_k`` documents of ``corpus`` by cosine, best first (ties by doc
        id). See the module's docstring for where exact search stops being practical."""
        ids, matrix = self.corpus_matrix(corpus, progress=progress)
        qids = list(queries)
        run: Run = {}
        if not qids or not ids:
            return {q: {} for q in qids}
        k = min(top_k, len(ids))
        order_ids = np.argsort(np.argsort(np.array(ids, dtype=object)))  # rank of each doc id, for ties
        qv = self.encode([queries[q] for q in qids])
        for start in range(0, len(qids), 64):  # 64 queries x N scores at a time
            block = qv[start:start + 64] @ matrix.T
            for qid, s in zip(qids[start:start + 64], block):
                top = np.argpartition(-s, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
                top = top[np.lexsort((order_ids[top], -s[top]))]
                run[qid] = {ids[i]: float(s[i]) for i in top}
        return run
