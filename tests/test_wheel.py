"""The wheel works outside the repository: `pip wheel .` builds it, it installs into a new virtual environment (its
dependencies taken from this one's site-packages, finerank itself only from the wheel), and from another folder
`finerank data candidates` (the embedded Cranfield), `finerank rerank` and `finerank serve` run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding the wheel of this checkout: its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("finerank-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):  # the demo's data travels in the wheel
        assert f"finerank/datasets/cranfield/{f}" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    # the dependencies: this venv's site-packages as a plain path (its .pth files, finerank's editable finder
    # among them, are not processed from there), so only the wheel provides finerank
    (site,) = (env / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    got = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                          "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    return env / "bin"


def _run(bin_: Path, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_ / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**env, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})


def test_the_wheel_is_what_runs(installed, tmp_path):
    where = _run(installed, "python", "-c", "import finerank; print(finerank.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout


def test_candidates_and_rerank_run_from_another_folder(installed, tiny_model, tmp_path):
    """The embedded Cranfield (package data), BM25 and a model, through the installed console script."""
    res = _run(installed, "finerank", "data", "candidates", "cranfield", "--top-k", "5", "--out", "cands.jsonl",
               cwd=tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert len((tmp_path / "cands.jsonl").read_text().splitlines()) == 225 * 5
    res = _run(installed, "finerank", "rerank", "--model", tiny_model, "--input", "cands.jsonl", "--output",
               "reranked.jsonl", "--top-k", "3", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "reranked.jsonl").read_text().splitlines()]
    assert len(rows) == 225 * 3 and len((tmp_path / "reranked.run").read_text().splitlines()) == 225 * 3


def test_serve_runs_from_another_folder(installed, tiny_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([str(installed / "finerank"), "serve", "--model", tiny_model, "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**env, "HF_HUB_OFFLINE": "1"})
    import httpx

    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/rerank", timeout=30,
                               json={"query": "wing flutter", "documents": ["flutter of wings", "heat transfer"]})
                body = r.json()
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert body is not None, proc.stdout.read().decode()[-3000:] if proc.poll() is not None else "no answer"
        assert sorted(x["index"] for x in body["results"]) == [0, 1], json.dumps(body)
    finally:
        proc.terminate()
        proc.wait(30)
