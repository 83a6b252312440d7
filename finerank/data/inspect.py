"""``data inspect``: what is in a pairs file or collection, and what will hurt training. It never changes data."""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from ..io.pairs import check_ids
from ..io.models import load_tokenizer, resolve_model
from ..core.records import Dataset
from ..core.text import normalize_query

MIN_PAIRS = 500
TRUNCATION_WARN = 0.10


@dataclass
class Warning_:
    code: str
    message: str
    remedy: str


@dataclass
class InspectReport:
    source: str
    format: str
    pairs: int
    queries: int
    documents: int
    label_scale: str                      # "binary" or "graded 0-4"
    label_histogram: dict[str, int]
    positives_per_query: dict[str, float]  # min / median / max
    queries_without_positive: int
    queries_without_positive_examples: list[str]
    duplicate_pairs: int
    duplicate_examples: list[dict]
    conflicting_pairs: int
    conflict_examples: list[dict]
    skipped: int
    skipped_reasons: dict[str, int]
    corpus_reuse: dict = field(default_factory=dict)  # see document_shortcut_risk
    tokens: dict | None = None             # p50/p95/max/truncated_share under the model's tokenizer
    warnings: list[Warning_] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def document_shortcut_risk(pairs) -> dict:
    """How a training set lets a cross-encoder learn WHICH documents are relevant instead of reading the query:
    documents labelled relevant (for some query) that never appear as a negative (label 0) of any query, and those
    that appear in other queries' rows; ``shared_documents`` (in more than one query's rows) tells a shared corpus.
    Few queries over one shared corpus make this the easy way to fit."""
    positive: dict[str, set] = defaultdict(set)
    negative: set = set()
    rows: dict[str, set] = defaultdict(set)
    for p in pairs:
        rows[p.doc_id].add(p.query_id)
        if p.label > 0:
            positive[p.doc_id].add(p.query_id)
        else:
            negative.add(p.doc_id)
    never = [d for d in positive if d not in negative]
    elsewhere = [d for d, qs in positive.items() if rows[d] - qs]
    n = len(positive)
    return {"positive_documents": n, "never_negative": len(never), "never_negative_share": len(never) / n if n else 0.0,
            "in_other_queries_rows": len(elsewhere), "shared_documents": sum(1 for qs in rows.values() if len(qs) > 1)}


SHORTCUT_WARN = 0.5      # share of positive documents that are never a negative
SHORTCUT_QUERIES = 1000  # with more queries than this, memorising documents stops paying off


def conflicting_labels(pairs) -> dict[tuple[str, str], set]:
    """(normalized query, document) -> the labels it carries, for every pair that carries more than one."""
    by_text: dict[tuple[str, str], set] = defaultdict(set)
    for p in pairs:
        by_text[(normalize_query(p.query), p.document)].add(p.label)
    return {k: v for k, v in by_text.items() if len(v) > 1}


