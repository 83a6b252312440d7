"""In-process integrations (issue 24): a PyTerrier transformer and a LangChain document compressor over a local
model folder give the same order as ``finerank rerank``'s scorer, with ``relevance_score`` in [0, 1]. Each test is
skipped, naming the package, where it is not installed (``pip install pyterrier langchain-core``)."""

from __future__ import annotations

import pytest

from finerank.scorers.base import rank
from finerank.scorers.load import load_scorer

from test_clients import DOCS, QUERY
from test_rerank import keyword_model  # noqa: F401 - the fixture


def test_pyterrier_transformer_reranks_a_results_frame(keyword_model):
    pt = pytest.importorskip("pyterrier", reason="pyterrier is not installed (pip install pyterrier)")
    import pandas as pd

    from finerank.integrations.pyterrier import FinerankReranker

    frame = pd.DataFrame({"qid": ["1"] * len(DOCS) + ["2"] * 2, "query": [QUERY] * len(DOCS) + ["tiger"] * 2,
                          "docno": [f"d{i}" for i in range(len(DOCS))] + ["a", "b"],
                          "text": DOCS + ["the of a", "tiger the of"], "score": [1.0] * (len(DOCS) + 2)})
    stage = FinerankReranker(keyword_model)
    assert isinstance(stage, pt.Transformer)
    out = stage(frame)
    want = [f"d{r.index}" for r in rank(load_scorer(keyword_model), QUERY, DOCS)]
    first = out[out.qid == "1"]
    assert list(first.docno) == want and list(first["rank"]) == list(range(len(DOCS)))
    assert list(out[out.qid == "2"].docno) == ["b", "a"]
    assert out.relevance_score.between(0, 1).all()
    with pytest.raises(Exception, match="column 'text'"):
        stage(frame.drop(columns=["text"]))


def test_langchain_compressor_over_a_local_model(keyword_model):
    pytest.importorskip("langchain_core", reason="langchain-core is not installed (pip install langchain-core)")
    from langchain_core.documents import BaseDocumentCompressor, Document

    from finerank.integrations.langchain import FinerankRerank

    compressor = FinerankRerank(model=keyword_model, top_n=3)
    assert isinstance(compressor, BaseDocumentCompressor)
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(DOCS)]
    got = compressor.compress_documents(docs, QUERY)
    assert [d.metadata["i"] for d in got] == [r.index for r in rank(load_scorer(keyword_model), QUERY, DOCS, 3)]
    assert all(0 <= d.metadata["relevance_score"] <= 1 for d in got) and "relevance_score" not in docs[0].metadata
    retrievers = pytest.importorskip("langchain_classic.retrievers.contextual_compression",
                                     reason="langchain-classic is not installed")
    from langchain_core.retrievers import BaseRetriever

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return docs

    retriever = retrievers.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())
    assert [d.metadata["i"] for d in retriever.invoke(QUERY)] == [d.metadata["i"] for d in got]
