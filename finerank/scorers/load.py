"""``load_scorer``: any Scorer from a spec string or a model folder, reading the model's ``finerank.json`` once.

Specs: ``bm25`` (the candidates' first-stage scores), ``hybrid``, ``hybrid:W``, ``hybrid:W@MODEL``, ``hybrid@MODEL``
(W x z-scored BM25 + (1-W) x z-scored cosine; W defaults to ``HYBRID_WEIGHT``, MODEL to ``bi_encoder``),
``bi:NAME`` / ``dense:NAME`` (a sentence-transformers embedding model), ``cross:NAME`` (a cross-encoder with its saved
fusion and cascade), ``raw:NAME`` (a cross-encoder alone, its saved fusion and cascade left out), or a plain NAME:
dense when the folder is a sentence-transformers embedding model (``minilm-l6`` is one), else a cross-encoder with its
saved fusion and cascade (``fuse=False`` / ``cascade=False`` turn those off). A Scorer is returned as it is.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..core.errors import FinerankError, ModelError
from ..io.models import model_ref, resolve_model
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import HYBRID_WEIGHT
from .base import Scorer, one_list
from .calibration import Calibration
from .cascade import Cascade, CascadeSpec
from .cross_encoder import Reranker
from .first_stage import BM25Scorer, HybridScorer
from .fused import FusedScorer, FusionSpec
from .spec import read_model_spec

log = logging.getLogger("finerank.scorers.load")
SPECS = "bm25, hybrid[:W][@MODEL], bi:NAME, dense:NAME, cross:NAME, raw:NAME or a model NAME"


def is_bi_encoder(path: str) -> bool:
    """Whether ``path`` is a sentence-transformers embedding model's folder (its modules pool token embeddings)."""
    modules = Path(path) / "modules.json"
    return Path(path).is_dir() and modules.exists() and "Pooling" in modules.read_text(encoding="utf-8")


def parse_hybrid(spec: str, default_bi: str) -> tuple[float, str]:
    """(BM25's weight, the bi-encoder) of ``hybrid[:W][@MODEL]``."""
    w, at, bi = spec[len("hybrid"):].removeprefix(":").partition("@")
    try:
        weight = float(w) if w else HYBRID_WEIGHT
    except ValueError:
        raise FinerankError(f"scorer '{spec}': the hybrid's weight must be a number",
                            hint=f"hybrid, hybrid:{HYBRID_WEIGHT} or hybrid:{HYBRID_WEIGHT}@MODEL") from None
    return weight, (bi if at and bi else default_bi)


class _Loader:
    """The options of one :func:`load_scorer` call; ``encoders`` shares one BiEncoder a model between scorers."""

    def __init__(self, encoders: dict | None, batch_size: int, device: str | None, reranker_options: dict):
        self.shared = encoders is not None
        self.encoders = encoders if encoders is not None else {}
        self.batch_size, self.device, self.options = batch_size, device, reranker_options

    def encoder(self, name: str) -> BiEncoder:
        key = model_ref(name)
        if key not in self.encoders:  # documents cached only where the caller shares encoders (an evaluation)
            self.encoders[key] = BiEncoder(name, batch_size=self.batch_size, device=self.device,
                                           cache_documents=self.shared)
        return self.encoders[key]

    def reranker(self, model) -> Reranker:
        return Reranker(model, batch_size=self.batch_size, device=self.device, fuse=False, **self.options)

    def cross_encoder(self, model, fuse: bool, cascade: bool) -> Scorer:
        """The cross-encoder with the fusion and the cascade saved with it (``finerank.json`` read once)."""
        given = isinstance(model, Reranker)  # a Reranker built by the caller keeps its own fusion (or none)
        rr = model if given else self.reranker(model)
        saved = read_model_spec(rr.model_dir)
        scorer: Scorer = rr
        fusion = FusionSpec.from_dict(saved.fusion, saved.path) if fuse and not given else None
        if fusion is not None:
            scorer = FusedScorer(rr, fusion, self.encoder(fusion.bi_encoder or "minilm-l6"))
        spec = CascadeSpec.from_dict(saved.cascade, saved.path) if cascade else None
        if spec is not None and not spec.full:
            scorer = Cascade(spec, scorer, spec.cheap_scorer(None if spec.cheap == "bm25"
                                                             else self.encoder(spec.bi_encoder)))
        calibration = Calibration.from_dict(saved.calibration, saved.path)
        if calibration is not None and (calibration.scorer, calibration.scale) == (scorer.describe()["kind"],
                                                                                   scorer.scale):
            scorer.calibration = calibration  # fitted on this very score (not on the model without its fusion)
        elif calibration is not None:
            log.warning("%s: the calibration was fitted on the %s score (%s), not on the %s score served now: "
                        "relevance_score falls back to the logistic of the raw score (finerank calibrate again)",
                        saved.path, calibration.scorer, calibration.scale, scorer.describe()["kind"])
        return scorer


def calibration_of(scorer) -> Calibration | None:
    """The calibration saved with ``scorer``'s model and fitted on the score it gives (None: none such)."""
    return getattr(scorer, "calibration", None)


