"""The layers of docs/architecture.md ("Packages and layers"), checked on the real import graph.

Every `import` and `from ... import` in sandkit's sources counts, wherever it is: at the top, inside
a function (the lazy imports that keep `sandkit images` fast), or under `if TYPE_CHECKING:` (a
type checker follows those too). A failure names the file, the line and the rule it breaks; the
fix is to move the code to the right layer, or, if the design changed, this table and the
architecture page together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import sandkit

PACKAGE_DIR = Path(sandkit.__file__).parent

# Which layer each module belongs to: the longest matching prefix wins.
LAYER_OF = {
    "sandkit.errors": "errors",
    "sandkit.home": "base",
    "sandkit.sizes": "base",
    "sandkit.idmap": "base",
    "sandkit.ipc": "ipc",
    "sandkit.security": "security",
    "sandkit.images": "images",
    "sandkit.net": "net",
    "sandkit._clone_ffi": "native",
    "sandkit._init_bin": "native",
    "sandkit.detached": "detached",
    "sandkit.detached.supervisor": "supervisor",
    "sandkit.runtime": "runtime",
    "sandkit": "facade",  # the package itself: the lazy public names
    "sandkit.aio": "facade",
    "sandkit.api": "facade",
    "sandkit._portal": "facade",
    "sandkit.doctor": "doctor",
    "sandkit.cli": "cli",
    "sandkit.__main__": "cli",
    "sandkit.cli._runtime": "cli-door",
    "sandkit.pytest_plugin": "plugin",
    "sandkit._build_clone": "build",
    "sandkit.build": "builder",
}

# What each layer may import besides itself: the direction of the arrows in the architecture page.
MAY_IMPORT = {
    "errors": set(),
    "base": {"errors"},
    "ipc": {"errors", "base"},
    "security": {"errors", "base"},
    # images: also "builder", for Image.build's lazy import of its engine (the one way up).
    "images": {"errors", "base", "builder"},
    "net": {"errors", "base"},
    "native": set(),
    # Detached containers: the state directories, the supervisor's wire format and the
    # clients' side; the runtime's attached containers use them, and so does the CLI.
    "detached": {"errors", "base"},
    "runtime": {"errors", "base", "ipc", "security", "images", "net", "native", "detached"},
    # The supervisor process runs containers with the runtime.
    "supervisor": {"errors", "base", "images", "net", "runtime", "detached"},
    "facade": {"errors", "base", "security", "images", "net", "runtime"},
    "doctor": {"errors", "base", "net", "runtime"},
    # The CLI: the public API, the image and network stores it fronts, and the runtime only
    # through its door.
    "cli": {
        "errors",
        "base",
        "images",
        "net",
        "facade",
        "doctor",
        "cli-door",
        "detached",
        "builder",
    },
    "cli-door": {"runtime"},
    "plugin": {"facade"},
    "build": set(),
    # Dockerfile builds: the store, and containers for RUN steps; the sync entry uses _portal.
    "builder": {"errors", "base", "images", "net", "runtime", "facade"},
}

# Imports under `if TYPE_CHECKING:` that break the rules above, each with why it may.
TYPE_ONLY_EXCEPTIONS = {
    ("sandkit.errors", "sandkit.runtime.results"): "the annotation of ExecError.result",
}


class Import(NamedTuple):
    importer: str
    imported: str
    path: Path
    line: int
    type_only: bool

    def __str__(self) -> str:
        where = self.path.relative_to(PACKAGE_DIR.parent)
        kind = " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{where}:{self.line}: {self.importer} imports {self.imported}{kind}"


def _module_files() -> dict[str, Path]:
    """Every module of the package, by dotted name: sources and compiled extensions."""
    modules = {}
    for path in PACKAGE_DIR.rglob("*"):
        if path.suffix not in (".py", ".so"):
            continue
        parts = list(path.relative_to(PACKAGE_DIR.parent).parts)
        parts[-1] = parts[-1].split(".")[0]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def layer_of(module: str) -> str | None:
    for prefix in sorted(LAYER_OF, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYER_OF[prefix]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    node: ast.AST, type_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node``, in functions and classes too, with whether it is
    only seen by type checkers."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, type_only
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _import_nodes(child, True)
        for child in node.orelse:
            yield from _import_nodes(child, type_only)
        return
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, type_only)


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The sandkit modules an import statement loads (``from pkg import name`` loads the
    submodule pkg.name when there is one, else pkg itself)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    found = (f"{base}.{alias.name}" for alias in node.names)
    return list(dict.fromkeys(name if name in MODULES else base for name in found))


def _sandkit_imports() -> list[Import]:
    found = []
    for module, path in sorted(MODULES.items()):
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, type_only in _import_nodes(tree):
            for target in _targets(module, path, node):
                if target == "sandkit" or target.startswith("sandkit."):
                    found.append(Import(module, target, path, node.lineno, type_only))
    return found


IMPORTS = _sandkit_imports()


def _breaks_the_rules(imp: Import) -> bool:
    mine, theirs = layer_of(imp.importer), layer_of(imp.imported)
    if mine == theirs or theirs in MAY_IMPORT[mine]:
        return False
    return not (imp.type_only and (imp.importer, imp.imported) in TYPE_ONLY_EXCEPTIONS)


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, (
        f"put these modules in a layer (LAYER_OF here, and docs/architecture.md): {unplaced}"
    )


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = sorted(MAY_IMPORT[layer])
    broken = [
        str(imp) for imp in IMPORTS if layer_of(imp.importer) == layer and _breaks_the_rules(imp)
    ]
    assert not broken, (
        f"the {layer!r} layer may import only {allowed or 'nothing of sandkit'} "
        "(docs/architecture.md, 'Packages and layers'):\n" + "\n".join(broken)
    )


def test_the_scan_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    # Guards the checker itself: an import graph that missed these would pass anything.
    edges = {(imp.importer, imp.imported, imp.type_only) for imp in IMPORTS}
    assert ("sandkit.cli.attach", "sandkit.cli._runtime", False) in edges  # inside a function
    assert ("sandkit.cli.attach", "sandkit.aio", True) in edges  # under TYPE_CHECKING
    assert ("sandkit.runtime.container", "sandkit.ipc", False) in edges  # `from ..ipc import (...)`
    assert ("sandkit.runtime.spawn", "sandkit._clone_ffi", False) in edges  # `from .. import ext`


def test_each_type_only_exception_is_still_needed() -> None:
    edges = {(imp.importer, imp.imported) for imp in IMPORTS if imp.type_only}
    assert set(TYPE_ONLY_EXCEPTIONS) <= edges
