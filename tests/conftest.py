"""Shared fixtures: tiny random models (a cross-encoder and a bi-encoder, each loads in a second), the shared
collections, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def shared(name: str) -> Path:
    """A collection from ../shared/data, or skip with the reason (a user's clone has no ../shared)."""
    path = SHARED / name
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"../shared/data/{name} is absent (only the project's own machines have it)")
    return path


def _tiny_bert(out: Path, cls_name: str, **config) -> None:
    """Save a tiny random BERT (transformers class ``cls_name``) with the all-MiniLM-L6-v2 tokenizer in ``out``."""
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig

    from finerank.io.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, **config)
    getattr(transformers, cls_name)(cfg).save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random BERT cross-encoder, saved as a CrossEncoder folder."""
    from sentence_transformers import CrossEncoder

    out = tmp_path_factory.mktemp("tiny-ce")
    _tiny_bert(out, "BertForSequenceClassification", num_labels=1)
    ce = CrossEncoder(str(out), num_labels=1, max_length=128)
    ce.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="session")
def tiny_bi(tmp_path_factory) -> str:
    """A tiny random BERT with mean pooling, saved as a SentenceTransformer folder."""
    from sentence_transformers import SentenceTransformer, models

    raw = tmp_path_factory.mktemp("tiny-bert")
    _tiny_bert(raw, "BertModel")
    word = models.Transformer(str(raw), max_seq_length=64)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean")])
    out = tmp_path_factory.mktemp("tiny-bi")
    st.save(str(out))
    return str(out)


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m finerank ARGS`` as a user would, returning exit code and output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "finerank", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
