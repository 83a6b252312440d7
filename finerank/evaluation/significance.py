"""Significance: each system against the baseline over the same queries (paired t-test, paired randomization test,
a bootstrap 95% confidence interval of the mean difference, wins/ties/losses)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Comparison:
    system: str
    baseline: str
    metric: str
    value: float
    baseline_value: float
    delta: float
    relative: float | None
    p_ttest: float | None
    p_randomization: float
    ci95: tuple[float, float]
    wins: int
    ties: int
    losses: int


def paired_tests(a: np.ndarray, b: np.ndarray, *, seed: int = 0, rounds: int = 10000) -> dict:
    """System a vs baseline b over the same queries: t-test, randomization test, bootstrap CI, W/T/L."""
    from scipy import stats

    diff = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    if n == 0:
        return {"p_ttest": None, "p_randomization": 1.0, "ci95": (0.0, 0.0), "wins": 0, "ties": 0, "losses": 0}
    p_t = None if np.allclose(diff, diff[0]) else float(stats.ttest_rel(a, b).pvalue)
    signs = rng.choice([-1.0, 1.0], size=(rounds, n))
    observed = abs(diff.mean())
    p_rand = float((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum() + 1) / (rounds + 1)
    boots = diff[rng.integers(0, n, size=(rounds, n))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    eps = 1e-9
    return {"p_ttest": p_t, "p_randomization": p_rand, "ci95": (float(lo), float(hi)),
            "wins": int((diff > eps).sum()), "ties": int((np.abs(diff) <= eps).sum()), "losses": int((diff < -eps).sum())}


def compare(base, systems, metrics: list[str], qids: list[str], *, seed: int = 0) -> list[Comparison]:
    """Each of ``systems`` against ``base`` on each metric, over ``qids``: results with ``name``, ``metrics`` (the
    means) and ``per_query`` (metric -> query id -> value)."""
    comparisons = []
    for s in systems:
        for m in metrics:
            a = np.array([s.per_query[m][q] for q in qids])
            b = np.array([base.per_query[m][q] for q in qids])
            bv, sv = base.metrics[m], s.metrics[m]
            comparisons.append(Comparison(s.name, base.name, m, sv, bv, sv - bv, (sv - bv) / bv if bv else None,
                                          **paired_tests(a, b, seed=seed)))
    return comparisons
