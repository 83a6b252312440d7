"""The house's structure: folders are the layers, no import runs back up or sideways, and a stable public API.

The one list of layers is the README's "Layout" block (between ``<!-- layers -->`` markers): a row a folder, ground
floor first, its modules in floors separated by ``|`` (a module imports from earlier floors of its folder and from
lower folders only); the row ``.`` holds the shells at the package's top, and the last, ``cli/``, the command line
above them. This test reads that block, so the README cannot drift from the code.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "finerank"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# what breaks the limits, each with its reason (none now); an entry that is within them fails the test
TOO_LONG: set[str] = set()


def read_layers(readme: Path = ROOT / "README.md") -> list[tuple[str, list[list[str]]]]:
    """[(folder, [[module, ...] a floor, ...]), ...] from the README's layers block, ground floor first."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"<!-- layers -->\s*```[a-z]*\n(.*?)```\s*<!-- /layers -->", text, re.S)
    assert m, "README.md: the Layout section's block between <!-- layers --> markers is missing"
    rows = []
    for line in m.group(1).splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        folder, _, rest = line.partition(" ")
        floors = [f.split() for f in rest.split("|")]
        rows.append((folder.rstrip("/"), [f for f in floors if f]))
    return rows


LAYERS = read_layers()
# module key ("core.errors", "cli") -> (folder index, floor index)
RANK: dict[str, tuple[int, int]] = {}
for i, (folder, floors) in enumerate(LAYERS):
    for j, mods in enumerate(floors):
        for mod in mods:
            RANK[mod if folder == "." else f"{folder}.{mod}"] = (i, j)
TOP = (len(LAYERS), 0)  # the package's face: finerank/__init__.py and __main__.py
# in-function imports of finerank modules, each with its reason
LAZY_OK = {("training.cross_encoder", "training.callbacks"): "callbacks imports sentence-transformers at module "
           "level; the trainer loads it only when a run starts, so that the CLI starts fast",
           ("training.bi_encoder", "training.callbacks"): "the same, for the bi-encoder's run",
           ("training.skeleton", "training.callbacks"): "the same, for the run skeleton",
           ("training.run", "training.callbacks"): "the same, for the resume checkpoint rank 0 picks"}


def module_key(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _resolve(key: str, node: ast.ImportFrom) -> list[str]:
    """The finerank modules an ``from ... import`` names, as keys (``core.errors``)."""
    here = key.split(".")[:-1]  # the importing module's folder parts
    if node.level:
        base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
        if node.level - 1 > len(here):
            pytest.fail(f"{key}:{node.lineno}: relative import above the package")
    else:
        if not node.module or node.module.split(".")[0] != "finerank":
            return []
        base = []
    mod = (node.module or "").split(".") if node.module else []
    if not node.level:
        mod = mod[1:]
    target = base + mod
    if ".".join(target) in RANK_KEYS or not node.names:
        return [".".join(target)]
    # ``from . import x`` / ``from finerank import x``: x may be a module of that folder
    return [".".join(target + [a.name]) for a in node.names if ".".join(target + [a.name]) in RANK_KEYS] or \
        ([".".join(target)] if target else [])


RANK_KEYS = set(RANK) | {"__init__", "__main__"}


def _imports(path: Path, key: str | None = None) -> list[tuple[str, bool, int]]:
    """(imported finerank module key, at module level?, line) for every import of a finerank module in ``path``."""
    key = key or module_key(path)
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = _resolve(key, node)
        elif isinstance(node, ast.Import):
            names = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("finerank.")]
        found += [(n, id(node) in top, node.lineno) for n in names if n]
    return found


