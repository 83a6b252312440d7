"""Issue 14, first half: outputs that can never destroy inputs, no traceback from any command, rerank never drops a
row, run folders with a lock, model and export folders checked on load.

The table of bad invocations runs through the CLI's entry point (``finerank.cli.app.main``) in this process, so that the
tiny model loads once; one case also runs as a user would, in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from finerank.core.errors import DataError, FinerankError, ModelError, OutputError
from finerank.io.outputs import atomic_write, check_outputs, write_pairs, written_together
from finerank.io.runs import read_trec_run


# ------------------------------------------------------------------------------------------------ helpers
def cli(capsys, *args) -> tuple[int, str]:
    """Exit code and output (stdout + stderr) of ``finerank ARGS``; any exception other than the exit fails the
    test (it would be a traceback in front of a user)."""
    from finerank.cli.app import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def _rows(n_queries: int = 2, n_docs: int = 4) -> list[dict]:
    return [{"query_id": f"q{q}", "query": f"query about topic {q}", "doc_id": f"q{q}-d{i}",
             "document": f"document {i} on topic {q} and other things", "label": int(i == 0), "score": 10.0 - i}
            for q in range(n_queries) for i in range(n_docs)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bed(tiny_model, tmp_path_factory):
    """A folder with candidates, train/val pairs, a copy of the tiny model and an ONNX export of it."""
    from finerank.serving.export import export

    d = tmp_path_factory.mktemp("robust")
    _write(d / "cands.jsonl", _rows())
    shutil.copytree(tiny_model, d / "model")
    export(tiny_model, d / "export", validation=None, log=lambda m: None)
    return d


def _broken_copy(src: Path, dst: Path, damage) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    damage(dst)
    return dst


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _set_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "export.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    (folder / "export.json").write_text(json.dumps(meta))


# ----------------------------------------------------------------------------------- the table of bad calls
def _rerank(bed, *extra, model=None, input=None):
    return ["rerank", "--model", model or bed / "model", "--input", input or bed / "cands.jsonl", *extra]


def _train(bed, tmp, *extra):
    return ["train", "--model", bed / "model", "--train", bed / "cands.jsonl", "--out", tmp / "run", *extra]


def case_output_is_a_folder(bed, tmp):
    return _rerank(bed, "--output", tmp), "is a folder, not a regular file"


def case_output_under_a_file(bed, tmp):
    return _rerank(bed, "--output", bed / "cands.jsonl" / "x.jsonl"), "is a file, not a folder"


def case_output_in_proc(bed, tmp):
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    return _rerank(bed, "--output", "/proc/x.jsonl"), "cannot create a file in /proc"


def case_output_is_a_fifo(bed, tmp):
    os.mkfifo(tmp / "pipe")
    return _rerank(bed, "--output", tmp / "pipe"), "is a FIFO (named pipe), not a regular file"


def case_output_equals_input(bed, tmp):
    return _rerank(bed, "--output", bed / "cands.jsonl"), "is an input"


def case_trec_equals_input(bed, tmp):
    return _rerank(bed, "--output", tmp / "o.jsonl", "--trec", bed / "cands.jsonl"), "is an input"


def case_trec_run_input_equals_trec_output(bed, tmp):
    (tmp / "run.trec").write_text("1 Q0 1 1 9.0 bm25\n1 Q0 2 2 8.0 bm25\n")
    return (_rerank(bed, "--output", tmp / "o.jsonl", "--trec", tmp / "run.trec", input=tmp / "run.trec")
            + ["--collection", "cranfield"]), "is an input"


def case_two_outputs_one_file(bed, tmp):
    return _rerank(bed, "--output", tmp / "o.jsonl", "--trec", tmp / "o.jsonl"), "one output would overwrite the other"


def case_output_inside_the_model(bed, tmp):
    return _rerank(bed, "--output", bed / "model" / "config.json"), "is an input"


def case_split_into_the_input_folder(bed, tmp):
    shutil.copy(bed / "cands.jsonl", tmp / "train.jsonl")
    return ["data", "split", tmp / "train.jsonl", "--out", tmp], "is an input"


def case_mine_over_its_queries(bed, tmp):
    _write(tmp / "q.jsonl", [{"query_id": "1", "query": "what similarity laws", "document": "d", "label": 1}])
    return (["data", "mine", "cranfield", "--queries", tmp / "q.jsonl", "--out", tmp / "q.jsonl"], "is an input")


def case_candidates_run_equals_out(bed, tmp):
    return ["data", "candidates", "cranfield", "--out", tmp / "c.jsonl", "--run", tmp / "c.jsonl"], "overwrite the other"


def case_evaluate_out_is_a_file(bed, tmp):
    return (["evaluate", "--model", bed / "model", "--dataset", bed / "cands.jsonl", "--out", bed / "cands.jsonl"],
            "not a folder")


def case_export_over_its_model(bed, tmp):
    return ["export", "--model", bed / "export", "--out", bed / "export", "--no-check"], "overlaps the input --model"


def case_truncated_safetensors(bed, tmp):
    m = _broken_copy(bed / "model", tmp / "m", lambda d: _truncate(d / "model.safetensors"))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=m), "model.safetensors: truncated"


def case_model_without_weights(bed, tmp):
    m = _broken_copy(bed / "model", tmp / "m", lambda d: (d / "model.safetensors").unlink())
    return _rerank(bed, "--output", tmp / "o.jsonl", model=m), "no weights"


def case_model_config_not_json(bed, tmp):
    m = _broken_copy(bed / "model", tmp / "m", lambda d: (d / "config.json").write_text("{\"model_type\": "))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=m), "config.json: not valid JSON"


def case_truncated_tokenizer(bed, tmp):
    m = _broken_copy(bed / "model", tmp / "m", lambda d: _truncate(d / "tokenizer.json"))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=m), "tokenizer.json: not valid JSON"


def case_evaluate_out_is_the_model(bed, tmp):
    return (["evaluate", "--model", bed / "model", "--dataset", bed / "cands.jsonl", "--out", bed / "model"],
            "is an input")


def case_truncated_onnx(bed, tmp):
    def damage(d):
        _truncate(d / json.loads((d / "export.json").read_text())["file"])

    e = _broken_copy(bed / "export", tmp / "e", damage)
    return _rerank(bed, "--output", tmp / "o.jsonl", model=e), "onnxruntime cannot load it"


def case_export_json_invalid(bed, tmp):
    e = _broken_copy(bed / "export", tmp / "e", lambda d: (d / "export.json").write_text("{\"file\": "))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=e), "export.json: not valid JSON"


def case_export_json_without_max_length(bed, tmp):
    e = _broken_copy(bed / "export", tmp / "e", lambda d: _set_meta(d, max_length=None))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=e), "field 'max_length'"


def case_export_json_bad_activation(bed, tmp):
    e = _broken_copy(bed / "export", tmp / "e", lambda d: _set_meta(d, activation="softmax"))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=e), "field 'activation'"


def case_export_json_file_outside(bed, tmp):
    e = _broken_copy(bed / "export", tmp / "e", lambda d: _set_meta(d, file="../../etc/passwd"))
    return _rerank(bed, "--output", tmp / "o.jsonl", model=e), "field 'file'"


def case_device_cuda_without_gpu(bed, tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return _rerank(bed, "--output", tmp / "o.jsonl", "--device", "cuda"), "no CUDA GPU is available"


def case_device_unknown(bed, tmp):
    return _rerank(bed, "--output", tmp / "o.jsonl", "--device", "gpu9"), "not a device name torch knows"


def case_top_k_zero(bed, tmp):
    return _rerank(bed, "--output", tmp / "o.jsonl", "--top-k", "0"), "top_k must be a whole number of at least 1"


def case_top_k_negative(bed, tmp):
    return _rerank(bed, "--output", tmp / "o.jsonl", "--top-k", "-1"), "top_k must be a whole number of at least 1"


def case_repeated_doc_id(bed, tmp):
    rows = _rows()
    src = _write(tmp / "dup.jsonl", rows + [dict(rows[1], score=1.0)])
    return _rerank(bed, "--output", tmp / "o.jsonl", input=src), f"{src}:9: field 'doc_id'"


def case_document_over_the_cap(bed, tmp):
    rows = _rows()
    rows[2]["document"] = "word " * 30
    src = _write(tmp / "long.jsonl", rows)
    return (_rerank(bed, "--output", tmp / "o.jsonl", "--max-chars", "100", input=src),
            "a document of at most 100 characters (--max-chars); doc_id q0-d2")


def case_export_max_queries_zero(bed, tmp):
    return ["export", "--model", bed / "model", "--out", tmp / "e", "--max-queries", "0"], "max_queries must be"


def case_patience_negative(bed, tmp):
    return _train(bed, tmp, "--patience", "-1"), "option early_stopping_patience (--patience): got -1"


def case_lr_negative(bed, tmp):
    return _train(bed, tmp, "--lr", "-1"), "option lr (--lr): got -1"


def case_epochs_zero(bed, tmp):
    return _train(bed, tmp, "--epochs", "0"), "option epochs (--epochs): got 0"


def case_batch_size_zero(bed, tmp):
    return _train(bed, tmp, "--batch-size", "0"), "option batch_size (--batch-size): got 0"


def case_max_steps_zero(bed, tmp):
    return _train(bed, tmp, "--max-steps", "0"), "option max_steps (--max-steps): got 0"


def case_fusion_bogus(bed, tmp):
    return _train(bed, tmp, "--fusion", "bogus"), "option fusion (--fusion): got 'bogus'"


def case_config_not_yaml(bed, tmp):
    (tmp / "c.yaml").write_text("lr: [1\n")
    return _train(bed, tmp, "--config", tmp / "c.yaml"), "not valid YAML"


def case_config_wrong_type(bed, tmp):
    (tmp / "c.yaml").write_text("lr: fast\n")
    return _train(bed, tmp, "--config", tmp / "c.yaml"), "option lr (--lr): got 'fast', expected a finite number"


def case_config_missing(bed, tmp):
    return _train(bed, tmp, "--config", tmp / "nope.yaml"), "cannot read the config file"


def case_config_toml_broken(bed, tmp):
    (tmp / "c.toml").write_text("lr = = 1\n")
    return _train(bed, tmp, "--config", tmp / "c.toml"), "not valid TOML"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_invocation_exits_2_with_a_message_and_no_traceback(case, bed, tmp_path, capsys):
    before = {p: p.read_bytes() for p in (bed / "cands.jsonl", bed / "model" / "config.json")}
    argv, message = case(bed, tmp_path)
    code, output = cli(capsys, *argv)
    assert code == 2, output
    assert message in output, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert ".tmp" not in output, output  # errors name the user's path, never a temp file
    for p, content in before.items():
        assert p.read_bytes() == content, f"{p} changed"


def test_a_bad_output_as_a_user_sees_it(bed, tmp_path):
    """The same refusal from a real process: exit 2, the message, no traceback, and no work done before it."""
    start = time.perf_counter()
    r = run_cli("rerank", "--model", bed / "model", "--input", bed / "cands.jsonl", "--output", tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path}: is a folder, not a regular file" in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr and "reranking" not in r.stderr  # refused before the model scored anything
    assert time.perf_counter() - start < 120


# ----------------------------------------------------------------------------------------- the output policy
def test_symlink_output_is_written_through(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with atomic_write(link) as f:
        f.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    with pytest.raises(OutputError, match="is an input"):  # a link to an input is that input
        check_outputs([link], [target])


def test_output_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    out = tmp_path / "o.json"
    out.write_text("{}")
    out.chmod(0o640)
    with atomic_write(out) as f:
        f.write("[]")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text() == "[]"
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.json") as f:
            f.write("[]")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_atomic_write_never_replaces_a_device_or_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"):
        with atomic_write(fifo) as f:
            f.write("x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if Path("/dev/null").exists():
        with pytest.raises(OutputError, match="is a device"):
            with atomic_write("/dev/null") as f:
                f.write("x")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_full_disk_names_the_output_not_the_temp_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out.jsonl"
    with pytest.raises(OutputError) as e:
        write_pairs(out, [])
    assert str(e.value).startswith(f"{out}: could not be written (No space left on device)")
    assert "free some space" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_outputs_written_together_land_all_or_none(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a\n")
    with pytest.raises(RuntimeError):
        with written_together():
            with atomic_write(a) as f:
                f.write("new a\n")
            with atomic_write(b) as f:
                f.write("new b\n")
                raise RuntimeError("the second output failed")
    assert a.read_text() == "old a\n" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temp file left
    with written_together():
        with atomic_write(a) as f:
            f.write("new a\n")
        assert a.read_text() == "old a\n"  # not yet: the group lands at the end
        with atomic_write(b) as f:
            f.write("new b\n")
    assert a.read_text() == "new a\n" and b.read_text() == "new b\n"


def test_data_split_into_the_folder_of_its_input_keeps_the_input(tmp_path):
    """The reported case: data split FILE --out DIR-of-FILE used to overwrite FILE with its own train side."""
    src = tmp_path / "train.jsonl"
    _write(src, [dict(r, query_id=f"{r['query_id']}-{k}") for k in range(5) for r in _rows()])
    before = src.read_bytes()
    r = run_cli("data", "split", src, "--out", tmp_path)
    assert r.returncode == 2 and "is an input" in r.stderr and "Traceback" not in r.stderr
    assert src.read_bytes() == before and not (tmp_path / "val.jsonl").exists()


# ------------------------------------------------------------------------------------ rerank never drops a row
def test_rerank_writes_every_row_and_says_how_many(bed, tmp_path, capsys):
    code, output = cli(capsys, *_rerank(bed, "--output", tmp_path / "o.jsonl"))
    assert code == 0, output
    rows = (tmp_path / "o.jsonl").read_text().splitlines()
    assert len(rows) == 8 and len((tmp_path / "o.run").read_text().splitlines()) == 8
    assert "reranked 8 pairs of 2 queries" in output and "wrote 8 rows" in output

    code, output = cli(capsys, *_rerank(bed, "--output", tmp_path / "t.jsonl", "--top-k", "3"))
    assert code == 0, output
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 6
    assert len((tmp_path / "t.run").read_text().splitlines()) == 6
    assert "wrote 6 rows (the best 3 of each list)" in output


def test_rerank_file_refuses_bad_top_k_and_repeats(bed, tmp_path):
    from finerank.serving.rerank import rerank_file

    for k in (0, -1, 1.5, True):
        with pytest.raises(FinerankError, match="top_k"):
            rerank_file(bed / "model", bed / "cands.jsonl", tmp_path / "o.jsonl", top_k=k, progress=False)
    assert not (tmp_path / "o.jsonl").exists()
    s = rerank_file(bed / "model", bed / "cands.jsonl", tmp_path / "o.jsonl", top_k=100, progress=False)
    assert s.rows == s.pairs == 8
    from finerank.scorers.cross_encoder import Reranker

    with pytest.raises(FinerankError, match="top_k"):  # the library's list API too (it used to drop the last)
        Reranker(bed / "model").rerank("q", ["a", "b", "c"], top_k=-1)


def test_repeated_doc_id_in_a_trec_run_names_its_line(tmp_path):
    p = tmp_path / "run.trec"
    p.write_text("1 Q0 a 1 3.0 x\n1 Q0 b 2 2.0 x\n2 Q0 a 1 1.0 x\n1 Q0 a 3 1.0 x\n")
    with pytest.raises(DataError) as e:
        read_trec_run(p)
    assert e.value.line == 4 and e.value.field == "docid" and "once per query" in str(e.value)


def test_repeated_doc_id_in_a_csv_names_its_line(tmp_path):
    from finerank.data.candidates import Candidates

    p = tmp_path / "c.csv"
    p.write_text('query_id,query,doc_id,document\nq,a query,d1,"two\nlines"\nq,a query,d2,x\n\nq,a query,d1,y\n')
    with pytest.raises(DataError) as e:
        Candidates.from_file(p)
    assert e.value.line == 6 and "line 2" in str(e.value)


def test_document_cap_is_named_and_can_be_raised(bed, tmp_path):
    from finerank.serving.rerank import MAX_CHARS, rerank_file

    rows = _rows()
    rows[0]["document"] = "x " * 60
    src = _write(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataError, match="at most 100 characters"):
        rerank_file(bed / "model", src, tmp_path / "o.jsonl", max_chars=100, progress=False)
    s = rerank_file(bed / "model", src, tmp_path / "o.jsonl", max_chars=200, progress=False)
    assert s.rows == 8
    from finerank.serving.serve import MAX_CHARS as SERVER_MAX_CHARS

    assert MAX_CHARS == SERVER_MAX_CHARS  # the CLI's default cap is the server's


# ------------------------------------------------------------------------------------------------ run folders
@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from test_train import _lists

    d = tmp_path_factory.mktemp("robust-train")
    write_pairs(d / "train.jsonl", _lists(12, offset=0))
    write_pairs(d / "val.jsonl", _lists(4, offset=100))
    return d


def _cfg(tiny_model, data, out, **kw):
    from finerank.training.config import TrainConfig

    opts = dict(model=tiny_model, train=str(data / "train.jsonl"), val=str(data / "val.jsonl"), out=str(out),
                max_length=64, batch_size=8, eval_steps=2, max_steps=2, loss="bce", fusion="off", query_check=0)
    opts.update(kw)
    return TrainConfig(**{k: v for k, v in opts.items() if k in TrainConfig.__dataclass_fields__})


def test_a_second_writer_of_a_run_folder_is_refused(tiny_model, train_data, tmp_path):
    """Two `train --out D` at once: the second is refused, naming the first one's PID, and writes nothing."""
    from finerank.training.train import train

    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "finerank", "train", "--model", tiny_model, "--train",
                              str(train_data / "train.jsonl"), "--out", str(out), "--max-length", "64",
                              "--batch-size", "8", "--max-steps", "100000", "--loss", "bce", "--fusion", "off"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[1])
    try:
        deadline = time.time() + 240
        while not (out / ".lock").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / ".lock").exists(), "the first run never took the lock"
        held = sorted(p.name for p in out.iterdir())
        with pytest.raises(FinerankError) as e:
            train(_cfg(tiny_model, train_data, out, resume=True), progress=False)  # resume: past the empty check
        assert f"PID {first.pid}" in str(e.value) and "another finerank train" in str(e.value)
        assert first.poll() is None  # the first run goes on
        assert set(held) <= {p.name for p in out.iterdir()} and (out / ".lock").exists()
    finally:
        first.kill()
        first.wait()


