"""TREC run files: ``qid Q0 docid rank score tag`` a line, best first."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import DataError
from ..core.records import Run
from .files import finite_score, lines
from .outputs import atomic_write


def write_trec_run(path, run: Run, tag: str = "finerank") -> None:
    """A TREC run file: ``qid Q0 docid rank score tag``, best first; ties broken by doc id."""
    with atomic_write(path) as f:
        for qid in run:
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def read_trec_run(path) -> Run:
    path = Path(path)
    run: Run = {}
    for n, text in lines(path):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(path, n, None, text.strip(), "a TREC run line 'qid Q0 docid rank score tag'")
        score = finite_score(parts[4], path, n, what=None)
        docs = run.setdefault(parts[0], {})
        if parts[2] in docs:  # a dict keeps one score a document: a repeat would silently drop a row
            raise DataError(path, n, "docid", parts[2], f"each docid once per query (query {parts[0]} lists it "
                            "twice)", hint="remove the repeated line, or give the documents distinct ids")
        docs[parts[2]] = score
    return run

