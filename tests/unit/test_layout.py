"""The layering of the code, read from its source (AST, no imports run).

- No module of ``dicom_node/`` or ``api/`` uses another project module's private
  name: neither ``from x import _y`` nor ``x._y`` on an imported module (dunder
  names are not private). A name others need is made public in its owning module.
- The services never import a front end: ``api``, ``dicom_node.scp``,
  ``dicom_node.jobs``.
- ``dicom_node.domain`` is pure: it imports nothing from the database, the
  services or the front ends.

Every import counts, also one inside a function or under ``TYPE_CHECKING``.
Ruff's import-private-name (PLC2701) would cover only the first half of the first
rule and is a preview rule in the ruff this project pins, so this test enforces it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support import REPO

PACKAGES = ("dicom_node", "api")
FRONT_ENDS = ("api", "dicom_node.scp", "dicom_node.jobs")
NOT_FOR_THE_DOMAIN = (*FRONT_ENDS, "dicom_node.db", "dicom_node.services")


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. dicom_node.services.workflow.orders
    path: Path
    is_package: bool

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"


def _modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            found[name] = Module(name, path, is_package)
    return found


MODULES = _modules()


@cache
def _tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(), str(module.path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module an ``import from`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    # a package's own __init__ is level 1 of itself; a module's, of its package
    keep = len(base) - node.level + (1 if module.is_package else 0)
    return ".".join(base[:keep] + ([node.module] if node.module else []))


def _imports(module: Module, tree: ast.Module) -> Iterator[tuple[ast.AST, str, str | None]]:
    """(node, imported module, imported name or None) for every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                yield node, source, alias.name


def _module_aliases(module: Module, tree: ast.Module) -> dict[str, str]:
    """Local names bound to a project module: ``import a.b as m``, ``from a import b``
    (b a module). ``import a.b`` binds ``a``; its attribute chains are resolved
    in ``_private_uses``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    aliases[alias.asname] = alias.name
                elif not alias.asname:
                    top = alias.name.split(".")[0]
                    if top in MODULES:
                        aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                full = f"{_absolute(module, node)}.{alias.name}"
                if full in MODULES:
                    aliases[alias.asname or alias.name] = full
    return aliases


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _private_uses(module: Module, tree: ast.Module) -> Iterator[str]:
    for node, source, name in _imports(module, tree):
        if name is not None and _is_private(name) and _within(source, PACKAGES):
            yield f"{module.where(node)}: from {source} import {name}"
    aliases = _module_aliases(module, tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain = _dotted(node.value)
        if chain is None or chain[0] not in aliases:
            continue
        owner = ".".join([aliases[chain[0]], *chain[1:]])
        if owner in MODULES and owner != module.name:
            yield f"{module.where(node)}: {'.'.join(chain)}.{node.attr} ({owner})"


def _forbidden_imports(
    module: Module, tree: ast.Module, forbidden: tuple[str, ...]
) -> Iterator[str]:
    for node, source, name in _imports(module, tree):
        # ``from dicom_node import jobs`` names the package as a name
        targets = [source] if name is None else [source, f"{source}.{name}"]
        if any(_within(target, forbidden) for target in targets):
            shown = source if name is None else f"{source} import {name}"
            yield f"{module.where(node)}: {shown}"


def _imports_of(prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for module in MODULES.values():
        if _within(module.name, prefixes):
            tree = _tree(module)
            found.extend(_forbidden_imports(module, tree, forbidden))
    return found


def test_no_module_uses_another_modules_private_name() -> None:
    found: list[str] = []
    for module in MODULES.values():
        tree = _tree(module)
        found.extend(_private_uses(module, tree))
    assert not found, (
        "private names used outside their module (make them public in the owner):\n"
        + "\n".join(found)
    )


def test_services_import_no_front_end() -> None:
    found = _imports_of(("dicom_node.services",), FRONT_ENDS)
    assert not found, "services importing a front end:\n" + "\n".join(found)


def test_the_domain_imports_no_database_service_or_front_end() -> None:
    found = _imports_of(("dicom_node.domain",), NOT_FOR_THE_DOMAIN)
    assert not found, "domain modules importing outer layers:\n" + "\n".join(found)


def test_the_checks_see_what_they_look_for() -> None:
    """Each rule finds a planted offender: a check that cannot fail is no check."""
    source = (
        "import dicom_node.services.workflow as wf\n"
        "from dicom_node.db import engine\n"
        "from dicom_node.db.engine import _hidden, __all__\n"
        "from ..db import _relative\n"
        "def f():\n"
        "    from api.app import create_app\n"
        "    return wf._x, engine._y, engine.__name__, dicom_node.db.engine._z\n"
        "import dicom_node.db.engine\n"
    )
    module = Module("dicom_node.domain.planted", REPO / "dicom_node/domain/planted.py", False)
    tree = ast.parse(source)
    uses = [line.split(": ", 1)[1] for line in _private_uses(module, tree)]
    assert sorted(uses) == sorted(
        [
            "from dicom_node.db.engine import _hidden",
            "from dicom_node.db import _relative",
            "wf._x (dicom_node.services.workflow)",
            "engine._y (dicom_node.db.engine)",
            "dicom_node.db.engine._z (dicom_node.db.engine)",
        ]
    )
    layers = [
        line.split(": ", 1)[1] for line in _forbidden_imports(module, tree, NOT_FOR_THE_DOMAIN)
    ]
    assert sorted(layers) == sorted(
        [
            "dicom_node.db import engine",
            "dicom_node.db.engine import _hidden",
            "dicom_node.db.engine import __all__",
            "dicom_node.db import _relative",
            "api.app import create_app",
            "dicom_node.db.engine",
            "dicom_node.services.workflow",
        ]
    )
    # the services' rule: a front end named as an imported package name counts too
    planted = ast.parse("from dicom_node import jobs\nfrom dicom_node import settings\n")
    assert [line.split(": ", 1)[1] for line in _forbidden_imports(module, planted, FRONT_ENDS)] == [
        "dicom_node import jobs"
    ]
