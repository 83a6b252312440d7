"""Export a cross-encoder to ONNX (optionally int8-quantized) and check the export against the original.

Why not sentence-transformers' ONNX/OpenVINO backends (optimum): ``sentence-transformers[onnx]`` needs
``optimum-onnx``, whose only release (0.1.0) pins ``transformers<4.58``; installed anyway (``--no-deps``) beside
transformers 5 it fails on import (``cannot import name 'is_offline_mode' from 'transformers.utils'``), so
``CrossEncoder(..., backend="onnx")`` and ``export_dynamic_quantized_onnx_model`` cannot run with the
sentence-transformers >= 6 that finerank trains with. OpenVINO's ``optimum-intel`` (2.2) needs
``transformers<5.6``, ``huggingface-hub<1.22`` and torchvision: out as well.

So the export uses the standard tools optimum itself wraps, one step each:

1. ``torch.onnx.export`` (the TorchScript exporter) of the transformers model's logits, with eager attention so
   that the graph has the attention pattern onnxruntime recognises (dynamic batch and sequence axes);
2. ``onnxruntime.transformers.optimizer.optimize_model``: fuses attention, LayerNorm and GELU (BERT-like models);
3. with ``quantize="int8"``, ``onnxruntime.quantization.quantize_dynamic``: int8 weights (symmetric, per channel),
   activations quantized on the fly, the settings of sentence-transformers' ``avx512_vnni`` preset.

The folder written holds ``onnx/model.onnx`` (or ``onnx/model_int8.onnx``), the tokenizer, ``config.json``,
``export.json`` (what was done, the check, and ``files``: the manifest of what the export wrote, the only files a
later export into the same folder removes) and the source's ``finerank.json`` when it has one.
``Reranker(folder)`` and ``finerank serve --model folder`` run it with onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..scorers.backends import EXPORT_FILE, activation_of
from ..data.candidates import Candidates
from ..core.environment import versions
from ..core.errors import FinerankError, OutputError
from ..scorers.spec import SPEC_FILE
from ..io.collection import load
from ..io.outputs import check_output_folder
from ..core.metrics import aggregate
from ..io.models import load_cross_encoder, resolve_model
from ..scorers.cross_encoder import Reranker

EXPORT_PACKAGES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime")

FORMATS = ("onnx", "openvino")
QUANTIZE = ("int8",)
FUSABLE = {"bert", "roberta", "xlm-roberta", "electra", "camembert", "distilbert", "mpnet"}
DEFAULT_VALIDATION = "cranfield"
OPENVINO_WHY = ("OpenVINO export needs optimum-intel, whose releases require transformers<5.6, "
                "huggingface-hub<1.22 and torchvision, which cannot be installed beside sentence-transformers>=6")


@dataclass
class ExportReport:
    """What ``export`` wrote and how the exported model compares with the original on the validation set."""

    out: str
    file: str
    format: str
    quantize: str | None
    size_mb: float
    fused: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _activation(ce) -> str:
    name = activation_of(ce)
    if name is not None:
        return name
    raise FinerankError(f"the model's activation {type(ce.activation_fn).__name__} is not supported by the export",
                        hint="export models whose activation is Sigmoid or Identity (sentence-transformers' defaults)")


def _onnx_export(ce, path: Path, opset: int) -> list[str]:
    """Export the logits of ``ce``'s transformers model to ``path``; returns the input names."""
    import torch

    hf = ce.transformers_model
    hf.eval()
    try:  # eager attention exports the pattern that onnxruntime's optimizer fuses into one Attention op
        hf.set_attn_implementation("eager")
    except Exception:  # noqa: BLE001 - a model without the choice keeps its own attention
        pass
    tok = ce.tokenizer
    enc = tok(["a short query", "another query"], ["a document of a few words", "a second document"],
              padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors))).logits

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(hf), tuple(enc[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return names


def _optimize(src: Path, dst: Path, config) -> dict:
    """Fuse the graph with onnxruntime's transformer optimizer; returns the fused operator counts ({} if skipped)."""
    if getattr(config, "model_type", None) not in FUSABLE:
        shutil.copyfile(src, dst)
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    heads = getattr(config, "num_attention_heads", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    try:
        model = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden)
    except Exception as e:  # noqa: BLE001 - an unfusable graph still exports, unfused
        warnings.warn(f"onnxruntime's optimizer failed ({type(e).__name__}: {e}); the graph is kept unfused")
        shutil.copyfile(src, dst)
        return {}
    model.save_model_to_file(str(dst))
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


class _NoPreprocessAdvice(logging.Filter):
    """quantize_dynamic advises shape-inference pre-processing, which fused contrib ops do not go through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _NoPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                         extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                        # fused ops (Attention, SkipLayerNorm) are outside ONNX shape inference
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(quiet)


def _manifest_files(folder: Path) -> list[str]:
    """Every file under ``folder``, relative to it (the export's manifest lists what the export wrote)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _earlier_export(out: Path) -> list[str] | None:
    """What an earlier export in ``out`` wrote, from its manifest (``files`` in export.json); [] for an empty
    folder, None for a new path. Anything else is refused before any work: a file, a folder that is not an
    export, a manifest without ``files`` (an export made before finerank kept one), or an entry the manifest does
    not list (a note, a FIFO, a link, a subfolder): the export replaces only what it wrote, never what it did not."""
    if not os.path.lexists(out):
        return None
    hint = "give a new folder, or an earlier export folder to replace"
    if out.is_symlink():
        raise OutputError(out, "is a symbolic link", hint="give the folder it points to, or a new folder")
    if not out.is_dir():
        raise OutputError(out, "exists and is not a folder", hint=hint)
    if not any(out.iterdir()):
        return []
    manifest = out / EXPORT_FILE
    try:
        regular = stat.S_ISREG(os.lstat(manifest).st_mode)
    except FileNotFoundError:
        regular = False
    if not regular:
        raise OutputError(out, "exists and is not an earlier export", hint=hint)
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if not isinstance(files, list) or not files or not all(
            isinstance(f, str) and f and not Path(f).is_absolute() and ".." not in Path(f).parts
            and Path(f).as_posix() == f for f in files):
        raise OutputError(out, f"its {EXPORT_FILE} has no 'files' list (the manifest of what an export wrote), so "
                          "finerank cannot tell its files from yours", hint="give a new folder, or empty this one "
                          "yourself (exports made before the manifest have none)")
    listed = set(files)
    dirs = {p.as_posix() for f in files for p in Path(f).parents if p != Path(".")}
    foreign = []
    for root, subdirs, names in os.walk(out):
        rel = Path(root).relative_to(out)
        for name in sorted(subdirs + names):
            r = (rel / name).as_posix()
            mode = os.lstat(Path(root) / name).st_mode
            if not ((stat.S_ISDIR(mode) and r in dirs) or (stat.S_ISREG(mode) and r in listed)):
                foreign.append(r)
        subdirs[:] = [d for d in subdirs if (rel / d).as_posix() in dirs and not (Path(root) / d).is_symlink()]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(out, f"holds what is not a file its {EXPORT_FILE} lists ({shown}): an export "
                          "replaces only the files an earlier export wrote",
                          hint="move those out, or give a new folder")
    return files


def _remove_listed(folder: Path, files: list[str]) -> bool:
    """Delete the regular files ``files`` lists under ``folder``, then the folders they leave empty; whatever else
    is there stays. Returns whether ``folder`` is gone."""
    for f in files:
        p = folder / f
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(p).st_mode):
                p.unlink()
    parents = {folder} | {q for f in files for q in (folder / f).parents if folder in q.parents}
    for d in sorted(parents, key=lambda q: len(q.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only an empty folder goes
    return not os.path.lexists(folder)


def _not_an_input(out: Path, model, validation) -> None:
    """The export folder is written beside ``out`` and renamed over it: it must not be, hold, or lie inside the
    model or the validation data it reads."""
    real = check_output_folder(out)
    for what, given in (("--model", model), ("--validation", validation)):
        if not isinstance(given, (str, os.PathLike)):
            continue
        p = Path(resolve_model(given)) if what == "--model" and Path(str(given)).exists() else Path(str(given))
        if not p.exists():
            continue
        src = p.resolve()
        if src == real or real in src.parents or src in real.parents:
            raise OutputError(out, f"overlaps the input {what} {given}: replacing the folder would destroy it",
                              hint="give the export a folder of its own")


def export(model, out, *, format: str = "onnx", quantize: str | None = None, validation=DEFAULT_VALIDATION,
           max_queries: int = 30, opset: int = 17, log=print) -> ExportReport:
    """Export ``model`` (a name or path, see :mod:`finerank.io.models`) to ``out`` and check it on ``validation``
    (a labeled pairs file or collection; None skips the check). The folder is complete or absent: it is written
    beside ``out`` and renamed into place."""
    if format == "openvino":
        raise FinerankError(OPENVINO_WHY, hint="use --format onnx (with --quantize int8 for speed)")
    if format not in FORMATS:
        raise FinerankError(f"unknown export format '{format}'", hint="use --format onnx")
    if quantize is not None and quantize not in QUANTIZE:
        raise FinerankError(f"unknown quantization '{quantize}'", hint="use --quantize int8, or leave it out")
    if validation is not None and (isinstance(max_queries, bool) or not isinstance(max_queries, int)
                                   or max_queries < 1):
        raise FinerankError(f"max_queries must be a whole number of at least 1, got {max_queries!r}",
                            hint="--max-queries N checks the export on N validation queries; --no-check skips it")
    out = Path(out)
    earlier = _earlier_export(out)
    _not_an_input(out, model, validation)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise FinerankError("export needs onnx and onnxruntime", hint="pip install 'finerank[export]'") from None
    source = resolve_model(model)
    ce = load_cross_encoder(str(model), device="cpu")  # a fresh copy: the export switches its attention to eager
    activation = _activation(ce)
    max_length = int(ce.max_seq_length or ce.tokenizer.model_max_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        (tmp / "onnx").mkdir()
        t0 = time.perf_counter()
        log(f"exporting {source} to ONNX (torch.onnx.export, opset {opset})")
        raw = tmp / "raw.onnx"
        names = _onnx_export(ce, raw, opset)
        fused_path = tmp / "onnx" / "model.onnx"
        fused = _optimize(raw, fused_path, ce.transformers_model.config)
        raw.unlink()
        log("fused: " + (", ".join(f"{k} {v}" for k, v in fused.items()) or "nothing (not a BERT-like graph)"))
        file = "onnx/model.onnx"
        if quantize == "int8":
            log("quantizing to int8 (dynamic, per channel)")
            _quantize(fused_path, tmp / "onnx" / "model_int8.onnx")
            fused_path.unlink()
            file = "onnx/model_int8.onnx"
        ce.tokenizer.save_pretrained(str(tmp))
        ce.transformers_model.config.save_pretrained(str(tmp))
        if Path(source).is_dir() and (Path(source) / SPEC_FILE).exists():
            shutil.copyfile(Path(source) / SPEC_FILE, tmp / SPEC_FILE)
        files = sorted(set(_manifest_files(tmp)) | {EXPORT_FILE})
        meta = {"format": format, "file": file, "files": files, "quantize": quantize, "max_length": max_length,
                "activation": activation, "inputs": names, "source": source, "opset": opset,
                "exporter": "torch.onnx.export (TorchScript) + onnxruntime optimizer"
                            + (" + quantize_dynamic" if quantize else ""),
                "fused": fused, "versions": versions(EXPORT_PACKAGES), "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        del ce
        check = {}
        if validation is not None:
            check = check_export(model, tmp, validation, max_queries=max_queries, log=log)
            meta["check"] = check
            (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if earlier is not None:  # an empty folder or an earlier export: swapped, then only its listed files go
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            if not _remove_listed(old, earlier):
                log(f"kept {old}: it holds files the earlier export did not write")
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = (out / file).stat().st_size / 2**20
    return ExportReport(str(out), file, format, quantize, round(size, 1), fused, check)


def validation_lists(validation, max_queries: int) -> Candidates:
    """The first ``max_queries`` queries of a labeled pairs file or collection, as candidate lists."""
    ds = load(validation)
    groups = ds.by_query()
    qids = list(groups)[:max_queries]
    cands = Candidates.from_pairs([p for q in qids for p in groups[q]], ds.source)
    if not any(g > 0 for docs in cands.qrels.values() for g in docs.values()):
        raise FinerankError(f"{validation}: the validation pairs have no positive label",
                            hint="give labeled pairs (query, document, label) with some label > 0")
    return cands


def _timed_run(reranker: Reranker, cands: Candidates) -> tuple[dict, float]:
    """The run and its seconds, after a warm-up on a few pairs."""
    reranker.score([(qt, dt) for _, _, qt, dt in cands.flat()[:8]])
    t0 = time.perf_counter()
    run = reranker.score_candidates(cands)
    return run, time.perf_counter() - t0


def check_export(original, exported, validation=DEFAULT_VALIDATION, *, max_queries: int = 30,
                 batch_size: int = 32, log=print) -> dict:
    """Rerank the validation lists with the original and the exported model, both through
    :meth:`Reranker.score_candidates`: nDCG@10 and pairs per second of each, the speed ratio (exported / original),
    the share of nDCG@10 kept and the largest score difference."""
    import numpy as np

    cands = validation_lists(validation, max_queries)
    log(f"checking the export on {cands.n_pairs} pairs of {len(cands.qrels)} queries from {cands.source}")
    runs, out = {}, {"validation": cands.source, "queries": len(cands.qrels), "pairs": cands.n_pairs}
    for name, model in (("original", original), ("exported", exported)):
        runs[name], secs = _timed_run(Reranker(model, batch_size=batch_size), cands)
        out[name] = {"nDCG@10": round(aggregate(cands.qrels, runs[name], ["nDCG@10"])["nDCG@10"], 4),
                     "pairs_per_second": round(cands.n_pairs / secs, 1), "seconds": secs}
    a, b = out["original"], out["exported"]
    diffs = [abs(runs["original"][q][d] - runs["exported"][q][d]) for q, d, _, _ in cands.flat()]
    out.update(kept={"nDCG@10": round(b["nDCG@10"] / a["nDCG@10"], 4) if a["nDCG@10"] else None},
               speed_ratio=round(a.pop("seconds") / b.pop("seconds"), 2), max_abs_score_diff=float(np.max(diffs)))
    return out
