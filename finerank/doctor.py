"""``finerank doctor``: the versions, paths and devices in use, and whether a model loads.

Version mismatch and environment drift are the usual reasons a training run that worked yesterday fails today;
this is the one command whose output answers them.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field

from .core.environment import distributed_env, versions
from .core.errors import FinerankError
from .io.models import load_cross_encoder, resolve_model


@dataclass
class DoctorReport:
    python: str
    executable: str
    virtualenv: str | None
    platform: str
    versions: dict[str, str | None]
    devices: dict
    hf_cache: str
    hf_offline: bool
    model: dict | None = None
    warnings: list[str] = field(default_factory=list)
    distributed: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _major(v: str | None) -> tuple[int, int]:
    if not v:
        return (0, 0)
    parts = (v.split("+")[0].split(".") + ["0"])[:2]
    return tuple(int("".join(c for c in x if c.isdigit()) or 0) for x in parts)  # type: ignore[return-value]


def _devices() -> dict:
    out: dict = {"cpu_threads": os.cpu_count()}
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.cuda.is_available()
        out["cuda_version"] = torch.version.cuda
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if out["cuda"] else []
        mps = getattr(torch.backends, "mps", None)
        out["mps"] = bool(mps and mps.is_available())
    except ImportError:
        out["torch"] = "not installed"
    return out


def doctor(model: str | None = None) -> DoctorReport:
    from huggingface_hub import constants

    found = versions()
    report = DoctorReport(
        python=platform.python_version(),
        executable=sys.executable,
        virtualenv=os.environ.get("VIRTUAL_ENV") or (sys.prefix if sys.prefix != sys.base_prefix else None),
        platform=platform.platform(),
        versions=found,
        devices=_devices(),
        hf_cache=str(constants.HF_HUB_CACHE),
        hf_offline=bool(constants.HF_HUB_OFFLINE),
        distributed=distributed_env(),
    )
    w = report.warnings
    if found["sentence-transformers"] is None:
        w.append("sentence-transformers is not installed: pip install 'sentence-transformers[train]>=6'")
    elif _major(found["sentence-transformers"]) < (4, 0):
        w.append(f"sentence-transformers {found['sentence-transformers']} has no CrossEncoderTrainer: "
                 "finerank needs >= 6")
    elif _major(found["sentence-transformers"]) < (6, 0):
        w.append(f"sentence-transformers {found['sentence-transformers']} is older than the >= 6 finerank is tested with")
    if found["transformers"] and _major(found["transformers"]) < (4, 41):
        w.append(f"transformers {found['transformers']} predates eval_strategy; upgrade transformers")
    if found["torch"] is None:
        w.append("torch is not installed: pip install torch")
    if found["accelerate"] is None:
        w.append("accelerate is missing: CrossEncoderTrainer needs it (pip install accelerate)")
    d = report.distributed
    if d["world_size"] > 1 and d.get("backend") is None:
        w.append(f"launched as {d['world_size']} processes, but this torch has no distributed backend "
                 "(gloo, nccl or mpi): install a torch build with torch.distributed")
    if model:
        report.model = check_model(model)
        if not report.model["loads"]:
            w.append(f"model '{model}' does not load: {report.model['error']}")
    return report


def check_model(model: str) -> dict:
    info: dict = {"name": model}
    try:
        info["resolves_to"] = resolve_model(model)
        ce = load_cross_encoder(model)
        score = ce.predict([("what is a wing", "a wing produces lift")], show_progress_bar=False)
        info.update(loads=True, max_length=ce.max_length, device=str(ce.device),
                    activation=type(ce.activation_fn).__name__, test_score=float(score[0]))
    except FinerankError as e:
        info.update(loads=False, error=str(e))
    except Exception as e:  # noqa: BLE001 - a diagnostic reports any failure to load, never a traceback
        info.update(loads=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    return info
