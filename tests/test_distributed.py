"""finerank train under torchrun and accelerate launch (CPU, gloo, 2 processes): the run ends, rank 0 alone writes
and prints, every rank sees the same metrics, --resume continues a killed job, two "nodes" on 127.0.0.1 train as one.

Each run starts its processes with OMP_NUM_THREADS=1 (a 2-core machine holds 2 processes) and a free port on
127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import ROOT
from finerank.io.outputs import write_pairs

from test_train import _lists


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
       "TOKENIZERS_PARALLELISM": "false"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp-data")
    write_pairs(d / "train.jsonl", _lists(24, offset=0))
    write_pairs(d / "val.jsonl", _lists(6, offset=100))
    return d


def _kill_job(job: subprocess.Popen) -> None:
    """SIGKILL a launcher and the workers it started, at once, as when a machine dies. Each by its id: torchrun
    starts every worker in a session of its own, so a worker outlives a launcher killed alone."""
    import psutil

    try:
        workers = psutil.Process(job.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for proc in [*workers, job]:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait()
    psutil.wait_procs(workers, timeout=30)


def _args(tiny_model, data, out, *extra) -> list[str]:
    return ["-m", "finerank", "train", "--model", tiny_model, "--train", str(data / "train.jsonl"),
            "--val", str(data / "val.jsonl"), "--out", str(out), "--max-length", "48", "--batch-size", "8",
            "--eval-steps", "3", "--max-steps", "6", "--fusion", "off", *extra]


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def _check_run(r: subprocess.CompletedProcess, out, world_size: int = 2) -> dict:
    """Exit 0, best/ loads, the record names the distributed run, each finerank line printed once."""
    from sentence_transformers import CrossEncoder

    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert CrossEncoder(str(out / "best")).predict([("query", "document")]).shape == (1,)
    record = json.loads((out / "finerank-run.json").read_text())
    assert record["world_size"] == world_size and record["backend"] == "gloo"
    assert record["global_batch"] == world_size * record["per_device_batch"]
    assert (out / "finerank-config.yaml").exists() and (out / "base-metrics.json").exists()
    assert not list(out.glob(".best.*")), "a rank left a temporary best/ behind"
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning ")]
    assert warnings, r.stderr[-3000:]  # the learning rate given is outside the guide's range
    assert all(n == 1 for n in Counter(warnings).values()), warnings
    assert r.stdout.count("validation: base vs best") == 1 and r.stdout.count("best model:") == 1
    return record


def test_torchrun_two_processes(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    r = _run([*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
              *_args(tiny_model, data, out, "--lr", "1e-3")])
    record = _check_run(r, out)
    assert record["loss"] == "lambda" and record["batch_unit"] == "queries"  # graded labels: listwise, per query
    assert [h["step"] for h in record["eval_history"]] == [3, 6]  # rank 1 got rank 0's metrics: no KeyError
    assert record["global_step"] == 6 and record["best"]["nDCG@10"] > 0
    assert sum("learning rate 0.001" in ln for ln in r.stderr.splitlines()) == 1


def test_accelerate_launch_two_processes(tiny_model, data, tmp_path):
    """accelerate's multi-process launcher (torchrun underneath): --multi_gpu is its name, and on a machine without
    GPUs finerank trains on the CPUs over gloo. (``accelerate launch --cpu --num_processes N`` starts one process:
    accelerate launches several CPU processes only through mpirun, with --mpirun_hostfile.)"""
    out = tmp_path / "run"
    r = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), *_args(tiny_model, data, out, "--lr", "1e-3", "--loss", "bce")])
    record = _check_run(r, out)
    assert record["loss"] == "bce" and record["per_device_batch"] == 8 and record["global_batch"] == 16


def test_killed_job_resumes_and_two_nodes_train_as_one(tiny_model, data, tmp_path):
    """A 2-process torchrun job killed after a checkpoint continues with --resume, launched this time as two
    "nodes" on 127.0.0.1 (two torchrun launchers, --nnodes 2, one process each): the multi-node command."""
    out = tmp_path / "run"
    args = _args(tiny_model, data, out, "--lr", "1e-3", "--loss", "bce", "--max-steps", "200", "--eval-steps", "2",
                 "--patience", "0")
    job = subprocess.Popen([*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), *args], cwd=ROOT,
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and job.poll() is None and not list(out.glob("checkpoint-*/.finerank-complete")):
            time.sleep(0.2)
        assert job.poll() is None, "training ended before it could be killed"
    finally:
        _kill_job(job)
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/.finerank-complete"))
    assert done and done[-1] < 200
    (out / "checkpoint-999").mkdir()  # a half-written checkpoint must never be resumed from
    (out / "checkpoint-999" / "config.json").write_text("{")

    resume = [*args, "--max-steps", str(done[-1] + 4), "--resume"]  # the last of a repeated option counts
    port = str(_free_port())
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                               "--master_port", port, *resume], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-4000:] + outputs[1][1][-4000:]
    node1_out, node1_err = outputs[1]
    assert "validation: base vs best" not in node1_out and "warning " not in node1_err  # rank 0 reports, alone
    record = _check_run(subprocess.CompletedProcess([], 0, *outputs[0]), out)
    assert record["resumed_from"].endswith(f"checkpoint-{done[-1]}")
    assert record["global_step"] == done[-1] + 4
    assert not (out / "checkpoint-999").exists()


def test_doctor_reports_the_distributed_environment(monkeypatch):
    import importlib

    doc = importlib.import_module("finerank.doctor")
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                 "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(k, v)
    d = doc.doctor().to_dict()["distributed"]
    assert (d["world_size"], d["rank"], d["local_rank"]) == (2, 1, 0)
    assert d["launcher"] == "torchrun" and d["master"] == "127.0.0.1:29500"
    assert set(d["backends"]) == {"gloo", "nccl", "mpi"} and d["backends"]["gloo"] is True
    assert d["backend"] in ("gloo", "nccl")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(k)
    d = doc.distributed_env()
    assert (d["world_size"], d["rank"], d["launcher"], d["master"]) == (1, 0, None, None)
