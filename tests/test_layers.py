"""The layering, read from the source: the core imports nothing above it, a backend imports only the core and
`backends/base.py` (never another backend, the tuner, dispatch or the command line), the library never imports the
command line, and no import cycle exists between the project's modules. Every import counts, including those inside
functions (a lazy import hides a cycle, it does not remove it); only `if TYPE_CHECKING:` blocks are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autotune", "backends")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Project modules imported anywhere in `tree` except under `if TYPE_CHECKING:`."""
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
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` depends on the submodule when there is one, else on `pkg` itself (parent
            # packages are not counted, as for `import pkg.sub`)
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = _imports(tree, name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in MODULES and t != name}
    return graph


GRAPH = _graph()


def _allowed_for_backend(module: str, target: str) -> bool:
    own = ".".join(module.split(".")[:2])  # backends.<name>
    return target.startswith("autotune.core") or target in ("backends.base", own) or target.startswith(own + ".")


def test_the_graph_is_read() -> None:
    # The checks below are only as good as the graph: it must see the known edges.
    assert "autotune.core.problem" in GRAPH["backends.base"]
    assert "backends.base" in GRAPH["backends.numpy"]
    assert any(t.startswith("autotune.core") for t in GRAPH["backends.opencl.plans"])


def test_core_imports_only_core() -> None:
    bad = {m: sorted(t for t in ts if not t.startswith("autotune.core"))
           for m, ts in GRAPH.items() if m.startswith("autotune.core")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_backends_import_only_core_and_base() -> None:
    bad = {}
    for m, ts in GRAPH.items():
        if m == "backends":  # the registry
            wrong = sorted(t for t in ts if not (t.startswith("autotune.core") or t == "backends.base"))
        elif m == "backends.base":
            wrong = sorted(t for t in ts if not t.startswith("autotune.core"))
        elif m.startswith("backends."):
            wrong = sorted(t for t in ts if not _allowed_for_backend(m, t))
        else:
            continue
        if wrong:
            bad[m] = wrong
    assert bad == {}


def test_library_never_imports_the_command_line() -> None:
    bad = {m: sorted(t for t in ts if t.startswith("autotune.cli"))
           for m, ts in GRAPH.items() if not m.startswith("autotune.cli")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", ["autotune", "autotune.core.problem", "backends.numpy"])
def test_importing_stays_light(module: str) -> None:
    """`import autotune` (and the core, and a backend) pulls in neither torch, triton, pyopencl nor dispatch."""
    import subprocess
    import sys
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'triton', 'pyopencl', 'autotune.dispatch') "
            f"if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
