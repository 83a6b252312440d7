"""Batch reranking with a cross-encoder: length-grouped batches and sliding windows over long documents.

``Reranker(model).rerank(query, documents)`` returns the documents' indices and scores, best first;
``score(pairs)`` returns one score a pair. A document longer than the model's ``max_length`` (after the query and
the special tokens) is split into overlapping token windows, the query kept in each, and the window scores are
aggregated: ``max`` (MaxP, the default), ``first`` (FirstP: only the first window) or ``mean``;
``long_docs="truncate"`` keeps plain truncation. Every window of every pair goes into one list sorted by length,
cut into batches of ``batch_size``: the model never sees more than ``batch_size`` inputs of at most ``max_length``
tokens at once, whatever the documents' lengths.

The model is a name or path (resolved by :mod:`finerank.io.models`; a finerank run folder means its ``best``), an
already-loaded ``CrossEncoder``, or a folder written by ``finerank export`` (run by onnxruntime). Scores are on the
scale :mod:`finerank.scorers.backends` documents (the model's own activation: scale ``sigmoid`` or ``logit``); a
model saved with a fusion returns the fused score (scale ``zsum``, :meth:`finerank.scorers.fused.Fuser.apply`)
unless ``fuse=False``.

A Reranker is a Scorer (:mod:`finerank.scorers.base`); :meth:`Reranker.score_candidates` is the one path from
candidate lists to a cross-encoder's scored run: train's validation, ``evaluate``, ``rerank``, ``export``'s check,
``serve`` and the quality benchmark all score through it.
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..core.errors import FinerankError
from ..core.records import Run
from ..data.candidates import Candidates
from .backends import load_backend
from .base import Ranked, rank
from .fused import Fuser, FusionSpec

LONG_DOCS = ("max", "first", "mean", "truncate")


@dataclass(frozen=True)
class _Item:
    """One model input: a window of pair ``pair`` (the query and a slice of the document), ``length`` tokens."""

    pair: int
    query: str
    text: str
    length: int


# ------------------------------------------------------------------------------------------------ reranker
class Reranker:
    """Scores (query, document) pairs with a cross-encoder, windowing documents longer than ``max_length``.

    ``window`` is the number of document tokens a window holds (default: all that fit beside the query) and
    ``stride`` the step between window starts (default: half a window, so windows overlap by half).
    Thread-safe: calls are serialised by a lock, so one instance can serve concurrent requests; with a backend that
    takes concurrent calls (``finerank serve``'s batcher) only the tokenizing is, and the model's passes are shared.
    """

    def __init__(self, model, *, max_length: int | None = None, window: int | None = None,
                 stride: int | None = None, long_docs: str = "max", batch_size: int = 32,
                 device: str | None = None, fuse: bool = True):
        if long_docs not in LONG_DOCS:
            raise FinerankError(f"unknown long_docs '{long_docs}'", hint=f"choose one of: {', '.join(LONG_DOCS)}")
        if batch_size < 1:
            raise FinerankError(f"batch_size must be at least 1, got {batch_size}")
        self.backend = load_backend(model, device)
        self.tokenizer = self.backend.tokenizer
        self.specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        limit = self.backend.model_max_length
        if max_length is not None and not (self.specials + 2 <= max_length <= limit):
            raise FinerankError(f"max_length {max_length} is out of range for this model",
                                hint=f"use a value from {self.specials + 2} to {limit} (the model's limit)")
        self.max_length = int(max_length or limit)
        room = self.max_length - self.specials
        if window is not None and not (1 <= window <= room - 1):
            raise FinerankError(f"window {window} does not fit max_length {self.max_length}",
                                hint=f"use 1 to {room - 1} document tokens (the query needs room too)")
        if stride is not None and not (1 <= stride <= (window or room)):
            raise FinerankError(f"stride {stride} must be between 1 and the window size",
                                hint="a stride larger than the window would skip text")
        self.window, self.stride, self.long_docs, self.batch_size = window, stride, long_docs, batch_size
        self.model_dir = Path(self.backend.source) if Path(str(self.backend.source)).exists() else None
        self._lock = threading.Lock()
        self.stats = {"pairs": 0, "windows": 0, "batches": 0, "max_batch": 0}
        spec = FusionSpec.load(self.model_dir) if fuse else None
        self.fusion = Fuser(spec) if spec else None

    @property
    def kind(self) -> str:
        """``torch`` or ``onnx``."""
        return self.backend.kind

    @property
    def name(self) -> str:
        return str(self.backend.source)

    @property
    def scale(self) -> str:
        """``zsum`` with a saved fusion applied, else the model's own: ``sigmoid`` or ``logit``."""
        if self.fusion is not None:
            return "zsum"
        return "sigmoid" if self.backend.activation == "sigmoid" else "logit"

    def describe(self) -> dict:
        out = {"kind": "fused" if self.fusion else "cross-encoder", "scale": self.scale, "model": self.name,
               "backend": self.kind, "max_length": self.max_length, "long_docs": self.long_docs,
               "window": self.window, "stride": self.stride, "batch_size": self.batch_size}
        if self.fusion is not None:
            out["fusion"] = {"weights": {k: w for k, w in self.fusion.spec.weights.items() if w}}
        return out

    def costs(self, cands: Candidates) -> list[int]:
        """The model inputs of each candidate (:meth:`inputs_needed`, in :meth:`Candidates.flat` order), a saved
        fusion's bi-encoder input included."""
        extra = int(bool(self.fusion and self.fusion.spec.weights.get("bi")))
        return [n + extra for n in self.inputs_needed([(qt, dt) for _, _, qt, dt in cands.flat()])]

    def cost(self, cands: Candidates) -> int:
        return sum(self.costs(cands))

    def min_costs(self, cands: Candidates) -> list[int]:
        """A lower bound of :meth:`costs` with no tokenizer (:meth:`min_inputs`): to refuse a huge request at once."""
        return self.min_inputs([dt for _, _, _, dt in cands.flat()])

    def min_cost(self, cands: Candidates) -> int:
        return sum(self.min_costs(cands))

    # ---------------------------------------------------------------------------------------- windows
    def _items(self, pairs: Sequence[tuple[str, str]], tok=None) -> list[_Item]:
        """The model inputs for ``pairs``: one item a pair, or one a window for long documents (``tok``: the
        tokenizer to cut them with, by default the model's)."""
        tok = tok or self.tokenizer
        queries = sorted({q for q, _ in pairs})
        qenc = tok(queries, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        qcap = (self.max_length - self.specials) // 2
        qinfo: dict[str, tuple[str, int]] = {}
        for q, offs in zip(queries, qenc["offset_mapping"]):
            if len(offs) > qcap:  # a query longer than half the input keeps its first half's worth of tokens
                qinfo[q] = (q[: offs[qcap - 1][1]], qcap)
            else:
                qinfo[q] = (q, len(offs))
        denc = tok([d for _, d in pairs], add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                   verbose=False)
        items: list[_Item] = []
        for i, ((q, doc), offs) in enumerate(zip(pairs, denc["offset_mapping"])):
            qtext, qlen = qinfo[q]
            room = self.max_length - self.specials - qlen
            n = len(offs)
            if self.long_docs == "truncate" or n <= min(self.window or room, room):
                if n > room:
                    doc = doc[: offs[room - 1][1]]
                items.append(_Item(i, qtext, doc, self.specials + qlen + min(n, room)))
                continue
            for start, end in self._spans(n, min(self.window or room, room)):
                items.append(_Item(i, qtext, doc[offs[start][0]: offs[end - 1][1]],
                                   self.specials + qlen + end - start))
        return items

    def _spans(self, n: int, w: int) -> list[tuple[int, int]]:
        """Token spans [start, end) of the windows over a document of ``n`` tokens, the last one ending at ``n``."""
        if self.long_docs == "first":
            return [(0, w)]
        stride = self.stride or max(1, w // 2)
        starts = list(range(0, n - w + 1, stride))
        if starts[-1] + w < n:
            starts.append(n - w)
        return [(s, s + w) for s in starts]

    def min_inputs(self, documents: Iterable[str]) -> list[int]:
        """A lower bound of :meth:`inputs_needed` for each document, from its runs of word characters (a WordPiece
        tokenizer makes one token of each at least), with no tokenizer: cheap enough to refuse a huge request
        before counting it exactly."""
        if self.long_docs in ("truncate", "first"):
            return [1 for _ in documents]
        room = self.max_length - self.specials  # the widest a window can be (as if the query took no room)
        w = min(self.window or room, room)
        out = []
        for d in documents:
            n = len(_WORD_RUN.findall(d))
            out.append(1 if n <= w else len(self._spans(n, w)))
        return out

    def inputs_needed(self, pairs: Iterable) -> list[int]:
        """The model inputs (windows) each (query, document) pair would cost :meth:`score`, cut the same way,
        without the model: what a per-request budget is checked against (``finerank serve``). It uses a copy of
        the tokenizer under a lock of its own, so counting never holds up scoring."""
        pairs = [_as_pair(p, n) for n, p in enumerate(pairs)]
        with _COUNTER_INIT:
            if getattr(self, "_counter", None) is None:
                self._counter = (threading.Lock(), copy.deepcopy(self.tokenizer))
        lock, tok = self._counter
        counts = [0] * len(pairs)
        with lock:  # a fast tokenizer is not to be used by two threads at once
            for start in range(0, len(pairs), _CHUNK):
                for it in self._items(pairs[start: start + _CHUNK], tok):
                    counts[start + it.pair] += 1
        return counts

    # ---------------------------------------------------------------------------------------- scoring
    def score(self, pairs: Iterable, first_stage: Sequence[float | None] | None = None, *,
              progress: bool = False, desc: str = "reranking", fuse: bool = True) -> np.ndarray:
        """One score a pair (higher is better). ``pairs``: (query, document) tuples or :class:`Pair` records.
        ``first_stage``: the candidates' first-stage scores (same order), for score fusion."""
        pairs = [_as_pair(p, n) for n, p in enumerate(pairs)]
        if first_stage is not None and len(first_stage) != len(pairs):
            raise FinerankError(f"first_stage has {len(first_stage)} scores for {len(pairs)} pairs")
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if getattr(self.backend, "concurrent", False):  # a server's batcher: tokenize here, share its passes
            scores = self._score_shared(pairs)
            return self._finish(pairs, scores, first_stage) if fuse else scores
        from tqdm.auto import tqdm

        with self._lock, tqdm(total=len(pairs), desc=desc, unit="pair", disable=not progress,
                              mininterval=1.0) as bar:
            scores = np.empty(len(pairs), dtype=np.float32)
            for start in range(0, len(pairs), _CHUNK):
                chunk = pairs[start: start + _CHUNK]
                scores[start: start + len(chunk)] = self._score_chunk(chunk, bar)
            self.stats["pairs"] += len(pairs)
        return self._finish(pairs, scores, first_stage) if fuse else scores

    def _score_shared(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Tokenize and window under the lock, then hand every window to a backend that takes concurrent calls
        (:class:`finerank.serving.batcher.Batcher`), so other requests' windows can share its forward passes."""
        with self._lock:
            items = self._items(pairs)
        window_scores = self.backend([(it.query, it.text) for it in items])
        with self._lock:
            self.stats["pairs"] += len(pairs)
            self.stats["windows"] += len(items)
        return self._aggregate(items, window_scores, len(pairs))

    def _score_chunk(self, pairs: list[tuple[str, str]], bar) -> np.ndarray:
        items = self._items(pairs)
        order = sorted(range(len(items)), key=lambda k: -items[k].length)  # longest first: OOM shows at once
        window_scores = np.empty(len(items), dtype=np.float32)
        remaining = np.bincount([it.pair for it in items], minlength=len(pairs))
        for b in range(0, len(order), self.batch_size):
            batch = order[b: b + self.batch_size]
            window_scores[batch] = self.backend([(items[k].query, items[k].text) for k in batch])
            self.stats["windows"] += len(batch)
            self.stats["batches"] += 1
            self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
            done = 0
            for k in batch:
                remaining[items[k].pair] -= 1
                done += remaining[items[k].pair] == 0
            bar.update(int(done))
        return self._aggregate(items, window_scores, len(pairs))

    def _aggregate(self, items: list[_Item], window_scores: np.ndarray, n: int) -> np.ndarray:
        owners = np.fromiter((it.pair for it in items), dtype=np.int64, count=len(items))
        if self.long_docs == "mean":
            return (np.bincount(owners, weights=window_scores, minlength=n)
                    / np.bincount(owners, minlength=n)).astype(np.float32)
        out = np.full(n, -np.inf, dtype=np.float32)
        np.maximum.at(out, owners, window_scores)  # max, and the single window of first/truncate
        return out

    def _finish(self, pairs: list[tuple[str, str]], scores: np.ndarray,
                first_stage: Sequence[float | None] | None) -> np.ndarray:
        """Where :meth:`score`'s model scores become the returned scores: a model saved with a fusion
        (``finerank.json``) fuses them with the first-stage and bi-encoder scores (:meth:`Fuser.apply`, pairs of
        one query text forming one list); ``fuse=False`` returns the cross-encoder's own scores."""
        if self.fusion is None:
            return scores
        return self.fusion(pairs, scores, first_stage)

    # ---------------------------------------------------------------------------------------- ranking
    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None,
               first_stage: Sequence[float | None] | None = None) -> list[Ranked]:
        """The documents' indices and scores, best first (ties: input order), the top ``top_k`` (>= 1) when given
        (:func:`finerank.scorers.base.rank`)."""
        return rank(self, query, documents, top_k, first_stage)

    def score_candidates(self, cands: Candidates, *, progress: bool = False, desc: str = "reranking") -> Run:
        """Every candidate list scored: query id -> doc id -> score (a saved fusion applied with the first-stage
        scores the candidates carry)."""
        flat = cands.flat()
        scores = self.score([(qt, dt) for _, _, qt, dt in flat], progress=progress, desc=desc, fuse=False)
        run = cands.run_of(scores)
        return run if self.fusion is None else self.fusion.apply(cands, run)


_WORD_RUN = re.compile(r"\w+")
_COUNTER_INIT = threading.Lock()  # guards the lazy tokenizer copy of Reranker.inputs_needed
_CHUNK = 1024  # pairs tokenized and windowed at once: bounds the memory of offsets and window texts


def _as_pair(p, n: int) -> tuple[str, str]:
    if hasattr(p, "query") and hasattr(p, "document"):
        q, d = p.query, p.document
    else:
        try:
            q, d = p
        except (TypeError, ValueError):
            raise FinerankError(f"pair {n}: expected a (query, document) pair, got {type(p).__name__}") from None
    if not isinstance(q, str) or not isinstance(d, str):
        raise FinerankError(f"pair {n}: query and document must be strings, got "
                            f"{type(q).__name__} and {type(d).__name__}")
    return q, d
