"""``RayScorer``: any Scorer's offline scoring spread over a pool of Ray actors, one model an actor.

The candidate lists go into a Ray Data dataset, a row a list (whole lists only, so that a fusion's per-list z-scores
and a cascade's cut-offs are the same as in one process); ``map_batches`` sends batches of lists to a fixed pool of
``workers`` actors, each of which loads the scorer once (:func:`finerank.scorers.load.load_scorer` with the same
spec and options) and scores its batches. The run comes back in the input's order, so ``finerank rerank --ray``
writes the same files as ``finerank rerank`` (scores equal to float rounding: a forward pass pads a batch to its
longest pair, and the batches differ). The distillation teacher's scoring streams the lists back as they finish
(:meth:`RayScorer.iter_scored`), so its cache keeps every finished list when a run is killed.

Ray is an extra: ``pip install 'finerank[ray]'``. ``address`` None starts a local Ray (or joins the one
``RAY_ADDRESS`` names); on a cluster, every node needs finerank installed and the model at the same path (or a hub
id it can download).
"""

from __future__ import annotations

import json
import logging
from typing import Iterator

from ..core.errors import FinerankError, ModelError
from ..core.records import Run
from ..data.candidates import Candidates
from .cross_encoder import Reranker
from .load import is_bi_encoder, load_scorer, parts

log = logging.getLogger("finerank.scorers.on_ray")
INSTALL = "pip install 'finerank[ray]'"
LISTS_PER_BATCH = 8  # candidate lists an actor scores in one call


def import_ray():
    """The ``ray`` module (with Ray Data), or a FinerankError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise FinerankError(f"Ray is not installed ({e})", hint=f"{INSTALL} (it brings Ray Data)") from None
    return ray


def _encode(cands: Candidates, qids) -> list[dict]:
    """One row a list: its query id and the list as JSON (ids, texts, first-stage scores)."""
    return [{"qid": q, "payload": json.dumps([cands.queries[q], cands.docs[q], cands.first_stage.get(q, {})],
                                             ensure_ascii=False)} for q in qids]


class ScoreActor:
    """One model in one Ray actor: a batch of encoded lists in, their scores (JSON, a row a list) out."""

    def __init__(self, spec, options: dict):
        self.scorer = load_scorer(spec, **options)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        queries, docs, first = {}, {}, {}
        for q, payload in zip(batch["qid"], batch["payload"]):
            query, lst, fs = json.loads(payload)
            queries[str(q)], docs[str(q)] = query, [(str(d), t) for d, t in lst]
            if fs:
                first[str(q)] = {str(d): float(s) for d, s in fs.items()}
        run = self.scorer.score_candidates(Candidates(queries, docs, first, {}, "ray"))
        return {"qid": np.array(list(queries), dtype=object),
                "scores": np.array([json.dumps(run[q]) for q in queries], dtype=object)}


class RayScorer:
    """The Scorer ``spec`` names (:func:`load_scorer`, with ``options``), scored by ``workers`` Ray actors.

    It loads the scorer here too, once: its name, scale and parts are the local copy's, and a model that does not
    load fails here, with finerank's own error, before Ray starts."""

    def __init__(self, spec, *, workers: int = 2, address: str | None = None,
                 lists_per_batch: int = LISTS_PER_BATCH, **options):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise FinerankError(f"Ray workers must be a whole number of at least 1, got {workers!r}",
                                hint="--ray-workers N: N actors, one model each")
        if isinstance(lists_per_batch, bool) or not isinstance(lists_per_batch, int) or lists_per_batch < 1:
            raise FinerankError(f"lists_per_batch must be a whole number of at least 1, got {lists_per_batch!r}")
        if not isinstance(spec, (str, bytes)) and not hasattr(spec, "__fspath__"):
            raise FinerankError("RayScorer takes a scorer spec or a model path, not a loaded model",
                                hint="every actor loads its own copy from the spec")
        import_ray()  # before the model loads: a missing extra is told at once
        self.spec, self.options = str(spec), dict(options)
        self.workers, self.address, self.lists_per_batch = workers, address, lists_per_batch
        self.local = load_scorer(self.spec, **self.options)
        fresh = [str(p.model_dir) for _, p in parts(self.local)
                 if isinstance(p, Reranker) and p.model_dir is not None and is_bi_encoder(str(p.model_dir))]
        if fresh:  # every actor would draw its own random head: the lists would be scored by different models
            raise FinerankError(f"the cross-encoder {fresh[0]} is an embedding model's weights with a fresh, untrained "
                                "head: each Ray actor would draw another one",
                                hint="rerank with a trained cross-encoder (a finerank run, a saved CrossEncoder "
                                     "folder or a hub reranker)")
        self.name, self.scale = self.local.name, self.local.scale

    def describe(self) -> dict:
        return self.local.describe()  # the same scorer; where it ran is not part of what it is

    def cost(self, cands) -> int:
        return self.local.cost(cands)

    def _dataset(self, cands: Candidates, qids):
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except Exception as e:  # a wrong address, a cluster that is down
                raise FinerankError(f"Ray did not start (address {self.address or 'local'}): {e}",
                                    hint="check --ray-address (ray://HOST:10001 or auto), or leave it out for a "
                                         "local Ray") from None
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(_encode(cands, qids))
        return ds.map_batches(ScoreActor, fn_constructor_args=(self.spec, self.options), batch_format="numpy",
                              batch_size=self.lists_per_batch,
                              compute=ray.data.ActorPoolStrategy(size=self.workers))

    def iter_scored(self, cands: Candidates) -> Iterator[Run]:
        """The lists' scores as the actors finish them, a batch at a time (in no set order)."""
        if not cands.docs:
            return
        ds = self._dataset(cands, list(cands.docs))
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield {str(q): {str(d): float(s) for d, s in json.loads(sc).items()}
                       for q, sc in zip(batch["qid"], batch["scores"])}
        except FinerankError:
            raise
        except Exception as e:  # an actor failed: Ray wraps the cause
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, FinerankError):
                raise cause from None
            raise ModelError(f"scoring on Ray failed: {type(cause).__name__}: {str(cause)[-600:]}",
                             hint="the same command without --ray shows the error in one process") from None

    def score_candidates(self, cands: Candidates, *, progress: bool = False) -> Run:
        """Every list scored, in the input's order (the order of a one-process run)."""
        found: Run = {}
        for part in self.iter_scored(cands):
            found.update(part)
            if progress:
                log.info("Ray: %d of %d lists scored", len(found), len(cands.docs))
        missing = [q for q in cands.docs if q not in found]
        if missing:
            raise ModelError(f"scoring on Ray returned no scores for {len(missing)} lists (first: {missing[0]})")
        return {q: {d: found[q][d] for d, _ in cands.docs[q]} for q in cands.docs}
