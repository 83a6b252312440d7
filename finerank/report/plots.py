"""The PNG plots a person reads: an evaluation's metrics and per-query changes (``report.md``, ``report.html``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.outputs import atomic_write


def plot_report(report, d: Path) -> list[Path]:
    """``metrics.png`` (each system's mean metrics) and, when there are comparisons, ``per-query-delta.png`` (each
    system's per-query differences from the baseline) in ``d``; ``report`` is an evaluation's report object."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [s.name for s in report.systems]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.8 / len(report.metrics)
    x = np.arange(len(names))
    for i, m in enumerate(report.metrics):
        vals = [s.metrics[m] for s in report.systems]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("mean over queries")
    ax.set_ylim(0, max([s.metrics[m] for s in report.systems for m in report.metrics] + [1e-9]) * 1.15)
    ax.set_title(f"{report.queries} held-out queries")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # beside the axes, clear of the bars
    fig.tight_layout()
    paths.append(_save_fig(fig, d / "metrics.png"))

    primary = report.metrics[0]
    comps = [c for c in report.comparisons if c.metric == primary]
    if comps:  # one chart: each system's per-query differences from the baseline, sorted, one line a system
        fig, ax = plt.subplots(figsize=(9, 4.5))
        base = report.system(report.baseline)
        qids = sorted(base.per_query[primary])
        for c in comps:
            s = report.system(c.system)
            diff = np.sort([s.per_query[primary][q] - base.per_query[primary][q] for q in qids])[::-1]
            ax.step(np.arange(1, len(diff) + 1), diff, where="mid", marker=".", lw=1.4,
                    label=f"{c.system}: mean {c.delta:+.3f}, W/T/L {c.wins}/{c.ties}/{c.losses}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(f"queries, each system's sorted from its largest gain to its largest loss ({len(qids)})")
        ax.set_ylabel(f"Δ {primary} vs {report.baseline}")
        ax.set_title(f"Per-query change against {report.baseline}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        fig.tight_layout()
        paths.append(_save_fig(fig, d / "per-query-delta.png"))
    curves = {}
    for s in report.systems:
        if getattr(s, "calibration", None):
            c = s.calibration
            curves[f"{s.name} uncalibrated (ECE {c['ece_before']:.3f})"] = c["reliability"]["before"]
            curves[f"{s.name} calibrated (ECE {c['ece_after']:.3f})"] = c["reliability"]["after"]
    if curves:
        paths.append(plot_reliability(curves, d / "calibration.png", title=f"{report.queries} queries"))
    return paths


def _save_fig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_tuning(result, path: Path) -> Path:
    """Quality vs p50 latency of a cascade tuning (:class:`finerank.training.fit.CascadeTuning`), one point a
    setting, the full rerank and the chosen setting marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result.metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"bm25": "tab:blue", "bi": "tab:orange", "hybrid": "tab:green"}
    for cheap, color in colors.items():
        pts = [r for r in result.rows if r["cheap"] == cheap]
        if pts:
            ax.scatter([r["p50_ms"] for r in pts], [r[m] for r in pts], color=color, label=f"{cheap} -> CE top n2",
                       s=28)
            for r in pts:
                ax.annotate(f"{r['n2']}" + (f"/{r['n1']}" if r["n1"] else ""), (r["p50_ms"], r[m]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    full = result.full
    ax.scatter([full["p50_ms"]], [full[m]], color="black", marker="s", s=40, label="full rerank")
    ax.axhline((1 - result.tolerance) * full[m], color="gray", ls="--", lw=0.8,
               label=f"{1 - result.tolerance:.0%} of full")
    if result.latency_budget_ms:
        ax.axvline(result.latency_budget_ms, color="tab:red", ls=":", lw=0.8, label="latency budget")
    c = result.chosen_row
    if c is not None:
        ax.scatter([c["p50_ms"]], [c[m]], marker="*", s=260, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label="chosen")
    ax.set_xlabel("p50 latency per query (ms, one list a call)")
    ax.set_ylabel(m)
    ax.set_title(f"cascade settings on {result.queries} validation queries", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save_fig(fig, path)


def plot_reliability(curves: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """A reliability diagram: for each named curve (rows of :func:`finerank.scorers.calibration.reliability`), the
    fraction relevant against the mean predicted probability of each bin; the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for name, rows in curves.items():
        ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(relevant)")
    ax.set_ylabel("fraction relevant")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    fig.tight_layout()
    return _save_fig(fig, Path(path))
