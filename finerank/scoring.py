"""The bi-encoder signal: cosine of a sentence-transformers embedding model's normalized query and document
embeddings, on one scale ([-1, 1]) for every baseline, hybrid, fusion and mining step that uses one.

The cross-encoder's scores come from :class:`finerank.rerank.Reranker` over a backend of :mod:`finerank.backends`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .candidates import Candidates
from .models import OFFLINE_BACKBONE, load_bi_encoder
from .records import Run


class BiEncoder:
    """Scores (query, document) pairs by the cosine of their embeddings. ``model``: a name or path (loaded on first
    use), or a loaded ``SentenceTransformer``. With ``cache_documents`` a document text is encoded once for the
    life of the object (a benchmark that scores the same corpus fold after fold)."""

    def __init__(self, model=OFFLINE_BACKBONE, *, batch_size: int = 64, device: str | None = None,
                 cache_documents: bool = False):
        self.name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        self._model = None if isinstance(model, (str, os.PathLike)) else model
        self.batch_size, self.device = batch_size, device
        self._cache: dict[str, np.ndarray] | None = {} if cache_documents else None

    @property
    def model(self):
        if self._model is None:
            self._model = load_bi_encoder(self.name, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Normalized float32 embeddings, one row a text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
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

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        """Every candidate list scored: query id -> doc id -> cosine."""
        flat = cands.flat()
        return cands.run_of(self.score([(qt, dt) for _, _, qt, dt in flat], progress=progress))
