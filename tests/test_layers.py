"""The house's structure: layered modules with no import that runs back up, and a stable public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "finerank"

# Ground floor first. A module imports finerank modules of lower layers only (never its own layer's, never higher).
LAYERS = [
    ("errors", "records", "text"),                # what everything shares; no I/O
    ("io", "metrics", "models"),                  # files, ir-measures, resolving --model
    ("split", "retrieval", "inspect", "doctor"),  # data work on records
    ("candidates",),                              # the one candidate-list type and its reader
    ("backends", "scoring", "dependence"),        # torch / ONNX cross-encoder; bi-encoder; the wrong-query lists
    ("fusion",),                                  # combining signals
    ("rerank",),                                  # Reranker: the one path from candidates to a scored run
    ("cascade",),                                 # cheap stage -> cross-encoder on the head; saved with the model
    ("callbacks",),                               # the Trainer's evaluator and callback (imports the trainer stack)
    ("card", "htmlreport"),                       # what a model folder (README.md) and an evaluation (report.html) say
    ("train", "evaluate", "export", "serve"),     # workflows
    ("bitrain",),                                 # train --arch bi-encoder: train's run folder, config and record
    ("demo",),                                    # the whole job, end to end
    ("cli",),                                     # the shell: parse, call one function, print
    ("__init__", "__main__"),                     # the package's face
]
LAYER = {m: i for i, mods in enumerate(LAYERS) for m in mods}
# in-function imports of finerank modules, each with its reason
LAZY_OK = {("train", "callbacks"): "callbacks imports sentence-transformers at module level; train loads it only "
                                   "when a run starts, so that the CLI starts fast",
           ("bitrain", "callbacks"): "the same, for the bi-encoder's run"}


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported finerank module, at module level?, line) for every import of a finerank module in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.level == 0 and node.module and node.module.split(".")[0] == "finerank":
                rest = node.module.split(".")[1:]
                names = [rest[0]] if rest else [a.name for a in node.names]
            elif node.level > 1:
                pytest.fail(f"{path.name}:{node.lineno}: relative import above the package")
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("finerank.")]
        found += [(n.split(".")[0], id(node) in top, node.lineno) for n in names]
    return found


def _graph() -> dict[str, list[tuple[str, bool, int]]]:
    return {p.stem: _imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    missing = sorted(set(_graph()) - set(LAYER))
    assert not missing, f"place these modules in LAYERS (tests/test_layers.py): {missing}"


def test_no_import_runs_back_up_or_sideways():
    bad = [f"{mod}.py:{line} imports {dep} (layer {LAYER[dep]}; {mod} is layer {LAYER[mod]})"
           for mod, deps in _graph().items() for dep, _, line in deps
           if dep in LAYER and dep != mod and LAYER[dep] >= LAYER[mod]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {d for d, _, _ in deps if d in LAYER and d != m} for m, deps in _graph().items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [m, d]) if d in path
                            else f"import cycle through {m} -> {d}")
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_finerank_imports_sit_at_module_level():
    lazy = [f"{mod}.py:{line} imports {dep} inside a function" for mod, deps in _graph().items()
            for dep, at_top, line in deps if not at_top and (mod, dep) not in LAZY_OK]
    assert not lazy, "\n".join(lazy)


def test_the_layer_check_catches_a_violation(tmp_path):
    """The checker itself can fail: an import of a higher layer and an in-function import are both seen."""
    bad = tmp_path / "io.py"
    bad.write_text("from .rerank import Reranker\n\ndef f():\n    from .cli import main\n")
    found = _imports(bad)
    assert ("rerank", True, 1) in found and ("cli", False, 4) in found
    assert LAYER["rerank"] > LAYER["io"]


# ------------------------------------------------------------------------------------------------ public API
def test_public_names_are_stable_objects():
    """Each name in __all__ is the same object however often it is read, and after every submodule was imported
    (importing a submodule must not rebind a name such as ``inspect`` or ``train`` to the module)."""
    fr = importlib.import_module("finerank")
    first = {name: getattr(fr, name) for name in fr.__all__}
    for mod in LAYER:
        if not mod.startswith("__"):
            importlib.import_module(f"finerank.{mod}")
    for name in fr.__all__:
        assert getattr(fr, name) is first[name], name
        assert getattr(fr, name) is getattr(fr, name), name
    assert callable(fr.inspect) and callable(fr.train) and callable(fr.evaluate) and callable(fr.candidates)
    assert len(set(fr.__all__)) == len(fr.__all__)


def test_every_stage_is_exported():
    fr = importlib.import_module("finerank")
    for name in ("load", "inspect", "split_dataset", "mine", "candidates", "Candidates", "train", "TrainConfig",
                 "evaluate", "Reranker", "export", "serve", "doctor", "demo", "BiEncoder", "fuse"):
        assert name in fr.__all__, name

