"""Architecture rules: the core never imports plugins; plugins use only the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

import framework

from conftest import REPO


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def test_framework_never_imports_plugins():
    for path in (REPO / "framework").rglob("*.py"):
        for module, _ in imports_of(path):
            assert module.split(".")[0] != "plugins", f"{path} imports {module}"


def test_builtin_plugins_import_only_public_framework_names():
    public = set(framework.__all__)
    for path in (REPO / "plugins").rglob("*.py"):
        for module, names in imports_of(path):
            if module.split(".")[0] != "framework":
                continue
            assert module == "framework", f"{path} imports the private module {module}"
            assert set(names) <= public, f"{path} imports non-public {set(names) - public}"


def test_every_registry_module_exists_under_plugins():
    entries = yaml.safe_load((REPO / "registry.yaml").read_text())["plugins"]
    for entry in entries:
        assert entry["module"].startswith("plugins.")
        relative = Path(*entry["module"].split("."))
        assert (REPO / f"{relative}.py").is_file() or (REPO / relative / "__init__.py").is_file()


def test_plugins_registry_link_points_at_the_top_level_registry():
    link = REPO / "plugins" / "registry.yaml"
    assert link.is_symlink() and link.resolve() == (REPO / "registry.yaml").resolve()
