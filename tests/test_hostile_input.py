"""Issue 26, second pass: the new surface (export, card, report, ids, outputs) under hostile input.

Each reproducer of the issue is a case: a bad call exits 2 naming the path (and line and field), never exit 0 with
damage, never a traceback. The table runs through the CLI's entry point in this process (``cli`` of
test_robustness), so that the tiny model loads once."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from test_robustness import _rows, _write, cli


@pytest.fixture(scope="module")
def bed(tiny_model, tmp_path_factory):
    """A folder with candidates and a copy of the tiny model."""
    d = tmp_path_factory.mktemp("hostile")
    _write(d / "cands.jsonl", _rows())
    shutil.copytree(tiny_model, d / "model")
    return d


# ----------------------------------------------------------------- 1. export removes only what its manifest lists
def _forged_export(tmp: Path, manifest: dict | None) -> Path:
    """The issue's folder: an export.json, a note, a FIFO and a subfolder with a file."""
    d = tmp / "D"
    d.mkdir()
    (d / "export.json").write_text(json.dumps(manifest) if manifest is not None else "{}")
    (d / "notes.txt").write_text("x\n")
    os.mkfifo(d / "p")
    (d / "sub").mkdir()
    (d / "sub" / "keep.txt").write_text("mine\n")
    return d


def _untouched(d: Path) -> None:
    assert (d / "notes.txt").read_text() == "x\n" and stat.S_ISFIFO(os.lstat(d / "p").st_mode)
    assert (d / "sub" / "keep.txt").read_text() == "mine\n"
    assert not list(d.glob("onnx")) and not list(d.parent.glob(".D.*"))  # no export landed, no temp left


def case_export_json_without_files(bed, tmp):
    return _forged_export(tmp, None), "has no 'files' list"


def case_export_json_lists_some(bed, tmp):
    return _forged_export(tmp, {"files": ["export.json", "notes.txt"]}), "export.json lists (p, sub)"


def case_export_json_lists_outside(bed, tmp):
    return _forged_export(tmp, {"files": ["../elsewhere", "notes.txt", "p", "sub/keep.txt"]}), "has no 'files' list"


def case_export_json_lists_a_fifo(bed, tmp):  # listed, but not a regular file: never its own
    listed = ["export.json", "notes.txt", "p", "sub/keep.txt"]
    return _forged_export(tmp, {"files": listed}), "is not a file its export.json lists (p)"


def case_export_json_is_a_fifo(bed, tmp):
    d = tmp / "D"
    d.mkdir()
    os.mkfifo(d / "export.json")
    return d, "exists and is not an earlier export"


EXPORT_CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_export")]


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[c.__name__[5:] for c in EXPORT_CASES])
def test_export_never_removes_what_it_did_not_write(case, bed, tmp_path, capsys):
    d, message = case(bed, tmp_path)
    before = sorted(p.name for p in d.iterdir())
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 2, output
    assert f"{d}:" in output and message in output.replace("\n", ""), output
    assert "Traceback" not in output, output
    assert sorted(p.name for p in d.iterdir()) == before
    if (d / "notes.txt").exists():
        _untouched(d)


def test_export_writes_a_manifest_and_replaces_only_its_files(bed, tmp_path, capsys):
    d = tmp_path / "e"
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 0, output
    meta = json.loads((d / "export.json").read_text())
    on_disk = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert meta["files"] == on_disk and "export.json" in on_disk and "onnx/model.onnx" in on_disk
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check", "--quantize", "int8")
    assert code == 0, output  # an earlier export with its manifest: replaced
    assert (d / "onnx" / "model_int8.onnx").exists() and not (d / "onnx" / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # the old export removed, no temp left

    (d / "notes.txt").write_text("mine\n")  # a file of the user's in an export folder: refused, kept
    code, output = cli(capsys, "export", "--model", bed / "model", "--out", d, "--no-check")
    assert code == 2 and "is not a file its export.json lists (notes.txt)" in output, output
    assert (d / "notes.txt").read_text() == "mine\n" and (d / "onnx" / "model_int8.onnx").exists()


def test_removing_an_earlier_export_spares_what_came_after_the_check(tmp_path):
    """The manifest's files go, folders only when empty: a file that appears after the check is kept."""
    from finerank.serving.export import _remove_listed

    old = tmp_path / "old"
    (old / "onnx").mkdir(parents=True)
    for f in ("export.json", "onnx/model.onnx", "config.json"):
        (old / f).write_text("x")
    (old / "onnx" / "late.txt").write_text("late")
    os.mkfifo(old / "config.json.fifo")
    assert _remove_listed(old, ["config.json", "export.json", "onnx/model.onnx", "config.json.fifo"]) is False
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*")) == ["config.json.fifo", "onnx",
                                                                               "onnx/late.txt"]
    (old / "onnx" / "late.txt").unlink()
    os.unlink(old / "config.json.fifo")
    assert _remove_listed(old, ["onnx/late.txt"]) is True and not old.exists()