def load_scorer(spec, *, cascade: bool = True, fuse: bool = True, max_length: int | None = None,
                batch_size: int = 32, device: str | None = None, bi_encoder: str = "minilm-l6",
                encoders: dict | None = None, **reranker_options) -> Scorer:
    """The Scorer ``spec`` names (see the module's docstring). ``max_length``, ``long_docs``, ``window``,
    ``stride``: a cross-encoder's (:class:`Reranker`); ``batch_size`` and ``device``: every model's;
    ``bi_encoder``: the embedding model of a hybrid that names none; ``encoders``: a dict the caller keeps to share
    one BiEncoder a model (documents encoded once) between the scorers it loads. A :class:`Reranker` given as
    ``spec`` keeps its own fusion (or none) and gains its saved cascade; a Cascade with ``cascade=False`` gives its
    expensive scorer; any other Scorer is returned as it is."""
    load = _Loader(encoders, batch_size, device, {"max_length": max_length, **reranker_options})
    if isinstance(spec, Reranker):
        return load.cross_encoder(spec, fuse, cascade)
    if isinstance(spec, Cascade):
        return spec if cascade else spec.expensive
    if isinstance(spec, Scorer):
        return spec
    if not isinstance(spec, (str, os.PathLike)):  # a loaded CrossEncoder
        return load.cross_encoder(load.reranker(spec), fuse, cascade)
    text = str(spec)
    if text == "bm25":
        return BM25Scorer()
    if text == "hybrid" or text.startswith(("hybrid:", "hybrid@")):
        weight, bi = parse_hybrid(text, bi_encoder)
        return HybridScorer(weight, load.encoder(bi))
    kind, colon, name = text.partition(":")
    if colon and kind in ("bi", "dense"):
        return load.encoder(name)
    if colon and kind == "raw":
        return load.reranker(name)
    if colon and kind == "cross":
        return load.cross_encoder(name, fuse, cascade)
    if not text:
        raise FinerankError("scorer: an empty name", hint=f"give {SPECS}")
    if is_bi_encoder(resolve_model(text)):
        return load.encoder(text)
    return load.cross_encoder(text, fuse, cascade)


# ------------------------------------------------------------------------------------------------ the probe
PROBE_QUERY = "what is the probe about"
PROBE_DOCUMENTS = ("the probe is about checking a model before it serves", "an unrelated second document of text",
                   "a third short document")


def parts(scorer) -> list[tuple[str, Scorer]]:
    """Every part of ``scorer`` with a path naming it (``cascade.cheap``, ``fusion.bi``...), the scorer itself
    last (path ``scorer``): what :func:`check_scorer` probes and ``/health`` lists."""
    found: list[tuple[str, Scorer]] = []

    def walk(s, at: str) -> None:
        if isinstance(s, Cascade):
            walk(s.cheap, f"{at}.cheap")
            walk(s.expensive, f"{at}.expensive")
        elif isinstance(s, FusedScorer):
            walk(s.ce, f"{at}.cross-encoder")
            if s.fuser.spec.weights.get("bi"):
                walk(s.fuser.bi, f"{at}.fusion-bi-encoder")
        elif isinstance(s, HybridScorer):
            walk(s.bi, f"{at}.bi-encoder")
        elif isinstance(s, Reranker) and s.fusion is not None and s.fusion.spec.weights.get("bi"):
            walk(s.fusion.bi, f"{at}.fusion-bi-encoder")
        found.append((at, s))

    walk(scorer, "scorer")
    return found


def check_scorer(scorer: Scorer, label: str | None = None) -> list[dict]:
    """Score a probe list (a query, three documents with first-stage scores) through every part of ``scorer``
    (:func:`parts`: each cascade stage, each fusion signal, then the whole): a part that cannot load or score, or
    returns a score that is not a finite number, is a ModelError naming it (exit 2). Returns what ``/health`` lists:
    one entry a part (its path, kind, model, and ``ok``)."""
    cands = one_list(PROBE_QUERY, list(PROBE_DOCUMENTS), [3.0, 2.0, 1.0])
    who = label or scorer.name
    found = parts(scorer)
    counts = [(p.stats, dict(p.stats)) for _, p in found if isinstance(getattr(p, "stats", None), dict)]
    try:
        return _probe(found, cands, who)
    finally:  # the probe is not work the caller asked for: counters (pairs scored, skipped) as they were
        for stats, before in counts:
            stats.clear()
            stats.update(before)


def _probe(found: list, cands, who: str) -> list[dict]:
    report = []
    for at, part in found:
        about = part.describe()
        name = f"{about.get('kind', type(part).__name__)}" + (f" {about['model']}" if about.get("model") else "")
        what = f"model '{who}' ({name})" if at == "scorer" else f"model '{who}': its part {at} ({name})"
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):  # a NaN is reported below, not warned of
                warnings.simplefilter("ignore", RuntimeWarning)
                run = part.score_candidates(cands)
        except FinerankError as e:
            raise ModelError(f"{what} cannot score: {e.message}", hint=e.hint) from None
        scores = list(run.get(next(iter(cands.docs)), {}).values())
        bad = [s for s in scores if not _finite(s)]
        if bad or len(scores) != len(PROBE_DOCUMENTS):
            got = f"scored a probe pair {bad[0]}" if bad else "left probe documents unscored"
            raise ModelError(f"{what} {got}, expected a finite score for each",
                             hint="the weights are damaged (NaN or infinite values): train, save or download the "
                                  "model again")
        report.append({"part": at, "kind": about.get("kind"), "model": about.get("model"), "ok": True})
    return report


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:  # not a number at all
        return False
