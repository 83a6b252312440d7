"""The model card: ``best/README.md`` written by finerank in place of sentence-transformers' generic one.

``train`` writes it from the run record (base model and whether its head was fresh, training data with hashes,
recipe, validation history, fusion, versions) with valid Hugging Face front matter, so the folder uploads as it is
(``hf upload ORG/NAME runs/domain/best``). :func:`update_cards`, the step ``evaluate`` runs unless told not to,
replaces the card's evaluation section (between the lines :data:`EVAL_START` and :data:`EVAL_END`) with an
evaluation's latest results, naming each row by its scorer's ``describe()``. A model saved with a fusion gets a
warning box: what ``CrossEncoder(path)`` alone gives, and how to get the shipped score. A bi-encoder run (``train
--arch bi-encoder``) gets the same card for an embedding model: dense retrieval and the hybrid with BM25 in place of
the fusion. Every name (a file, a folder, a model id, a system) goes in through :func:`md_escape` or
:func:`md_code`: it shows literally, holds no HTML and never forms a line of its own, so no name can forge a marker.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..scorers.fused import FusionSpec
from ..scorers.spec import SPEC_FILE
from ..io.files import RUN_RECORD, file_sha256
from ..io.outputs import atomic_write
from ..core.metrics import DEFAULT_METRICS
from ..io.models import BEST, OFFLINE_BACKBONE, resolve_model
from .markdown import md_code, md_escape, render_markdown_table, report_notes

CARD = "README.md"
MARK = "<!-- written by finerank: finerank evaluate replaces the evaluation section -->"
EVAL_START = "<!-- finerank:evaluation -->"
EVAL_END = "<!-- /finerank:evaluation -->"
HUB_IDS = {OFFLINE_BACKBONE: "sentence-transformers/all-MiniLM-L6-v2"}  # what the offline names are on the hub
NOT_EVALUATED = ("Not evaluated on held-out queries yet: `finerank evaluate --model THIS_FOLDER --dataset "
                 "HELD_OUT_CANDIDATES` writes its results here.")


# ---------------------------------------------------------------------------------------------- base model
def _config(path_or_id: str) -> dict | None:
    """A model's config.json: from its folder, or from the local hub cache (never the network)."""
    p = Path(path_or_id)
    if p.is_dir():
        f = p / "config.json"
        return json.loads(f.read_text()) if f.exists() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path_or_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid id: unknown
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


def base_model(name: str) -> dict:
    """What the card says about the base: ``name`` as given, its hub id (when known), its local path (when it is
    one), and whether the cross-encoder's scoring head was fresh (no sequence-classification head in the base;
    None when the base's config is not at hand)."""
    try:
        path = resolve_model(name)
    except Exception:  # noqa: BLE001 - a folder since removed: say what was given
        path = name
    local = Path(path).exists()
    hub = HUB_IDS.get(name) or (None if local or Path(name).exists() else name)
    cfg = _config(path)
    fresh = None
    if cfg is not None:
        fresh = not any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or [])
    return {"name": name, "hub_id": hub, "path": path if local else None, "fresh_head": fresh}