def test_a_live_lock_on_another_machine_is_left_alone(tiny_model, train_data, tmp_path):
    from finerank.training.train import train

    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("1@another-machine\n")
    with pytest.raises(FinerankError, match="PID 1 on another-machine") as e:
        train(_cfg(tiny_model, train_data, out), progress=False)
    assert "delete" in str(e.value.hint) and (out / ".lock").read_text() == "1@another-machine\n"


def test_run_folder_rules(tiny_model, train_data, tmp_path, capsys):
    """A stale lock and a killed run's temp folder are cleaned; a second fresh run is refused; --resume of the
    finished run does nothing; --overwrite starts afresh."""
    from finerank.training.train import train

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}@{os.uname().nodename}\n")
    (out / ".best.tmp-99999").mkdir()
    (out / ".best.tmp-99999" / "config.json").write_text("{}")
    res = train(_cfg(tiny_model, train_data, out), progress=False)
    assert res.best_metrics and not (out / ".lock").exists() and not (out / ".best.tmp-99999").exists()
    record = (out / "finerank-run.json").read_text()
    assert json.loads(record)["global_step"] == 2

    with pytest.raises(FinerankError, match="not empty") as e:  # a fresh run would mix its files with these
        train(_cfg(tiny_model, train_data, out), progress=False)
    assert "--overwrite" in str(e.value.hint)

    args = ["train", "--model", tiny_model, "--train", train_data / "train.jsonl", "--val", train_data / "val.jsonl",
            "--out", out, "--max-length", "64", "--batch-size", "8", "--eval-steps", "2", "--max-steps", "2",
            "--loss", "bce", "--fusion", "off"]
    code, output = cli(capsys, *args, "--resume")
    assert code == 0, output
    assert "had finished (step 2); nothing to resume" in output
    assert (out / "finerank-run.json").read_text() == record  # untouched: no step past --max-steps
    assert not list(out.glob("checkpoint-3"))

    res = train(_cfg(tiny_model, train_data, out, max_steps=1, eval_steps=1, overwrite=True), progress=False)
    assert json.loads((out / "finerank-run.json").read_text())["global_step"] == 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]  # the old run's are gone


def test_model_inside_the_run_folder_is_refused(tiny_model, train_data, tmp_path):
    from finerank.training.train import train

    shutil.copytree(tiny_model, tmp_path / "run" / "best")
    with pytest.raises(FinerankError, match="inside the run folder"):
        train(_cfg(str(tmp_path / "run"), train_data, tmp_path / "run", overwrite=True), progress=False)
    assert (tmp_path / "run" / "best" / "config.json").exists()


# ------------------------------------------------------------------------------------ model and export folders
def test_load_errors_are_model_errors(bed, tmp_path):
    from finerank.scorers.cross_encoder import Reranker

    m = _broken_copy(bed / "model", tmp_path / "m", lambda d: [p.unlink() for p in d.glob("tokenizer*")]
                     + [p.unlink() for p in d.glob("vocab*")])
    with pytest.raises(ModelError, match="no tokenizer"):
        Reranker(m)
    e = _broken_copy(bed / "export", tmp_path / "e", lambda d: (d / "export.json").write_text("[1, 2]"))
    with pytest.raises(ModelError, match="expected a JSON object"):
        Reranker(e)