def _label_key(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def token_lengths(pairs, model, max_length: int, sample: int = 20000, seed: int = 0) -> dict:
    """Token counts of query + document (with special tokens) under ``model``'s tokenizer (a name or path, or a
    loaded tokenizer)."""
    import numpy as np

    tok = load_tokenizer(model) if isinstance(model, str) else model
    name = model if isinstance(model, str) else type(model).__name__
    rows = list(pairs)
    if len(rows) > sample:
        rows = random.Random(seed).sample(rows, sample)
    lengths = []
    for i in range(0, len(rows), 1024):
        chunk = rows[i : i + 1024]
        enc = tok([p.query for p in chunk], [p.document for p in chunk], truncation=False,
                  add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False, verbose=False)
        lengths.extend(len(ids) for ids in enc["input_ids"])
    arr = np.asarray(lengths)
    return {
        "model": name if not isinstance(model, str) or model == resolve_model(model)
        else f"{model} ({resolve_model(model)})",
        "max_length": max_length,
        "measured_pairs": int(arr.size),
        "p50": int(np.percentile(arr, 50)),
        "p95": int(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "truncated_share": float((arr > max_length).mean()),
    }


def inspect(dataset: Dataset, *, model: str | None = "minilm-l6", max_length: int = 512,
            examples: int = 5) -> InspectReport:
    """Counts, label balance, positives per query, duplicates, label conflicts and token lengths, with warnings.
    An id reused with another text is a DataError, as the loaders make it (for pairs built in memory too)."""
    pairs = dataset.pairs
    check_ids(pairs, dataset.source)
    hist = Counter(_label_key(p.label) for p in pairs)
    labels = sorted({p.label for p in pairs})
    if not labels:
        scale = "none (no pairs)"
    elif set(labels) <= {0.0, 1.0}:
        scale = "binary"
    else:
        scale = f"graded {min(labels):g}-{max(labels):g}"

    by_query = dataset.by_query()
    pos = {q: sum(1 for p in ps if p.label > 0) for q, ps in by_query.items()}
    no_pos = [q for q, n in pos.items() if n == 0]
    counts = list(pos.values()) or [0]

    seen = Counter((normalize_query(p.query), p.document, p.label) for p in pairs)
    dups = {k: n for k, n in seen.items() if n > 1}
    ids: dict[tuple[str, str], tuple[str, str]] = {}
    for p in pairs:
        ids.setdefault((normalize_query(p.query), p.document), (p.query_id, p.doc_id))
    conflicts = conflicting_labels(pairs)

    report = InspectReport(
        source=dataset.source,
        format=dataset.format,
        pairs=len(pairs),
        queries=len(by_query),
        documents=len({p.doc_id for p in pairs}),
        label_scale=scale,
        label_histogram=dict(sorted(hist.items(), key=lambda kv: float(kv[0]))),
        positives_per_query={"min": min(counts), "median": statistics.median(counts), "max": max(counts)},
        queries_without_positive=len(no_pos),
        queries_without_positive_examples=no_pos[:examples],
        duplicate_pairs=sum(n - 1 for n in dups.values()),
        duplicate_examples=[{"query": q, "document": d[:120], "label": lab, "copies": n}
                            for (q, d, lab), n in list(dups.items())[:examples]],
        conflicting_pairs=len(conflicts),
        conflict_examples=[{"query_id": ids[k][0], "doc_id": ids[k][1], "query": k[0],
                            "labels": sorted(v)} for k, v in list(conflicts.items())[:examples]],
        skipped=len(dataset.skipped),
        skipped_reasons=dataset.skipped_reasons(),
        corpus_reuse=document_shortcut_risk(pairs),
    )
    if model:
        report.tokens = token_lengths(pairs, model, max_length)

    report.warnings = _warnings(report, "0" in hist, max_length)
    return report


def _warnings(report: InspectReport, has_negatives: bool, max_length: int) -> list[Warning_]:
    """What will hurt training, each with its remedy."""
    w: list[Warning_] = []
    if report.pairs < MIN_PAIRS:
        w.append(Warning_("few-pairs", f"only {report.pairs} pairs (fewer than {MIN_PAIRS}): a fine-tuned model "
                          "will overfit or barely move", "add labeled pairs, or mine negatives: finerank data mine"))
    if not has_negatives:
        w.append(Warning_("no-negatives", "no pair has label 0: the model never sees a non-relevant document",
                          "mine hard negatives with BM25: finerank data mine"))
    if report.conflicting_pairs:
        w.append(Warning_("label-noise", f"{report.conflicting_pairs} (query, document) pairs carry conflicting labels",
                          "fix or drop them before training; see conflict_examples"))
    if report.duplicate_pairs:
        w.append(Warning_("duplicates", f"{report.duplicate_pairs} exact duplicate pairs weigh those rows double",
                          "drop the duplicates"))
    if report.tokens and report.tokens["truncated_share"] > TRUNCATION_WARN:
        share = report.tokens["truncated_share"]
        w.append(Warning_("truncation", f"{share:.0%} of pairs exceed max_length={max_length} tokens and lose "
                          "their end", "raise --max-length, or rerank with sliding windows (finerank rerank)"))
    reuse = report.corpus_reuse
    if (reuse["never_negative_share"] > SHORTCUT_WARN and reuse["shared_documents"]
            and report.queries < SHORTCUT_QUERIES):
        w.append(Warning_("document-shortcut", f"{reuse['never_negative']} of the {reuse['positive_documents']} "
                          f"documents labelled relevant ({reuse['never_negative_share']:.0%}) are never a negative, "
                          f"over {report.queries} queries: a cross-encoder can fit this by learning which documents "
                          "are relevant instead of reading the query, and then ranks new queries' lists by that",
                          "finerank train balances such pairs itself (each positive document also another "
                          "query's negative; --no-balance turns it off), as finerank data mine does; evaluate "
                          "reports each model's query dependence"))
    if report.skipped:
        w.append(Warning_("skipped", f"{report.skipped} invalid rows were skipped", "see skipped_reasons"))
    return w
