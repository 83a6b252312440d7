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
import os
from pathlib import Path

from ..core.errors import FinerankError
from ..io.models import model_ref, resolve_model
from ..retrieval.dense import BiEncoder
from ..retrieval.hybrid import HYBRID_WEIGHT
from .base import Scorer
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
