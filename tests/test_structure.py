"""The package's shape, checked from its source (no import): no import cycle between modules, no function
over 80 lines, at most 5 modules at the package root, and every stage folder says what it holds.

The import graph counts every `import` / `from ... import` in a module, inside functions and under
`TYPE_CHECKING` included: a cycle through a function-level import still ties the modules together.
`from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg` (its `__init__`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferdepth"
MAX_FUNCTION_LINES = 80
MAX_ROOT_MODULES = 5


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The absolute module of a `from ... import` (relative imports resolved against `module`)."""
    if not node.level:
        return node.module
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (every import statement anywhere in the file)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, is_package)
                if base is None:
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                if t == top or t.startswith(top + "."):
                    while t not in files and "." in t:  # `import a.b.c` names a module a.b.c, maybe an attr
                        t = t.rsplit(".", 1)[0]
                    if t in files and t != name:
                        deps.add(t)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_module_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the graph was really read
    assert find_cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import(tmp_path):
    """The check itself: a circle made only by an import inside a function is found."""
    pkg = tmp_path / "pkgx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkgx.sub.c import g\n    return g\n")
    (pkg / "sub" / "c.py").write_text("import pkgx.a\n\ndef g():\n    return 1\n")
    (pkg / "d.py").write_text("from pkgx import a\n")
    graph = import_graph(pkg)
    assert graph["pkgx.d"] == {"pkgx.a"} and graph["pkgx.a"] == {"pkgx.sub.b"}
    assert find_cycles(graph) == [["pkgx.a", "pkgx.sub.b", "pkgx.sub.c"]]
    (pkg / "sub" / "c.py").write_text("def g():\n    return 1\n")
    assert find_cycles(import_graph(pkg)) == []


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_is_over_80_lines():
    """Counted from `def` (decorators excluded) to the function's last line, docstring and comments included."""
    long = [f"{p.relative_to(PACKAGE)}:{line} {name} ({n} lines)"
            for p in sorted(PACKAGE.rglob("*.py")) for name, line, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert long == []


def test_the_function_length_check_counts_lines(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def short():\n    return 1\n\n\nasync def long():\n" + "    x = 1\n" * 81)
    assert {name: n for name, _, n in _functions(f)} == {"short": 2, "long": 82}


def test_the_package_root_holds_at_most_five_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_ROOT_MODULES, modules


@pytest.mark.parametrize("stage", sorted(p.name for p in PACKAGE.iterdir()
                                         if p.is_dir() and (p / "__init__.py").exists()))
def test_every_stage_folder_says_what_it_holds_and_may_import(stage):
    doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()) >= 2, f"{stage}/__init__.py needs a docstring of a few lines"
    assert "import" in doc.lower(), f"{stage}/__init__.py's docstring should say what the stage may import"


def conftest_imports(tests: Path) -> list[str]:
    """Test files that `import conftest`: with conftest.py in more than one folder, which one that name
    means depends on which folder pytest collected first (CI failed on exactly this)."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            if "conftest" in names:
                found.append(str(path.relative_to(tests)))
    return found


def test_no_test_imports_conftest_by_name(tmp_path):
    assert conftest_imports(Path(__file__).resolve().parent) == [], "import shared names from tests/helpers.py"
    (tmp_path / "test_x.py").write_text("from conftest import REPO\n")
    assert conftest_imports(tmp_path) == ["test_x.py"]
