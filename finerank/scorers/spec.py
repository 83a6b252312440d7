"""``finerank.json``: what is saved beside a model to say how it scores, read by one validating reader.

The file is a JSON object; its optional keys are ``fusion`` (:class:`finerank.scorers.fused.FusionSpec`: the
weights of the cross-encoder, BM25 and a bi-encoder), ``cascade`` (:class:`finerank.scorers.cascade.CascadeSpec`:
a cheap stage's cut-offs) and ``calibration`` (:class:`finerank.scorers.calibration.Calibration`: the map of the
shipped score to P(relevant)), each a JSON object. An empty file, invalid JSON, an array or a part that is not an
object is a ModelError naming the file and the field (exit 2), and so is a key other than those three.
:func:`finerank.scorers.load.load_scorer` reads it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelError
from ..io.outputs import write_json

SPEC_FILE = "finerank.json"
PARTS = ("fusion", "cascade", "calibration")
_REDO = "restore the file, or delete it to use the model alone (fusion: train again; cascade: finerank cascade tune)"


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model's ``finerank.json`` (None: not saved); ``path`` is the file (None: no model folder)."""

    path: Path | None
    fusion: dict | None = None
    cascade: dict | None = None
    calibration: dict | None = None


def _read_object(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot be read ({e})", hint=_REDO) from None
    if not text.strip():
        raise ModelError(f"{path}: the file is empty, expected a JSON object", hint=_REDO)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ModelError(f"{path}: not valid JSON ({e})", hint=_REDO) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(data).__name__}", hint=_REDO)
    unknown = sorted(k for k in data if k not in PARTS)
    if unknown:
        raise ModelError(f"{path}: field '{unknown[0]}': not a part finerank saves, expected only "
                         f"{' and '.join(PARTS)}", hint=_REDO)
    for part in PARTS:
        value = data.get(part)
        if value is not None and not isinstance(value, dict):
            raise ModelError(f"{path}: field '{part}': got {json.dumps(value)[:60]}, expected a JSON object",
                             hint=_REDO)
    return data


def read_model_spec(folder) -> ModelSpec:
    """``folder/finerank.json`` checked and split into its parts; a folder without one (or no folder) has none."""
    if folder is None or not Path(folder).is_dir():
        return ModelSpec(None)
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        return ModelSpec(path)
    data = _read_object(path)
    return ModelSpec(path, data.get("fusion") or None, data.get("cascade") or None, data.get("calibration") or None)


def save_part(folder, part: str, value: dict | None) -> tuple[Path, bool]:
    """Write (or, with None, remove) one part of ``folder/finerank.json`` atomically, keeping every other key;
    returns the file and whether the part was there before."""
    path = Path(folder) / SPEC_FILE
    data = _read_object(path) if path.exists() else {}
    had = data.get(part) is not None
    if value is None:
        data.pop(part, None)
    else:
        data[part] = value
    write_json(path, data)
    return path, had
