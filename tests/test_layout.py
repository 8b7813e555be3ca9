"""The package's shape: every module imports, no import cycles, stages import only downwards,
and tag names live in one place."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import harness

ROOT = Path(harness.__file__).parent
MODULES = sorted(
    ".".join(("harness", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in ROOT.rglob("*.py"))

# Each stage may import only stages listed after it (DESIGN.md: data flows upward). Modules at
# the package root are stages of their own. `config` validates each section against the
# registries of the stages below it; those stages take config sections as arguments and
# import their types only under TYPE_CHECKING.
STAGES = ("cli", "bench", "report", "experiment", "probes", "train", "config", "evaluate",
          "optim", "model", "data", "tracking", "home", "atomic", "subprocess_group", "interrupt", "memory",
          "errors")
# Beyond the order: the report reads what was recorded and never runs an experiment.
FORBIDDEN = {"report": ("experiment", "train", "probes")}


def _stage(module: str) -> str:
    return module.split(".")[1] if module != "harness" else "harness"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str) -> set[str]:
    """harness modules `module` imports anywhere (functions too: a lazy import is still a
    dependency), except under ``if TYPE_CHECKING:``, which never runs."""
    path = ROOT.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycles_between_modules():
    # A package importing its own submodules (re-exports) is not a cycle of the design
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_stages_import_only_downwards():
    rank = {stage: i for i, stage in enumerate(STAGES)}
    wrong = sorted(f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
                   if _stage(m) in rank and _stage(d) in rank
                   and rank[_stage(d)] < rank[_stage(m)])
    wrong += sorted(f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
                    if _stage(d) in FORBIDDEN.get(_stage(m), ()))
    assert not wrong, "\n".join(wrong)
    assert set(_stage(m) for m in MODULES) - {"harness", "__main__"} <= set(STAGES)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_tag_names_are_spelled_only_in_the_schema():
    literal = re.compile(r"""["']harness\.""")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(ROOT.rglob("*.py"))
                 if p != ROOT / "tracking" / "schema.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not offenders, offenders


def test_no_process_wide_mlflow_state():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "set_tracking_uri" in p.read_text()]
    assert not offenders, offenders
