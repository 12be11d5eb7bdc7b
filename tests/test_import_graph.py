"""The package's import structure (docs/architecture.md, section 2.1): the module-level imports
between metasolve's modules form a DAG, and no function body imports a metasolve module.

The graph is read with :mod:`ast`, not by importing anything: a node per module (a package is its
``__init__``), an edge per ``from . import`` / ``from ..x import y`` / ``import metasolve.x``
executed when the module is imported (module level and class bodies; an ``if TYPE_CHECKING:``
block does not run and is not an edge). ``from ..x import y`` is an edge to ``x.y`` when ``y`` is a
submodule of the package ``x`` and to ``x`` otherwise (a name re-exported by ``x/__init__``).
Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so every edge to a module also
counts as an edge to its enclosing packages, except the importer's own (those are already being
imported when it runs; an explicit ``from .. import name`` of one of them is still an edge: it reads
the package's ``__init__`` while that is half run).

Function-local imports of metasolve's own modules are refused: one is either a cycle in disguise or
a layering mistake. Optional heavy third-party packages may still be imported inside functions;
they are not metasolve modules and are not looked at.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "metasolve"

# Function-local imports of metasolve modules that are allowed, as (importer, imported module).
# Each needs a comment saying why it cannot be a module-level import.
ALLOWED_LOCAL: set[tuple[str, str]] = {
    # `import metasolve` must not import torch (the command line starts from it): the package
    # imports its API on the first read of a public name (PEP 562 __getattr__).
    ("metasolve", "metasolve.api"),
    # `metasolve --help` and `metasolve list` must not import torch: the commands that run or
    # render experiments import the runner when they start.
    ("metasolve.cli", "metasolve.runner"),
}


def discover(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every module of ``package`` under ``src``."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Yield ``(node, in_function)`` for every import executed when the module or one of its
    functions runs (not those under ``if TYPE_CHECKING:``)."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body:
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            yield from walk(child, inner)

    yield from walk(tree, False)


def _targets(node, importer: str, is_package: bool, modules, package: str) -> set[str]:
    """The metasolve modules an import statement names (empty for third-party imports)."""
    if isinstance(node, ast.Import):
        found = set()
        for alias in node.names:
            if alias.name == package or alias.name.startswith(package + "."):
                name = alias.name
                while name not in modules:  # `import metasolve.x.attr` is not valid; be safe
                    name = name.rpartition(".")[0]
                found.add(name)
        return found
    if node.level == 0:
        if not (node.module == package or (node.module or "").startswith(package + ".")):
            return set()
        base = node.module
    else:
        # `from .` in a package's __init__ is the package itself; in a module, its package.
        anchor = importer.split(".") if is_package else importer.split(".")[:-1]
        up = node.level - 1
        if up >= len(anchor):
            raise ValueError(f"{importer}: relative import beyond the top-level package")
        anchor = anchor[:len(anchor) - up]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if base not in modules:
        raise ValueError(f"{importer}: imports {base!r}, which is not a module of {package}")
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in modules else base)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(src: Path = SRC, package: str = PACKAGE):
    """``(edges, local)``: module -> set of modules its import runs, and the list of
    ``(importer, imported, line)`` of function-local imports of the package's own modules."""
    modules = discover(src, package)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    local = []
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = set(_ancestors(name)) | {name}
        for node, in_function in _imports(tree):
            for target in _targets(node, name, is_package, modules, package):
                if in_function:
                    local.append((name, target, node.lineno))
                    continue
                if target != name:  # an explicit import of an enclosing package is an edge
                    edges[name].add(target)
                # Importing a.b.c first runs a/__init__ and a/b/__init__.
                edges[name].update(p for p in _ancestors(target) if p not in own)
    return edges, local


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None if the graph is a DAG."""
    colour = dict.fromkeys(edges, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt, 0) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt, 0) == 0:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if colour[node] == 0:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_module_level_imports_form_a_dag():
    edges, _ = import_graph()
    # The reader must see the real structure, not an empty graph.
    assert "metasolve.solvers.base" in edges["metasolve.learned.solver"]
    assert "metasolve.solvers" in edges["metasolve.learned.solver"]  # the package runs first
    assert "metasolve.learned" in edges["metasolve.api"]
    assert edges["metasolve"] == {"metasolve._version"}  # light: the API is imported lazily
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_local_imports_of_metasolve_modules():
    _, local = import_graph()
    offending = [f"{importer}:{line} imports {target}" for importer, target, line in local
                 if (importer, target) not in ALLOWED_LOCAL]
    assert not offending, ("function-local imports of metasolve modules (import at module "
                           "level, or move the code to the layer it belongs to):\n"
                           + "\n".join(offending))


def test_allow_list_is_not_stale():
    _, local = import_graph()
    used = {(importer, target) for importer, target, _ in local}
    assert ALLOWED_LOCAL <= used, f"allow-list entries no longer needed: {ALLOWED_LOCAL - used}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_resolves_relative_imports_and_finds_cycles(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .a import f\nfrom . import sub\n",
        "pkg/a.py": "from .sub.b import g\n\ndef f():\n    from .sub import c\n",
        "pkg/sub/__init__.py": "from .b import g\n",
        "pkg/sub/b.py": "import os\nfrom ..c_top import h\nfrom .. import c_top\n",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from ..a import f\n",
        "pkg/d.py": "from . import __version__\n",
        "pkg/c_top.py": "from .sub import c\n",
    })
    edges, local = import_graph(tmp_path, "pkg")
    assert edges["pkg"] == {"pkg.a", "pkg.sub"}
    assert edges["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert edges["pkg.sub.b"] == {"pkg.c_top"}  # `from .. import c_top` is the module c_top
    assert edges["pkg.sub.c"] == set()  # TYPE_CHECKING imports do not run
    assert edges["pkg.c_top"] == {"pkg.sub", "pkg.sub.c"}
    assert edges["pkg.d"] == {"pkg"}  # reads the package's __init__: an edge
    assert local == [("pkg.a", "pkg.sub.c", 4)]
    # pkg.sub -> pkg.sub.b -> pkg.c_top -> pkg.sub (through the package it imports from).
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert {"pkg.sub", "pkg.sub.b", "pkg.c_top"} <= set(cycle)

    _write(tmp_path, {"pkg/c_top.py": "import os\n"})
    edges, _ = import_graph(tmp_path, "pkg")
    assert find_cycle(edges) is None


def test_a_relative_import_above_the_package_is_reported(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from ... import x\n"})
    with pytest.raises(ValueError, match="beyond"):
        import_graph(tmp_path, "pkg")
