"""A teacher's scores of the distillation lists, computed once and kept beside the run.

``OUT/teacher-scores.jsonl``: a first line naming the teacher and a digest of the lists, then one line a list
(``{"query_id", "scores": {doc_id: score}}``), appended chunk by chunk and flushed, so that a killed run keeps every
chunk it finished and ``--resume`` scores only the rest. A cache made by another teacher or for other lists is
refused (the run must start afresh: ``--overwrite``); a line torn by the kill is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core.errors import FinerankError
from ..core.records import Run
from ..data.candidates import Candidates

CACHE = "teacher-scores.jsonl"
CHUNK = 128  # lists scored between two flushes


def lists_digest(cands: Candidates) -> str:
    """sha256 of the lists' queries and documents (ids and texts), in order."""
    h = hashlib.sha256()
    for q, docs in cands.docs.items():
        h.update(json.dumps([q, cands.queries[q], docs], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def teacher_scores(teacher, cands: Candidates, path, *, chunk: int | None = None, progress=None) -> tuple[Run, int]:
    """(the teacher's run over every list, how many lists came from the cache). ``teacher``: any Scorer;
    ``chunk``: lists scored between two flushes (default :data:`CHUNK`); ``progress(done, total)`` is called after
    each chunk."""
    chunk = chunk or CHUNK
    path = Path(path)
    head = {"teacher": teacher.name, "scale": teacher.scale, "parts": teacher.describe(), "lists": len(cands.docs),
            "digest": lists_digest(cands)}
    done = _read(path, head)
    cached = len(done)
    todo = [q for q in cands.docs if q not in done]
    with open(path, "a", encoding="utf-8") as f:
        if not cached and f.tell() == 0:
            f.write(json.dumps(head, ensure_ascii=False) + "\n")
        for run in _parts(teacher, cands, todo, chunk):
            for q in run:
                done[q] = {d: float(run[q][d]) for d, _ in cands.docs[q]}
                f.write(json.dumps({"query_id": q, "scores": done[q]}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if progress:
                progress(len(done), len(cands.docs))
    return {q: done[q] for q in cands.docs}, cached


def _parts(teacher, cands: Candidates, todo: list[str], chunk: int):
    """The teacher's runs of the ``todo`` lists, a part at a time: a Scorer that streams (a
    :class:`finerank.scorers.on_ray.RayScorer`) gives each batch as its actors finish it; any other scores
    ``chunk`` lists a call."""
    if not todo:
        return
    if hasattr(teacher, "iter_scored"):
        yield from teacher.iter_scored(cands.subset(todo))
        return
    for start in range(0, len(todo), chunk):
        yield teacher.score_candidates(cands.subset(todo[start: start + chunk]))


def _read(path: Path, head: dict) -> Run:
    """The complete rows of an existing cache made for ``head``'s teacher and lists; {} (and the file removed) when
    it is absent or holds no complete row."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1  # what follows the last newline was torn by a kill (or is empty)
    if end < len(raw):
        os.truncate(path, end)  # the next append starts on a line of its own
    complete = raw[:end].decode("utf-8").splitlines()
    try:
        first = json.loads(complete[0]) if complete else None
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or "digest" not in first:
        path.unlink()
        return {}
    if (first.get("teacher"), first.get("digest")) != (head["teacher"], head["digest"]):
        raise FinerankError(f"{path}: the cached teacher scores are {first.get('teacher')}'s for other lists or by "
                            f"another teacher than {head['teacher']}",
                            hint="start the run afresh with --overwrite (or give another --out)")
    run: Run = {}
    for line in complete[1:]:
        row = json.loads(line)
        run[str(row["query_id"])] = {str(d): float(s) for d, s in row["scores"].items()}
    return run
