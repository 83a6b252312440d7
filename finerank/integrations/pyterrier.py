"""A PyTerrier transformer that reranks a results frame with any finerank Scorer (a model folder with its saved
fusion and cascade, a hub id, ``bm25``, ``hybrid``, ...: :func:`finerank.scorers.load.load_scorer`).

    import pyterrier as pt
    from finerank.integrations.pyterrier import FinerankReranker

    pipeline = bm25 >> pt.text.get_text(dataset, "text") >> FinerankReranker("runs/domain")

The input frame has ``qid``, ``query``, ``docno`` and the text column (``text_field``, default ``text``); a ``score``
column is taken as the first stage's (what a saved fusion or cascade reads). The output is the frame with ``score``
(the scorer's score), ``relevance_score`` (P(relevant), see :mod:`finerank.scorers.calibration`) and ``rank``.
PyTerrier is imported when the class is first used (``pip install pyterrier``; no Java is needed for this).
"""

from __future__ import annotations

from ..core.errors import FinerankError
from ..data.candidates import Candidates
from ..scorers.calibration import probability
from ..scorers.load import calibration_of, load_scorer

_CLASS = None


def rerank_frame(scorer, frame, text_field: str = "text"):
    """``frame`` (qid, query, docno, text_field[, score]) reranked by ``scorer``: a copy with ``score``,
    ``relevance_score`` and ``rank`` (0 the best of each query, as PyTerrier's ``add_ranks`` numbers them)."""
    missing = [c for c in ("qid", "query", "docno", text_field) if c not in frame.columns]
    if missing:
        raise FinerankError(f"the results frame has no column {missing[0]!r} (it has {list(frame.columns)})",
                            hint="fetch the texts first, e.g. pt.text.get_text(dataset, 'text')")
    queries, docs, first = {}, {}, {}
    has_score = "score" in frame.columns
    for row in frame.itertuples(index=False):
        qid, did = str(row.qid), str(row.docno)
        queries.setdefault(qid, str(row.query))
        lst = docs.setdefault(qid, [])
        if any(d == did for d, _ in lst):
            raise FinerankError(f"docno {did!r} appears twice for qid {qid!r} in the results frame")
        lst.append((did, str(getattr(row, text_field))))
        if has_score:
            first.setdefault(qid, {})[did] = float(row.score)
    out = frame.copy()
    if not docs:
        out["score"], out["relevance_score"], out["rank"] = [], [], []
        return out
    run = scorer.score_candidates(Candidates(queries, docs, first, {}, "pyterrier"))
    out["score"] = [run[str(q)][str(d)] for q, d in zip(frame["qid"], frame["docno"])]
    out["relevance_score"] = probability(out["score"].to_numpy(), calibration_of(scorer), scorer.scale)
    out = out.sort_values(["qid", "score"], ascending=[True, False], kind="stable")
    out["rank"] = out.groupby("qid", sort=False).cumcount()
    return out.reset_index(drop=True)


def _build():
    try:
        import pyterrier as pt
    except ImportError:
        raise FinerankError("the PyTerrier integration needs pyterrier", hint="pip install pyterrier") from None

    class FinerankReranker(pt.Transformer):
        """Rerank a PyTerrier results frame with a finerank scorer (``model``: what ``load_scorer`` takes, or a
        Scorer; ``options``: its options, e.g. ``cascade=False``, ``batch_size``)."""

        def __init__(self, model, *, text_field: str = "text", **options):
            self.scorer = load_scorer(model, **options)
            self.text_field = text_field

        def transform(self, inp):
            return rerank_frame(self.scorer, inp, self.text_field)

        def __repr__(self):
            return f"FinerankReranker({self.scorer.name!r})"

    return FinerankReranker


def __getattr__(name: str):
    global _CLASS
    if name == "FinerankReranker":
        if _CLASS is None:
            _CLASS = _build()
        return _CLASS
    raise AttributeError(name)
