"""Calibration: a monotone map from a scorer's score to P(relevant), fitted on judged validation lists.

Platt scaling: ``p = 1 / (1 + exp(-(a * score + b)))`` with ``a >= 0`` (so the order of a list never changes), fitted
by maximum likelihood with Platt's smoothed targets. :func:`ece` is the expected calibration error (equal-width bins
of the predicted probability). A model's map is saved in its ``finerank.json`` under ``calibration``
(:mod:`finerank.scorers.spec`) with the scorer it was fitted on (its ``kind`` and ``scale``): a map fitted on a
fused or cascaded score applies to that score only.

Uncalibrated, :func:`probability` is the logistic of the raw score (the score itself where the scorer's scale is
already a sigmoid, in [0, 1]): in [0, 1] and in the same order, but not a probability anyone measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..core.errors import FinerankError, ModelError

BINS = 10


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


@dataclass(frozen=True)
class Calibration:
    """A fitted Platt map and what it was fitted on and measured with."""

    a: float                      # slope (>= 0) on the raw score
    b: float                      # intercept
    scorer: str                   # the kind of scorer whose score it maps (cross-encoder, fused, cascade, ...)
    scale: str                    # that scorer's scale (finerank.scorers.base.SCALES)
    threshold: float = 1.0        # a judged label >= threshold counts as relevant
    queries: int = 0
    pairs: int = 0
    positives: int = 0
    folds: int = 0                # ECE measured on held-out folds of queries (0: in-sample)
    ece_before: float | None = None  # the uncalibrated map (see probability)
    ece_after: float | None = None
    data: str | None = None       # the validation file's name

    def apply(self, scores: Sequence[float]) -> np.ndarray:
        return _sigmoid(self.a * np.asarray(scores, dtype=np.float64) + self.b)

    def to_dict(self) -> dict:
        return {"method": "platt", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict | None, path=None) -> "Calibration | None":
        """The map saved in ``finerank.json`` (None: none saved); a ModelError naming the file and field otherwise."""
        if data is None:
            return None
        where = f"{path}: " if path else ""
        hint = "run finerank calibrate again, or delete the 'calibration' key"
        if data.get("method", "platt") != "platt":
            raise ModelError(f"{where}field 'calibration.method': got {data.get('method')!r}, expected 'platt'",
                             hint=hint)
        for key in ("a", "b"):
            v = data.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ModelError(f"{where}field 'calibration.{key}': got {v!r}, expected a finite number", hint=hint)
        if data["a"] < 0:
            raise ModelError(f"{where}field 'calibration.a': got {data['a']!r}, expected a number >= 0 (a monotone "
                             "map)", hint=hint)
        for key in ("scorer", "scale"):
            if not isinstance(data.get(key), str):
                raise ModelError(f"{where}field 'calibration.{key}': got {data.get(key)!r}, expected a string",
                                 hint=hint)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fit_platt(scores: Sequence[float], relevant: Sequence[bool], iterations: int = 100) -> tuple[float, float]:
    """(a, b) of the Platt map of ``scores`` to ``relevant``, a >= 0 (a score that ranks backwards gets a = 0: the
    base rate for every score). Both classes must be present."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(relevant, dtype=bool)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise FinerankError(f"calibration needs relevant and non-relevant documents; got {pos} relevant and {neg} "
                            "not", hint="give judged lists with both (a lower --threshold counts more as relevant)")
    t = np.where(y, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))  # Platt's targets: no infinite slope
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = (s - mu) / sd
    w = np.array([0.0, math.log(t.mean() / (1.0 - t.mean()))])
    for _ in range(iterations):
        p = _sigmoid(w[0] * x + w[1])
        r = p * (1.0 - p) + 1e-12
        g = np.array([((p - t) * x).sum(), (p - t).sum()])
        h = np.array([[(r * x * x).sum(), (r * x).sum()], [(r * x).sum(), r.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    if w[0] <= 0:
        return 0.0, math.log(t.mean() / (1.0 - t.mean()))
    return float(w[0] / sd), float(w[1] - w[0] * mu / sd)


def probability(scores: Sequence[float], calibration: Calibration | None, scale: str) -> np.ndarray:
    """``scores`` as P(relevant) through ``calibration``; without one, the logistic of the raw score (the score as it
    is where ``scale`` is ``sigmoid``)."""
    s = np.asarray(scores, dtype=np.float64)
    if calibration is not None:
        return calibration.apply(s)
    if scale == "sigmoid":
        return np.clip(s, 0.0, 1.0)
    return _sigmoid(s)


def reliability(probs: Sequence[float], relevant: Sequence[bool], bins: int = BINS) -> list[dict]:
    """Equal-width bins of the predicted probability: each bin's count, mean prediction and fraction relevant."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(relevant, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for k in range(bins):
        m = which == k
        if m.any():
            rows.append({"low": k / bins, "high": (k + 1) / bins, "count": int(m.sum()),
                         "predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return rows


def ece(probs: Sequence[float], relevant: Sequence[bool], bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |predicted - observed| over equal-width bins."""
    rows = reliability(probs, relevant, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / n) if n else 0.0
