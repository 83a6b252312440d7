"""A LangChain document compressor over a local finerank model (its saved fusion and cascade apply), in-process:
no server.

    from finerank.integrations.langchain import FinerankRerank
    from langchain_classic.retrievers import ContextualCompressionRetriever

    retriever = ContextualCompressionRetriever(base_compressor=FinerankRerank(model="runs/domain", top_n=3),
                                               base_retriever=base)

Each document kept gets ``metadata["relevance_score"]`` (P(relevant), see :mod:`finerank.scorers.calibration`) and
``metadata["score"]`` (the raw score), best first, as LangChain's ``CohereRerank`` gives them. LangChain is imported
when the class is first used (``pip install langchain-core``).
"""

from __future__ import annotations

from ..core.errors import FinerankError
from ..scorers.base import check_top_k, rank
from ..scorers.calibration import probability
from ..scorers.load import calibration_of, load_scorer

_CLASS = None


def compress(scorer, documents, query: str, top_n: int | None):
    """The best ``top_n`` of ``documents`` (LangChain Documents) for ``query``, each a copy with its scores."""
    documents = list(documents)
    if not documents:
        return []
    ranked = rank(scorer, query, [d.page_content for d in documents], top_n)
    probs = probability([r.score for r in ranked], calibration_of(scorer), scorer.scale)
    out = []
    for r, p in zip(ranked, probs):
        doc = documents[r.index].model_copy(deep=True)
        doc.metadata["relevance_score"], doc.metadata["score"] = float(p), r.score
        out.append(doc)
    return out


def _build():
    try:
        from langchain_core.documents import BaseDocumentCompressor
        from pydantic import ConfigDict, PrivateAttr
    except ImportError:
        raise FinerankError("the LangChain integration needs langchain-core", hint="pip install langchain-core") \
            from None

    class FinerankRerank(BaseDocumentCompressor):
        """Rerank documents with a finerank model (``model``: a run or model folder, a hub id, or any spec
        ``load_scorer`` takes), keeping the best ``top_n`` (None: all)."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        model: str
        top_n: int | None = 3
        options: dict = {}
        _scorer: object = PrivateAttr(default=None)

        def model_post_init(self, context) -> None:
            check_top_k(self.top_n, "top_n")
            self._scorer = load_scorer(self.model, **self.options)

        def compress_documents(self, documents, query, callbacks=None):
            return compress(self._scorer, documents, query, self.top_n)

    return FinerankRerank


def __getattr__(name: str):
    global _CLASS
    if name == "FinerankRerank":
        if _CLASS is None:
            _CLASS = _build()
        return _CLASS
    raise AttributeError(name)