def front_matter(base: dict, bi_encoder: bool = False) -> str:
    """The Hugging Face / sentence-transformers metadata block (YAML between ``---`` lines)."""
    import yaml

    meta: dict = ({"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                   "tags": ["sentence-transformers", "feature-extraction", "sentence-similarity", "finerank"]}
                  if bi_encoder else
                  {"library_name": "sentence-transformers", "pipeline_tag": "text-ranking",
                   "tags": ["sentence-transformers", "cross-encoder", "reranker", "text-ranking", "finerank"]})
    if base.get("hub_id"):
        meta["base_model"] = base["hub_id"]
        meta["base_model_relation"] = "finetune"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


# ---------------------------------------------------------------------------------------------- sections
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _base_lines(base: dict) -> list[str]:
    where = base["hub_id"] or base["path"] or base["name"]
    lines = [f"- Base model: {md_code(where)}" + (f" (given as {md_code(base['name'])}"
                                                  + (f", loaded from {md_code(base['path'])}" if base["path"] else "")
                                                  + ")" if base["name"] != where else "")]
    if base["fresh_head"] is True:
        lines.append("- Scoring head: **fresh** (randomly initialised): the base is an encoder without a "
                     "relevance head, so everything it knows about ranking came from this fine-tuning")
    elif base["fresh_head"] is False:
        lines.append("- Scoring head: the base's own sequence-classification head, fine-tuned")
    else:
        lines.append("- Scoring head: unknown (the base's config was not at hand when this card was written)")
    return lines


def _data_lines(record: dict) -> list[str]:
    data = record.get("data") or {}
    rows = []
    for split in ("train", "val"):
        d = data.get(split)
        if d:
            rows.append([split, md_code(Path(d['path']).name), md_code(d['sha256']), d["pairs"], d["queries"],
                         md_escape(d.get("candidates", ""))])
    lines = _table(["split", "file", "sha256", "pairs", "queries", "validation lists"], rows)
    labels = (data.get("train") or {}).get("labels")
    scale = f"labels {', '.join(f'{x:g}' for x in labels)}" if labels else "labels"
    lines += ["", f"Label scale: {scale} (maximum {_fmt(record.get('label_scale_max'), 2)}); loss "
                  f"`{record.get('loss')}`" + (" (labels divided by the maximum, so 0..1)" if record.get("loss") == "bce"
                                               else " (listwise, the grades kept)" if record.get("loss") == "lambda"
                                               else "") + "."]
    return lines


def _recipe_lines(record: dict) -> list[str]:
    c = record.get("config") or {}
    t = record.get("timings") or {}
    rows = [["learning rate", c.get("lr")], ["epochs", c.get("epochs")],
            ["max steps", c["max_steps"] if (c.get("max_steps") or -1) > 0 else None],
            ["batch", f"{record.get('per_device_batch')} {record.get('batch_unit', '')} a device, "
                      f"{record.get('global_batch')} a step"],
            ["max_length", record.get("max_seq_length") or c.get("max_length")], ["warmup ratio", c.get("warmup_ratio")],
            ["weight decay", c.get("weight_decay")], ["evaluation every", f"{c.get('eval_steps')} steps"],
            ["early-stopping patience", c.get("early_stopping_patience")], ["loss", record.get("loss")],
            ["BCE positive weight", record.get("pos_weight")], ["seed", c.get("seed")],
            ["steps done", record.get("global_step")],
            ["processes", md_escape(f"{record.get('world_size')} ({record.get('device')})")],
            ["training time", f"{t.get('train_seconds')} s ({record.get('train_pairs_per_second')} pairs/s)"],
            ["tracking", md_escape(c["report_to"]) if c.get("report_to") not in (None, "none") else None]]
    rows = [[k, v] for k, v in rows if v is not None]
    return _table(["setting", "value"], [[k, v if not isinstance(v, float) else f"{v:g}"] for k, v in rows])


def _history_lines(record: dict) -> list[str]:
    metrics = [m for m in DEFAULT_METRICS if m in (record.get("base") or {}) or
               any(m in h for h in record.get("eval_history") or [])]
    if not metrics:
        return ["No validation data: the last checkpoint was kept."]
    kept = record.get("best_checkpoint")
    kept_step = int(kept.rsplit("-", 1)[-1]) if kept and kept.rsplit("-", 1)[-1].isdigit() else None
    rows = [["base (untrained)", "", *[(record.get("base") or {}).get(m) for m in metrics]]]
    for h in record.get("eval_history") or []:
        step = f"**{h['step']} (kept)**" if h["step"] == kept_step else h["step"]
        rows.append([step, _fmt(h.get("epoch"), 2), *[h.get(m) for m in metrics]])
    lines = _table(["step", "epoch", *metrics], rows)
    lines += ["", "Validation lists chose the checkpoint; they are not held out. The model "
                  + ("**improved**" if record.get("improved") else "**did not improve**")
                  + f" on the base there ({metrics[0]})."]
    fz = record.get("fusion") or {}
    if "systems" in fz:
        v = {k: m.get(metrics[0]) for k, m in fz["systems"].items()}
        w = ", ".join(f"{k} {x:g}" for k, x in (fz.get("weights", {}).get("fusion") or {}).items())
        hw = ", ".join(f"{k} {x:g}" for k, x in (fz.get("weights", {}).get("hybrid") or {}).items())
        lines += ["", f"Fusion on the same lists ({metrics[0]}): cross-encoder alone {_fmt(v.get('cross-encoder'))}, "
                      f"fused ({w}) {_fmt(v.get('fusion'))}, training-free hybrid ({hw}) {_fmt(v.get('hybrid'))}: "
                      + ("the fusion ships with the model (`finerank.json`)." if record.get("fusion_saved")
                         else "the fusion did not win and is not used.")]
    dep = record.get("query_dependence")
    if dep:
        corr = "n/a" if dep.get("rank_correlation") is None else f"{dep['rank_correlation']:.2f}"
        lines += ["", f"Query dependence on validation ({dep.get('lists')} lists, each also scored under another "
                      f"list's query text): {metrics[0]} {_fmt(dep.get(metrics[0]))}, under a wrong query "
                      f"{_fmt(dep.get(metrics[0] + '_wrong_query'))}, rank correlation {corr} (1: the query changes "
                      "nothing)."]
    if record.get("warnings"):
        lines += ["", "Warnings during training:", ""] + [f"- {md_escape(w)}" for w in record["warnings"]]
    return lines


def _bi_name(name: str | None) -> str:
    name = name or OFFLINE_BACKBONE
    return HUB_IDS.get(name, name)


def fusion_box(spec: FusionSpec, record: dict | None = None) -> list[str]:
    """The warning for a model saved with a fusion: what ``CrossEncoder(path)`` gives vs the shipped score, and
    the exact formula (:func:`finerank.retrieval.hybrid.fuse`) with the saved weights."""
    w = {k: float(v) for k, v in spec.weights.items() if v}
    v = ((record or {}).get("fusion") or {}).get("systems") or (spec.tuned_on or {}).get("systems") or {}
    m = DEFAULT_METRICS[0]
    numbers = (f" On the validation queries {m} was {_fmt(v['cross-encoder'].get(m))} for the cross-encoder alone "
               f"and {_fmt(v['fusion'].get(m))} for the shipped fusion (held-out numbers: the evaluation below)."
               if "cross-encoder" in v and "fusion" in v else "")
    terms = " + ".join(f"{x:g} · z({k})" for k, x in w.items())
    what = {"ce": "`CrossEncoder(path).predict` of (query, document)",
            "bm25": "the first stage's (BM25) score that came with the candidate",
            "bi": f"the cosine of the normalized {md_code(_bi_name(spec.bi_encoder))} embeddings of query and document"}
    code = ["import numpy as np", "from sentence_transformers import CrossEncoder, SentenceTransformer", "",
            'ce = CrossEncoder("PATH")  # this folder']
    if "bi" in w:
        code.append(f"bi = SentenceTransformer({json.dumps(_bi_name(spec.bi_encoder))})")  # a literal on one line
    code += ["", "def z(x):  # within one query's candidate list", "    x = np.asarray(x, dtype=float)",
             "    return (x - x.mean()) / x.std() if x.std() > 1e-12 else np.zeros_like(x)", "",
             "def shipped_scores(query, docs, bm25):  # one query's whole candidate list; higher is better",
             "    signals = {\"ce\": ce.predict([(query, d) for d in docs])}"]
    if "bm25" in w:
        code.append("    signals[\"bm25\"] = bm25")
    if "bi" in w:
        code += ["    q = bi.encode([query], normalize_embeddings=True)",
                 "    signals[\"bi\"] = (bi.encode(docs, normalize_embeddings=True) @ q.T).ravel()"]
    code.append(f"    return sum(w * z(signals[k]) for k, w in {w!r}.items())")
    box = [f"**Warning: this model ships with a score fusion, and `CrossEncoder(path)` alone does not give it.** "
           f"`CrossEncoder(path).predict` returns the fine-tuned cross-encoder's own score.{numbers}",
           "",
           f"The shipped score, for each query's candidate list (weights in `{SPEC_FILE}`):",
           "",
           f"    score = {terms}",
           "",
           "where z(x) = (x − mean) / std over the documents of that one list (population std; all zeros when the "
           "list's values are equal), and " + "; ".join(f"**{k}** is {what[k]}" for k in w) + ". "
           "The fused score ranks documents within a list; it is no probability and not comparable across queries.",
           "",
           "To get it: `finerank.Reranker(path).rerank(query, docs, first_stage=bm25_scores)` (or "
           "`.score_candidates(candidates)`), `finerank rerank --model path ...`, `finerank serve --model path` "
           "(`POST /rerank` with `scores`: the first-stage scores), or this, which is the same formula"
           + (" when BM25 scores are sent" if "bm25" in w else "") + ":",
           "", "```python", *code, "```", "",
           "(For documents longer than the model's max_length finerank scores overlapping windows and keeps the "
           "best; `CrossEncoder.predict` truncates. Without BM25 scores finerank drops that term and warns.)"]
    return ["> " + line if line else ">" for line in box]


def _usage_lines(path_hint: str, fused: bool) -> list[str]:
    lines = ["```python", "from sentence_transformers import CrossEncoder", "",
             f'model = CrossEncoder("{path_hint}")',
             'scores = model.predict([("query", "a document"), ("query", "another document")])', "```", ""]
    if fused:
        lines = ["The cross-encoder alone (see the warning above for the shipped, fused score):", ""] + lines
    lines += ["With finerank (applies the saved fusion, windows long documents):", "", "```python",
              "import finerank as fr", "", f'reranker = fr.Reranker("{path_hint}")',
              'ranked = reranker.rerank("query", ["doc one", "doc two"]'
              + (", first_stage=[12.3, 9.8])  # first-stage (BM25) scores" if fused else ")"), "```"]
    return lines


def render_card(model_dir: str | Path, record: dict) -> str:
    """The whole card of ``model_dir`` from a run record (``finerank-run.json``); the evaluation section says
    none has run yet."""
    model_dir = Path(model_dir)
    cfg = record.get("config") or {}
    base = base_model(str(cfg.get("model", "")))
    if record.get("arch") == "bi-encoder":
        return render_bi_card(model_dir, record, base)
    spec = FusionSpec.load(model_dir)
    lines = [front_matter(base).rstrip("\n"), "", MARK, "",
             f"# {md_escape(model_dir.parent.name if model_dir.name == BEST else model_dir.name)}: a fine-tuned "
             "cross-encoder reranker", "",
             f"A cross-encoder reranker fine-tuned with finerank {record.get('finerank_version') or ''} "
             "(sentence-transformers' CrossEncoderTrainer). It scores (query, document) pairs; higher is more "
             "relevant.", ""]
    if spec is not None:
        lines += fusion_box(spec, record) + [""]
    lines += ["## Base model", "", *_base_lines(base), "",
              "## Training data", "", *_data_lines(record), "",
              "## Recipe", "", *_recipe_lines(record), "",
              "## Validation history", "", *_history_lines(record), "",
              "## Evaluation", "", EVAL_START, NOT_EVALUATED, EVAL_END, "",
              "## Usage", "", *_usage_lines("PATH_OR_HUB_ID", spec is not None), "",
              "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in (record.get("versions") or {}).items() if v]
    lines += [f"- python: {record['python']}"] if record.get("python") else []
    return "\n".join(lines) + "\n"


def _bi_data_lines(record: dict) -> list[str]:
    data = record.get("data") or {}
    train = data.get("train") or {}
    t = train.get("triplets") or {}
    val = data.get("val")
    rows = [["train", md_code(Path(train.get('path', '')).name), md_code(train.get('sha256')), train.get("pairs"),
             train.get("queries"), ""]]
    if val:
        rows.append(["val", md_code(Path(val['path']).name), md_code(val['sha256']), val["pairs"], val["queries"],
                     md_escape(val.get("candidates", ""))])
    lines = _table(["split", "file", "sha256", "pairs", "queries", "validation lists"], rows)
    lines += ["", f"Training rows: {t.get('rows')} (query, relevant document, negative) triplets, one a pair with a "
                  "label above 0, its negative one of the query's label-0 pairs"
                  + (f" ({t['borrowed_negatives']} queries without one borrowed another query's)"
                     if t.get("borrowed_negatives") else "")
                  + "; every other document of a batch is an in-batch negative (MultipleNegativesRankingLoss), and "
                    "no batch holds a document relevant to another of its queries."]
    return lines


def _bi_result_lines(record: dict) -> list[str]:
    lines = []
    r = record.get("retrieval") or {}
    if r.get("base") and r.get("best"):
        lines += [f"Dense retrieval of the {r.get('queries')} validation queries over all {r.get('documents')} "
                  "documents of the validation corpus:", ""]
        lines += _table(["model", *r["best"]], [["base", *r["base"].values()], ["this model", *r["best"].values()]])
    h = record.get("hybrid") or {}
    if h.get("base") and h.get("best"):
        w = {k: (h[k].get("weights") or {}).get("bm25") for k in ("base", "best")}
        lines += ["", f"The training-free hybrid with BM25 on the validation lists (z-scored, BM25's weight tuned "
                      f"there): with the base {_fmt(h['base'].get('nDCG@10'))} (BM25 {_fmt(w['base'], 2)}), with this "
                      f"model {_fmt(h['best'].get('nDCG@10'))} (BM25 {_fmt(w['best'], 2)}), nDCG@10."]
    return lines


def render_bi_card(model_dir: Path, record: dict, base: dict) -> str:
    """The card of a bi-encoder run's ``best/`` (``train --arch bi-encoder``)."""
    name = model_dir.parent.name if model_dir.name == BEST else model_dir.name
    lines = [front_matter(base, bi_encoder=True).rstrip("\n"), "", MARK, "",
             f"# {md_escape(name)}: a fine-tuned embedding model (bi-encoder)", "",
             f"An embedding model fine-tuned with finerank {record.get('finerank_version') or ''} "
             "(sentence-transformers' SentenceTransformerTrainer) as the first stage of a search: queries and "
             "documents are embedded apart and ranked by cosine similarity.", "",
             "## Base model", "", *_base_lines(base)[:1], "",
             "## Training data", "", *_bi_data_lines(record), "",
             "## Recipe", "", *_recipe_lines(record), "",
             "## Validation history", "", *_history_lines(record), "", *_bi_result_lines(record), "",
             "## Evaluation", "", EVAL_START, NOT_EVALUATED.replace("--model THIS_FOLDER", "--bi-encoder-tuned "
                                                                     "THIS_FOLDER --model A_RERANKER"), EVAL_END, "",
             "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             'model = SentenceTransformer("PATH_OR_HUB_ID")',
             'scores = model.similarity(model.encode(["query"]), model.encode(["doc one", "doc two"]))', "```", "",
             "With finerank: `finerank data candidates CORPUS --retriever hybrid:PATH` (BM25 + this model), "
             "`finerank evaluate --bi-encoder-tuned PATH ...`.", "",
             "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in (record.get("versions") or {}).items() if v]
    lines += [f"- python: {record['python']}"] if record.get("python") else []
    return "\n".join(lines) + "\n"


def write_card(model_dir: str | Path, record: dict) -> Path:
    """Write ``model_dir/README.md`` (atomically, over sentence-transformers' card)."""
    path = Path(model_dir) / CARD
    with atomic_write(path) as f:
        f.write(render_card(model_dir, record))
    return path


# ---------------------------------------------------------------------------------------------- evaluation
def finerank_model_dir(model: str) -> Path | None:
    """The folder of a local model whose card finerank writes (its card carries :data:`MARK`, or it is a run's
    ``best/`` with the run record beside it: a card is then written from the record); None otherwise."""
    try:
        path = Path(resolve_model(model))
    except Exception:  # noqa: BLE001 - not a local model
        return None
    if not path.is_dir():
        return None
    card = path / CARD
    if card.exists() and MARK in card.read_text(encoding="utf-8", errors="replace").splitlines():
        return path
    record = path.parent / RUN_RECORD
    if path.name == BEST and record.exists():
        write_card(path, json.loads(record.read_text()))
        return path
    return None


def _role(s, model_dir: Path) -> str:
    """What system ``s`` is of the model in ``model_dir``, from its scorer's ``describe()``."""
    about = s.scorer or {}
    kind = about.get("kind")
    if kind == "hybrid":
        return f"this model with BM25 (z-scored, BM25's weight {about.get('weight'):g})"
    if kind == "bi-encoder":
        return "this model alone"
    if kind == "cross-encoder" and FusionSpec.load(model_dir) is not None:
        return "this model's cross-encoder alone (what `CrossEncoder(path)` gives)"
    return "this model as shipped" + (" (with its fusion)" if "fusion" in about else "")


def evaluation_section(report, systems: list, table: str, notes: list[str], model_dir: Path) -> str:
    """The card's evaluation section of the model in ``model_dir``: the dataset, which rows are this model, the
    comparison table and its notes. ``report`` is an evaluation's report object
    (:class:`finerank.evaluation.evaluate.EvaluationReport`); ``systems`` the rows that are this model."""
    src = report.dataset.split(" + ")[0]
    read = getattr(report.candidates, "sha256", None)  # the bytes evaluated, hashed as they were read
    digest = f"sha256 `{(read or file_sha256(src))[:16]}`, " if read or Path(src).is_file() else ""
    which = [f"{md_code(s.name)} is {_role(s, model_dir)}" for s in systems]
    lines = [f"Latest `finerank evaluate`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{md_code(Path(src).name)} ({digest}{report.queries} queries, {report.pairs} candidate pairs"
             + (f"; judgments: {md_escape(report.dataset.split(' + ', 1)[1])}" if " + " in report.dataset else "")
             + "). "
             + "; ".join(which) + ".", "", table]
    for note in notes:
        lines += ["", note]
    if report.out_dir:
        lines += ["", f"Full report (per query, plots): {md_code(Path(report.out_dir) / 'report.html')} where it was "
                      "run."]
    return "\n".join(lines)


def _marker_lines(lines: list[str]) -> tuple[int, int] | None:
    """The line numbers of the evaluation section's markers, each a whole line of its own (a name in the card is
    escaped and on a line with other text, so no data can forge one); None when the card has no such section."""
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r") == EVAL_START]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r") == EVAL_END and starts and i > starts[0]]
    return (starts[0], ends[0]) if starts and ends else None


def update_evaluation(model_dir: str | Path, section: str) -> Path:
    """Replace the evaluation section of ``model_dir``'s finerank card with ``section`` (atomically); a card
    without one (a start marker line, an end marker line after it) gets one at its end."""
    path = Path(model_dir) / CARD
    lines = path.read_text(encoding="utf-8").split("\n")
    found = _marker_lines(lines)
    if found is not None:
        head, tail = lines[:found[0]], lines[found[1] + 1:]
    else:
        head, tail = "\n".join(lines).rstrip("\n").split("\n") + ["", "## Evaluation", ""], [""]
    with atomic_write(path) as f:
        f.write("\n".join([*head, EVAL_START, section.strip(), EVAL_END, *tail]))
    return path


def update_cards(report, log=print) -> list[Path]:
    """Put ``report``'s results (an evaluation's report object: its table and notes) into the card of each local
    finerank model it evaluated; the card paths. The explicit step that writes an evaluation into cards."""
    table, notes = render_markdown_table(report), report_notes(report)
    dirs: dict[Path, list] = {}
    for s in report.systems:  # the model a system names (its scorer's describe()): a hybrid's is its bi-encoder
        if (model := (s.scorer or {}).get("model")) and (d := finerank_model_dir(model)) is not None:
            dirs.setdefault(d, []).append(s)
    done = []
    for d, systems in dirs.items():
        done.append(update_evaluation(d, evaluation_section(report, systems, table, notes, d)))
        log(f"model card updated: {done[-1]}")
    return done
