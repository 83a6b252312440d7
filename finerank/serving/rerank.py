"""``finerank rerank``: candidate lists in a file, scored by any Scorer, written as reranked JSONL and a TREC run;
and the checks a request shares with ``finerank serve`` (the length cap, ``top_k``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..core.errors import DataError, FinerankError, ModelError
from ..core.metrics import aggregate
from ..core.records import Run
from ..data.candidates import Candidates
from ..io.files import DEFAULT_MAX_LABEL
from ..io.models import resolve_model
from ..io.outputs import check_outputs, write_jsonl, written_together
from ..io.runs import write_trec_run
from ..scorers.base import check_top_k
from ..scorers.cross_encoder import Reranker

MAX_CHARS = 100_000  # characters a query or document may hold in a file to rerank (the server's --max-chars too)


@dataclass
class RerankSummary:
    input: str
    output: str
    trec: str
    queries: int
    pairs: int
    seconds: float
    before: dict[str, float] | None = None   # metrics of the input order, when the input carries labels
    after: dict[str, float] | None = None    # metrics of the reranked order
    rows: int | None = None                  # rows written (all pairs, or the top_k of each list)


def rerank_outputs(model, input, output, *, trec=None, collection=None) -> tuple[Path, Path]:
    """The two files ``rerank_file`` writes (``trec`` defaults to ``output`` with the suffix ``.run``), checked
    before any work: neither is an input (the candidates, the collection, the model's files) nor the other, and both
    can be written (:func:`finerank.io.outputs.check_outputs`)."""
    output = Path(output)
    trec = Path(trec) if trec else output.with_suffix(".run")
    model_dir = None
    if isinstance(model, (str, Path)) and Path(str(model)).expanduser().exists():
        model_dir = resolve_model(str(model))
    check_outputs([output, trec], [input, collection if isinstance(collection, (str, Path)) else None, model_dir])
    return output, trec


def too_long(cands: Candidates, max_chars: int | None) -> tuple[str, str, str | None, int] | None:
    """The first query or document over ``max_chars`` characters: ("query" | "document", query id, doc id,
    length); None when all fit (or there is no cap)."""
    if max_chars is None:
        return None
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise FinerankError(f"max_chars must be a whole number of at least 1, got {max_chars!r}")
    for qid, docs in cands.docs.items():
        if len(cands.queries[qid]) > max_chars:
            return "query", qid, None, len(cands.queries[qid])
        for did, text in docs:
            if len(text) > max_chars:
                return "document", qid, did, len(text)
    return None


def check_lengths(cands: Candidates, max_chars: int | None, source) -> None:
    """Refuse a query or document over ``max_chars`` characters before scoring, naming it and the cap: a 50 MB
    document would take minutes and gigabytes in windows. None: no cap."""
    found = too_long(cands, max_chars)
    if found is None:
        return
    what, qid, did, n = found
    if what == "query":
        raise DataError(source, None, "query", cands.queries[qid][:60],
                        f"a query of at most {max_chars} characters (--max-chars), query_id {qid} has {n}",
                        hint="shorten the query, or raise --max-chars")
    raise DataError(source, None, "document", dict(cands.docs[qid])[did][:60],
                    f"a document of at most {max_chars} characters (--max-chars); doc_id {did} of query_id {qid} "
                    f"has {n}", hint="split the document into passages, or raise --max-chars (memory and time "
                                     "grow with the length: every window of it is scored)")


def check_finite(run: Run, model) -> None:
    """Refuse a run holding a score that is not a finite number (a model with damaged weights): a ModelError
    naming the first such query and document, never a NaN written as a result."""
    for qid, scores in run.items():
        for did, score in scores.items():
            if not math.isfinite(score):
                raise ModelError(f"model '{model}' scored doc_id {did} of query_id {qid} {score}, expected a finite "
                                 "number; nothing was written",
                                 hint="the weights are damaged (NaN or infinite values): train, save or download "
                                      "the model again")


def _rows(cands: Candidates, run: Run) -> Iterator[dict]:
    """The reranked rows of every list, best first."""
    for qid, lst in cands.docs.items():
        texts = dict(lst)
        first = cands.first_stage.get(qid, {})
        ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (did, score) in enumerate(ranked, start=1):
            row = {"query_id": qid, "query": cands.queries[qid], "doc_id": did, "document": texts[did],
                   "rank": rank, "score": score}
            if did in first:
                row["first_stage_score"] = first[did]
            if qid in cands.qrels:
                row["label"] = cands.qrels[qid].get(did, 0)
            yield row


def rerank_file(model, input, output, *, trec=None, collection=None, top_k: int | None = None,
                reranker=None, progress: bool = True, metrics=("nDCG@10",),
                max_label: float = DEFAULT_MAX_LABEL, max_chars: int | None = MAX_CHARS,
                **reranker_options) -> RerankSummary:
    """Rerank the candidate lists in ``input`` (see :meth:`Candidates.from_file`); write reranked rows (JSONL, best
    first) to ``output`` and a TREC run to ``trec`` (default: ``output`` with the suffix ``.run``). With labels in
    the input, ``metrics`` of the input order and of the reranked order are reported. ``reranker``: any Scorer
    (``finerank rerank`` passes :func:`finerank.scorers.load.load_scorer`'s); default: ``Reranker(model)``.

    Every candidate is written (a repeated doc_id within a list is refused, see :meth:`Candidates.from_file`), or
    the best ``top_k`` (>= 1) of each list; the summary's ``rows`` is what was written. A query or document over
    ``max_chars`` characters (None: no cap) is refused before scoring, naming it and the cap. The outputs are checked
    before any work (never an input, never a folder or device) and land together."""
    output, trec = rerank_outputs(model, input, output, trec=trec, collection=collection)  # before any work
    check_top_k(top_k)
    cands = Candidates.from_file(input, collection=collection, max_label=max_label,  # labels in 0..max_label
                                 max_chars=None)  # the cap is max_chars, checked below with rerank's own message
    check_lengths(cands, max_chars, input)
    scorer = reranker or Reranker(model, **reranker_options)
    t0 = time.perf_counter()
    run = scorer.score_candidates(cands, progress=progress)
    seconds = time.perf_counter() - t0
    check_finite(run, model)
    if top_k is not None:
        run = {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]) for q, d in run.items()}
    with written_together():  # both files or neither
        written = write_jsonl(output, _rows(cands, run))
        write_trec_run(trec, run)
    summary = RerankSummary(str(input), str(output), str(trec), len(cands.docs), cands.n_pairs, seconds, rows=written)
    if cands.qrels:
        summary.before = aggregate(cands.qrels, cands.first_stage_run(), list(metrics))
        summary.after = aggregate(cands.qrels, run, list(metrics))
    return summary
