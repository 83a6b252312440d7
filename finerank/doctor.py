"""``finerank doctor``: the versions, paths and devices in use, and whether a model loads.

Version mismatch and environment drift are the usual reasons a training run that worked yesterday fails today;
this is the one command whose output answers them.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata

from .errors import FinerankError
from .models import load_cross_encoder, resolve_model

PACKAGES = ("finerank", "torch", "transformers", "sentence-transformers", "tokenizers", "datasets", "accelerate",
            "bm25s", "ir-measures", "optimum", "onnx", "onnxruntime", "fastapi", "uvicorn")
CORE_PACKAGES = PACKAGES[:8]  # what a run record and an evaluation report name


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


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(packages=PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None where missing): the one place finerank reads them, for doctor, the
    run record, evaluation reports and export metadata."""
    return {p: _version(p) for p in packages}


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


# what mpirun sets instead of torchrun's WORLD_SIZE / RANK / LOCAL_RANK (Intel MPI, Open MPI, MVAPICH), as accelerate
# reads them for multi-CPU runs
_MPI_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_MPI_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_MPI_LOCAL_RANK = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")


def distributed_env() -> dict:
    """The distributed environment this process sees: world size, rank and local rank as the launcher set them
    (1, 0, 0 without one), which launcher, the rendezvous address, the ``torch.distributed`` backends this torch
    build has, and the backend a training run would use (NCCL on CUDA GPUs, gloo on CPUs). Reads the environment
    only; no process group is started."""
    env = os.environ

    def first(names: tuple[str, ...], default: int) -> int:
        return next((int(env[n]) for n in names if env.get(n)), default)

    mpi = any(env.get(n) for n in _MPI_SIZE)
    out: dict = {
        "world_size": first(("WORLD_SIZE", *_MPI_SIZE), 1),
        "rank": first(("RANK", *_MPI_RANK), 0),
        "local_rank": first(("LOCAL_RANK", *_MPI_LOCAL_RANK), 0),
        "launcher": ("accelerate" if any(k.startswith("ACCELERATE_") for k in env) and ("WORLD_SIZE" in env or mpi)
                     else "torchrun" if "TORCHELASTIC_RUN_ID" in env else "mpirun" if mpi else None),
        "master": f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT', '')}" if env.get("MASTER_ADDR") else None,
    }
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return {**out, "available": False, "backends": {}, "backend": None}
    available = dist.is_available()
    out["available"] = available
    out["backends"] = {name: bool(available and getattr(dist, f"is_{name}_available")())
                       for name in ("gloo", "nccl", "mpi")}
    cuda = torch.cuda.is_available()
    out["backend"] = ("nccl" if cuda and out["backends"]["nccl"] else "gloo" if out["backends"]["gloo"] else
                      "mpi" if out["backends"]["mpi"] else None)
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
