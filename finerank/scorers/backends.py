"""What runs a cross-encoder: torch (a sentence-transformers ``CrossEncoder``) or onnxruntime (a folder written by
``finerank export``). A backend takes (query, text) inputs that fit its ``model_max_length`` and returns one score
an input.

The score scale, the same everywhere from checkpoint selection to fusion weights to serving: what
``CrossEncoder(path).predict`` returns for the input, that is the model's logit passed through the activation saved
with it (sigmoid after binary cross-entropy and for a fresh one-label head, sentence-transformers' default; none
after LambdaLoss). An ONNX export
records that activation in ``export.json`` and applies it, so the export scores on the same scale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.errors import FinerankError, ModelError
from ..io.models import load_cross_encoder, load_tokenizer, resolve_model

EXPORT_FILE = "export.json"  # written by finerank.serving.export beside the ONNX file


def activation_of(ce) -> str | None:
    """A CrossEncoder's saved activation: ``sigmoid``, ``identity`` (none), or None for any other."""
    import torch

    fn = ce.activation_fn
    if isinstance(fn, torch.nn.Sigmoid):
        return "sigmoid"
    if isinstance(fn, torch.nn.Identity) or fn is None:
        return "identity"
    return None


class TorchBackend:
    """A sentence-transformers CrossEncoder."""

    kind = "torch"

    def __init__(self, ce, source: str):
        self.ce = ce
        self.tokenizer = ce.tokenizer
        self.model_max_length = int(ce.max_seq_length or self.tokenizer.model_max_length or 512)
        self.source = source

    @property
    def activation(self) -> str | None:
        return activation_of(self.ce)

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        scores = self.ce.predict(pairs, batch_size=len(pairs), show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))


class OnnxBackend:
    """A model exported by :func:`finerank.serving.export.export`, run by onnxruntime."""

    kind = "onnx"

    def __init__(self, folder: Path, device: str | None = None):
        import onnxruntime as ort

        meta = read_export_meta(folder)
        self.meta = meta
        self.source = str(folder)
        self.tokenizer = load_tokenizer(str(folder))
        self.model_max_length = int(meta["max_length"])
        self.activation = meta.get("activation", "sigmoid")
        providers = ["CPUExecutionProvider"]
        if device and device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise FinerankError(f"device {device}: this onnxruntime has no CUDA provider",
                                    hint="pip install onnxruntime-gpu, or leave --device out to run on the CPU")
            providers.insert(0, "CUDAExecutionProvider")
        path = folder / meta["file"]
        if not path.exists():
            raise FinerankError(f"{path}: the exported model file is missing", hint="export the model again")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a damaged file
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {first})",
                             hint="the file is damaged or truncated: export the model again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        enc = self.tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True,
                             max_length=self.model_max_length, padding=True, return_tensors="np")
        feed = {name: np.asarray(enc[name], dtype=np.int64) for name in self.inputs}
        logits = self.session.run(None, feed)[0].reshape(len(pairs), -1)[:, 0].astype(np.float32)
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        return logits


ACTIVATIONS = ("sigmoid", "identity")


def read_export_meta(folder: Path) -> dict:
    """``export.json`` of an export folder, checked: a JSON object whose ``file`` names a file inside the folder,
    ``max_length`` a whole number >= 8 and ``activation`` (when given) sigmoid or identity. A ModelError naming the
    field otherwise."""
    path = Path(folder) / EXPORT_FILE
    redo = "the export folder is damaged or incomplete: export the model again (finerank export)"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})", hint=redo) from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(meta).__name__}", hint=redo)
    file = meta.get("file")
    if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in Path(file).parts:
        raise ModelError(f"{path}: field 'file': got {file!r}, expected the ONNX file's path inside the folder",
                         hint=redo)
    ml = meta.get("max_length")
    if isinstance(ml, bool) or not isinstance(ml, int) or ml < 8:
        raise ModelError(f"{path}: field 'max_length': got {ml!r}, expected a whole number of tokens >= 8", hint=redo)
    if meta.get("activation", "sigmoid") not in ACTIVATIONS:
        raise ModelError(f"{path}: field 'activation': got {meta.get('activation')!r}, expected "
                         f"{' or '.join(ACTIVATIONS)}", hint=redo)
    return meta


def is_export(path) -> bool:
    """Whether ``path`` is a folder written by ``finerank export``."""
    return (Path(path) / EXPORT_FILE).exists()


def load_backend(model, device: str | None = None, max_length: int | None = None):
    """A backend for a name or path (an export folder runs on onnxruntime, anything else on torch), a loaded
    ``CrossEncoder``, or a backend (returned as it is)."""
    if isinstance(model, (TorchBackend, OnnxBackend)):
        return model
    if not isinstance(model, (str, os.PathLike)):
        from sentence_transformers import CrossEncoder

        if isinstance(model, CrossEncoder):
            return TorchBackend(model, "CrossEncoder (in memory)")
        raise FinerankError(f"model: expected a name, a path or a CrossEncoder, got {type(model).__name__}")
    path = resolve_model(model)
    if is_export(path):  # an export runs on onnxruntime; sentence-transformers stays unloaded
        return OnnxBackend(Path(path), device)
    return TorchBackend(load_cross_encoder(str(model), device=device, max_length=max_length), path)
