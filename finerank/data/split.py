"""Query-level train/validation/test splits that cannot leak, and a leakage check between two files.

Queries are grouped before splitting: queries whose normalized text is equal (Unicode NFKC, case-folded,
punctuation and whitespace collapsed) are one group whatever their ids, and so are near-duplicates: token-set
Jaccard >= ``near_duplicate`` (0.9) over the normalized words after English (Snowball) stemming, so that "flow"
and "flows" count as one word; stop words are kept, which keeps short queries that differ in one content word
apart. Near-duplicates are merged transitively. Whole groups go to one side, so every pair of a query, and of
its duplicates, lands on the same side.

The split is stratified: groups are ordered by positives per query, judged documents per query and mean
label, the order is cut into short strata shuffled by ``seed``, and the groups are dealt out in that order, each
to the side furthest below its share, so that each side receives its share of every stratum. Of
``CANDIDATES`` such splits drawn from the seed, the one whose held-out label distribution and positives per
query are closest to train's is kept (``report["imbalance"]``). Fractions are of queries.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.errors import FinerankError
from ..io.collection import load
from ..io.outputs import check_outputs, pending_file, write_json, write_pairs, written_together
from ..core.records import Dataset, Pair
from ..core.text import normalize_query

SIDES = ("train", "val", "test")
CANDIDATES = 32  # stratified candidate splits per seed; the most balanced one is kept


# ------------------------------------------------------------------------------------------ normalization
_STEM = None


def _tokens(norm: str) -> frozenset[str]:
    global _STEM
    words = norm.split()
    if _STEM is None:
        try:
            import Stemmer

            _STEM = Stemmer.Stemmer("english").stemWords
        except ImportError:  # stemming only widens the net a little
            _STEM = lambda ws: ws  # noqa: E731
    return frozenset(_STEM(words))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_pairs(texts: Sequence[str], threshold: float = 0.9) -> list[tuple[int, int, float]]:
    """Index pairs (i < j) of texts whose normalized, stemmed token sets have Jaccard >= threshold.

    Uses prefix filtering (the All-Pairs algorithm): two sets with Jaccard >= t must share a token among the
    first ``|x| - ceil(t*|x|) + 1`` of each, tokens ordered rarest first; so it is not quadratic in practice.
    """
    if threshold > 1:
        return []
    sets = [_tokens(normalize_query(t)) for t in texts]
    df = Counter(tok for s in sets for tok in s)
    ordered = [sorted(s, key=lambda tok: (df[tok], tok)) for s in sets]
    index: dict[str, list[int]] = defaultdict(list)
    out = []
    for i in sorted(range(len(sets)), key=lambda k: len(sets[k])):
        toks = ordered[i]
        n = len(toks)
        prefix = n - math.ceil(threshold * n) + 1 if n else 0
        cands: set[int] = set()
        for tok in toks[:prefix]:
            cands.update(index[tok])
        for j in cands:
            if len(sets[j]) < threshold * n:  # processed shortest first: |j| <= |i|
                continue
            sim = jaccard(sets[i], sets[j])
            if sim >= threshold:
                out.append((min(i, j), max(i, j), sim))
        for tok in toks[:prefix]:
            index[tok].append(i)
    return sorted(out)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_queries(queries: dict[str, str], near_duplicate: float = 0.9) -> tuple[list[list[str]], list[dict]]:
    """Query ids grouped by equal normalized text and near-duplicates; and a description of each merged group."""
    ids = list(queries)
    uf = _UnionFind(len(ids))
    reasons: dict[tuple[int, int], tuple[str, float]] = {}
    first: dict[str, int] = {}
    for i, q in enumerate(ids):
        norm = normalize_query(queries[q])
        if norm in first:
            uf.union(first[norm], i)
            reasons[(first[norm], i)] = ("same normalized text", 1.0)
        else:
            first[norm] = i
    reps = list(first.values())
    for a, b, sim in near_duplicate_pairs([queries[ids[i]] for i in reps], near_duplicate):
        uf.union(reps[a], reps[b])
        reasons[(reps[a], reps[b])] = ("near-duplicate", sim)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(ids)):
        members[uf.find(i)].append(i)
    groups = [[ids[i] for i in m] for m in members.values()]
    merged = []
    for root, m in members.items():
        if len(m) < 2:
            continue
        links = [{"a": ids[a], "b": ids[b], "reason": r, "jaccard": round(s, 3)}
                 for (a, b), (r, s) in sorted(reasons.items()) if uf.find(a) == root]
        merged.append({"query_ids": [ids[i] for i in m], "queries": [queries[ids[i]] for i in m], "links": links})
    return groups, merged


# ----------------------------------------------------------------------------------------------- leakage
@dataclass
class LeakageReport:
    """What two sets of pairs share: queries (exact or near-duplicate text) and (query, document) pairs."""

    a: str
    b: str
    a_queries: int
    b_queries: int
    shared_queries: list[dict] = field(default_factory=list)
    shared_pairs: int = 0
    pair_examples: list[dict] = field(default_factory=list)
    shared_ids_other_text: list[str] = field(default_factory=list)
    near_duplicate: float = 0.9

    @property
    def ok(self) -> bool:
        return not self.shared_queries and not self.shared_pairs

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        if self.ok:
            return f"no leakage between {self.a} ({self.a_queries} queries) and {self.b} ({self.b_queries} queries)"
        kinds = Counter(s["kind"] for s in self.shared_queries)
        what = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "no queries"
        return (f"LEAKAGE between {self.a} and {self.b}: {len(self.shared_queries)} shared queries ({what}), "
                f"{self.shared_pairs} shared (query, document) pairs")


def _pairs_of(x) -> tuple[list[Pair], str]:
    if isinstance(x, Dataset):
        return x.pairs, x.source
    if isinstance(x, (str, Path)):
        ds = load(x)
        return ds.pairs, ds.source
    return list(x), "pairs"


def check_leakage(a, b, *, near_duplicate: float = 0.9, max_examples: int = 20) -> LeakageReport:
    """Queries (same normalized text, or near-duplicates) and (query, document) pairs that ``a`` and ``b``
    share. ``a``/``b``: a Dataset, a list of Pairs, or a path. A query id in both with unrelated texts is
    listed in ``shared_ids_other_text`` but is not leakage (ids of different sources may collide)."""
    pa, name_a = _pairs_of(a)
    pb, name_b = _pairs_of(b)
    qa = {p.query_id: p.query for p in pa}
    qb = {p.query_id: p.query for p in pb}
    rep = LeakageReport(name_a, name_b, len(qa), len(qb), near_duplicate=near_duplicate)

    norm_a: dict[str, list[str]] = defaultdict(list)
    for q, t in qa.items():
        norm_a[normalize_query(t)].append(q)
    seen = set()
    for q, t in qb.items():
        for qa_id in norm_a.get(normalize_query(t), []):
            rep.shared_queries.append({"kind": "exact", "a_id": qa_id, "a_query": qa[qa_id], "b_id": q,
                                       "b_query": t, "jaccard": 1.0})
            seen.add((qa_id, q))
    la, lb = list(qa), list(qb)
    texts = [qa[q] for q in la] + [qb[q] for q in lb]
    for i, j, sim in near_duplicate_pairs(texts, near_duplicate):
        if i < len(la) <= j:
            ida, idb = la[i], lb[j - len(la)]
            if (ida, idb) not in seen:
                seen.add((ida, idb))
                rep.shared_queries.append({"kind": "near-duplicate", "a_id": ida, "a_query": qa[ida], "b_id": idb,
                                           "b_query": qb[idb], "jaccard": round(sim, 3)})
    leaked_b = {idb for _, idb in seen}
    rep.shared_ids_other_text = sorted(q for q in set(qa) & set(qb) if q not in leaked_b)

    docs_a: dict[str, set[str]] = defaultdict(set)
    for p in pa:
        docs_a[p.query_id].add(p.doc_id)
    matched: dict[str, set[str]] = defaultdict(set)  # b query id -> the a query ids it repeats
    for ida, idb in seen:
        matched[idb].add(ida)
    for p in pb:
        if any(p.doc_id in docs_a[ida] for ida in matched.get(p.query_id, ())):
            rep.shared_pairs += 1
            if len(rep.pair_examples) < max_examples:
                rep.pair_examples.append({"query_id": p.query_id, "query": p.query, "doc_id": p.doc_id})
    return rep


# -------------------------------------------------------------------------------------------------- split
@dataclass
class SplitResult:
    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    report: dict


def _side_stats(pairs: list[Pair]) -> dict:
    by_q: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_q[p.query_id].append(p)
    pos = [sum(1 for p in ps if p.label > 0) for ps in by_q.values()]
    hist = Counter(int(p.label) if float(p.label).is_integer() else p.label for p in pairs)
    return {
        "queries": len(by_q),
        "pairs": len(pairs),
        "label_histogram": {str(k): hist[k] for k in sorted(hist)},
        "label_share": {str(k): round(hist[k] / len(pairs), 4) for k in sorted(hist)} if pairs else {},
        "positives_per_query": {"mean": round(statistics.fmean(pos), 3), "median": statistics.median(pos),
                                "min": min(pos), "max": max(pos)} if pos else {},
        "queries_without_positive": sum(1 for n in pos if n == 0),
    }


def split_dataset(ds: Dataset, *, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 42,
                  near_duplicate: float = 0.9) -> SplitResult:
    """Split pairs by query group (never by row) into train/val/test, stratified and deterministic per seed."""
    pairs = ds.pairs if isinstance(ds, Dataset) else list(ds)
    source = ds.source if isinstance(ds, Dataset) else "pairs"
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise FinerankError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise FinerankError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction:g}")
    if not 0 < near_duplicate <= 1.01:
        raise FinerankError(f"near_duplicate must be in (0, 1] (a Jaccard threshold; above 1 turns it off), "
                            f"got {near_duplicate}")

    by_q: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_q[p.query_id].append(p)
    queries = {q: ps[0].query for q, ps in by_q.items()}
    groups, merged = group_queries(queries, near_duplicate)
    n_q = len(queries)

    targets = {"val": round(val_fraction * n_q), "test": round(test_fraction * n_q)}
    for s, f in (("val", val_fraction), ("test", test_fraction)):
        if f > 0 and targets[s] == 0:
            targets[s] = 1
    targets["train"] = n_q - targets["val"] - targets["test"]
    need = 1 + (val_fraction > 0) + (test_fraction > 0)
    if len(groups) < need or targets["train"] < 1:
        raise FinerankError(f"{source}: {n_q} queries in {len(groups)} groups cannot be split into {need} sides",
                            hint="a split needs several distinct queries; use more data or smaller fractions")

    def key(g: list[str]) -> tuple:
        ps = [p for q in g for p in by_q[q]]
        n_pos = sum(1 for p in ps if p.label > 0) / len(g)
        mean_label = sum(p.label for p in ps) / len(ps)
        return (round(n_pos, 1), round(len(ps) / len(g), 1), round(mean_label, 1))

    keys = [key(g) for g in groups]
    best = None
    for trial in range(CANDIDATES):
        assign = _deal(groups, keys, targets, random.Random(f"{seed}:{trial}"), source)
        cost = _imbalance({q: ps for q, ps in by_q.items()}, assign)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, assign)
    assign = best[1]

    sides = {s: [p for p in pairs if assign[p.query_id] == s] for s in SIDES}
    report = {
        "source": source,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "near_duplicate": near_duplicate,
        "queries": n_q,
        "groups": len(groups),
        "pairs": len(pairs),
        "sides": {s: _side_stats(sides[s]) for s in SIDES if sides[s] or (s != "test" or test_fraction > 0)},
        "query_ids": {s: sorted({p.query_id for p in sides[s]}) for s in SIDES if sides[s]},
        "duplicate_groups": merged,
    }
    report["imbalance"] = round(best[0], 4)
    return SplitResult(sides["train"], sides["val"], sides["test"], report)


def _deal(groups: list[list[str]], keys: list[tuple], targets: dict[str, int], rng: random.Random,
          source: str) -> dict[str, str]:
    """Order groups by stratum key, cut the order into strata shuffled within, and deal the groups out in that
    order, each to the side furthest below its share of the queries dealt so far (systematic sampling)."""
    n_q = sum(targets.values())
    share = {s: targets[s] / n_q for s in SIDES}
    ranked = sorted(range(len(groups)), key=lambda i: (keys[i], rng.random()))
    # strata: runs of neighbouring groups, long enough that the smallest side gets about two of each
    size = max(2, math.ceil(2 / min(v for v in share.values() if v > 0)))
    order = []
    for at in range(0, len(ranked), size):
        stratum = ranked[at:at + size]
        rng.shuffle(stratum)
        order.extend(stratum)
    phase = {s: rng.random() for s in SIDES}
    have = dict.fromkeys(SIDES, 0)
    assign: dict[str, str] = {}
    dealt = 0
    for i in order:
        g = groups[i]
        dealt += len(g)
        open_sides = [s for s in SIDES if share[s] > 0 and have[s] < targets[s]] or [s for s in SIDES if share[s] > 0]
        side = max(open_sides, key=lambda s: share[s] * dealt - have[s] + phase[s] * share[s])
        have[side] += len(g)
        for q in g:
            assign[q] = side
    for s in ("val", "test"):  # a side with a positive fraction never ends empty
        if share[s] > 0 and have[s] == 0:
            donor = next((groups[i] for i in reversed(order)
                          if assign[groups[i][0]] == "train" and have["train"] > len(groups[i])), None)
            if donor is None:
                raise FinerankError(f"{source}: too few query groups to give the {s} side any query")
            for q in donor:
                assign[q] = s
            have[s] += len(donor)
            have["train"] -= len(donor)
    return assign


def _imbalance(by_q: dict[str, list[Pair]], assign: dict[str, str]) -> float:
    """How far the held-out sides are from train: total variation distance of the label distributions plus the
    relative difference in mean positives per query."""
    labels: dict[str, Counter] = defaultdict(Counter)
    pos: dict[str, list[int]] = defaultdict(list)
    for q, ps in by_q.items():
        side = assign[q]
        labels[side].update(p.label for p in ps)
        pos[side].append(sum(1 for p in ps if p.label > 0))
    cost = 0.0
    ref_n = sum(labels["train"].values()) or 1
    ref_pos = statistics.fmean(pos["train"]) if pos["train"] else 0.0
    for side in ("val", "test"):
        if not pos[side]:
            continue
        n = sum(labels[side].values())
        keys = set(labels[side]) | set(labels["train"])
        cost += 0.5 * sum(abs(labels[side][k] / n - labels["train"][k] / ref_n) for k in keys)
        cost += abs(statistics.fmean(pos[side]) - ref_pos) / max(ref_pos, 1e-9)
    return cost


def write_split(result: SplitResult, out_dir, inputs=()) -> dict:
    """Write train.jsonl, val.jsonl, test.jsonl (when not empty) and split-report.json into ``out_dir``, after
    checking the written files for leakage (the check goes into the report under ``leakage``). No file is an input
    (the report's source, or one of ``inputs``); the files land together or not at all."""
    out = Path(out_dir)
    check_outputs(split_outputs(out), [result.report.get("source"), *inputs], folders=[out])
    files = {}
    with written_together():  # the four files land together, or none does
        for s in SIDES:
            rows = getattr(result, s)
            if rows:
                write_pairs(out / f"{s}.jsonl", rows)
                files[s] = str(out / f"{s}.jsonl")
        loaded = {s: load(pending_file(f), "jsonl", max_label=None) for s, f in files.items()}
        checks = {}
        names = list(loaded)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                checks[f"{a}-{b}"] = check_leakage(loaded[a], loaded[b],
                                                   near_duplicate=result.report["near_duplicate"]).to_dict()
        result.report["files"] = files
        result.report["leakage"] = {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
        write_json(out / "split-report.json", result.report)
    if "test" not in files and (out / "test.jsonl").exists():
        (out / "test.jsonl").unlink()  # a stale test file from an earlier split would mislead
    return result.report


def split_outputs(out_dir) -> list[Path]:
    """The files :func:`write_split` writes into ``out_dir`` (test.jsonl only when there is a test side)."""
    out = Path(out_dir)
    return [out / f"{s}.jsonl" for s in SIDES] + [out / "split-report.json"]