def _modules() -> dict[str, Path]:
    return {module_key(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _rank(key: str) -> tuple[int, int]:
    if key in ("__init__", "__main__"):
        return TOP
    return RANK[key]


def _graph() -> dict[str, list[tuple[str, bool, int]]]:
    return {k: _imports(p, k) for k, p in _modules().items() if not k.endswith("__init__") or k == "__init__"}


def test_every_module_has_a_layer():
    missing = sorted(k for k in _modules() if not k.endswith("__init__") and k not in RANK and k != "__main__")
    assert not missing, f"place these modules in README.md's layers block: {missing}"
    ghosts = sorted(k for k in RANK if k not in _modules())
    assert not ghosts, f"README.md's layers block names modules that do not exist: {ghosts}"


def test_folder_inits_import_nothing_of_finerank():
    """A layer folder's ``__init__.py`` is its docstring only: every import names the module it comes from."""
    bad = [f"{module_key(p)}: imports {d}" for p in PACKAGE.glob("*/__init__.py") for d, _, _ in _imports(p)]
    assert not bad, "\n".join(bad)


def test_no_import_runs_back_up_or_sideways():
    bad = []
    for mod, deps in _graph().items():
        for dep, _, line in deps:
            if dep == mod or dep not in RANK_KEYS:
                continue
            mi, mj = _rank(mod)
            di, dj = _rank(dep)
            same_folder = mi == di
            if (same_folder and dj >= mj) or (not same_folder and di >= mi):
                bad.append(f"{mod}:{line} imports {dep} (layer {di}.{dj}; {mod} is {mi}.{mj})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {d for d, _, _ in deps if d in RANK_KEYS and d != m} for m, deps in _graph().items()}
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
    lazy = [f"{mod}:{line} imports {dep} inside a function" for mod, deps in _graph().items()
            for dep, at_top, line in deps if not at_top and (mod, dep) not in LAZY_OK]
    assert not lazy, "\n".join(lazy)


def test_the_layer_check_catches_a_violation(tmp_path):
    """The checker itself can fail: an import of a higher layer and an in-function import are both seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..scorers.cross_encoder import Reranker\n\ndef f():\n    from ..cli.app import main\n"
                   "from .collection import load\n")
    found = _imports(bad, "io.bad")
    assert ("scorers.cross_encoder", True, 1) in found and ("cli.app", False, 4) in found
    assert ("io.collection", True, 5) in found
    assert RANK["scorers.cross_encoder"] > RANK["io.collection"]


def test_the_layers_block_is_read(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- layers -->\n```\ncore/  a b | c  # comment\n.  cli\n```\n<!-- /layers -->\n")
    assert read_layers(readme) == [("core", [["a", "b"], ["c"]]), (".", [["cli"]])]


# ------------------------------------------------------------------------------------------------ size
def test_no_module_or_function_is_too_long():
    """No module over 500 lines, no function over 80 (the house's limits; a long one is split, not excused)."""
    long = []
    for key, p in _modules().items():
        lines = p.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long.append((key, f"{key}: {lines} lines"))
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append((f"{key}:{node.name}", f"{key}:{node.lineno} {node.name}: {n} lines"))
    over = [msg for k, msg in long if k not in TOO_LONG]
    assert not over, "\n".join(over)
    fixed = TOO_LONG - {k for k, _ in long}
    assert not fixed, f"within the limits now: remove from TOO_LONG {sorted(fixed)}"


# ------------------------------------------------------------------------------------------------ public API
def test_public_names_are_stable_objects():
    """Each name in __all__ is the same object however often it is read, and after every submodule was imported
    (importing a submodule must not rebind a name such as ``inspect`` or ``train`` to the module)."""
    fr = importlib.import_module("finerank")
    first = {name: getattr(fr, name) for name in fr.__all__}
    for mod in RANK:
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


# ------------------------------------------------------------------------------------------------ the graph drawn
def folder_graph() -> str:
    """The import graph between folders (the top shells as one node each), as a Mermaid flowchart: an arrow from a
    folder to each lower folder it imports from, ground floor at the bottom."""
    def node(key: str) -> str:
        parts = key.split(".")
        return parts[0] if len(parts) > 1 else key

    edges = sorted({(node(m), node(d)) for m, deps in _graph().items() if m not in ("__init__", "__main__")
                    for d, _, _ in deps if d in RANK and node(d) != node(m)})
    order = [f if f != "." else m for f, floors in LAYERS for m in ([f] if f != "." else sum(floors, []))]
    lines = ["flowchart BT"] + [f"  {d} --> {m}" for m, d in sorted(edges, key=lambda e: (order.index(e[0]),
                                                                                          order.index(e[1])))]
    return "\n".join(lines)


def test_the_readme_draws_the_import_graph():
    """README.md's Mermaid block is the graph the code has (regenerate it from the message when the imports change);
    every arrow points down the layers: no circle, nothing up or sideways."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- import-graph -->\s*```mermaid\n(.*?)```\s*<!-- /import-graph -->", text, re.S)
    want = folder_graph()
    assert m and m.group(1).strip() == want, "README.md's import graph block should read:\n" + want
