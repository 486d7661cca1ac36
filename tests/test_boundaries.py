"""Architecture rules: the core never imports plugins; plugins use only the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import wavelens

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
            assert not module.startswith("wavelens.plugins"), f"{path} imports {module}"
            assert module.split(".")[0] not in ("framework", "plugins"), f"{path} imports {module}"


def test_builtin_plugins_import_only_public_framework_names():
    public = set(wavelens.__all__)
    for path in (REPO / "plugins").rglob("*.py"):
        for module, names in imports_of(path):
            assert module.split(".")[0] not in ("framework", "plugins"), f"{path} imports {module}"
            if module.split(".")[0] != "wavelens" or module.startswith("wavelens.plugins"):
                continue
            assert module == "wavelens", f"{path} imports the private module {module}"
            assert set(names) <= public, f"{path} imports non-public {set(names) - public}"


def test_every_registry_module_exists_under_plugins():
    entries = yaml.safe_load((REPO / "registry.yaml").read_text())["plugins"]
    for entry in entries:
        assert entry["module"].startswith("wavelens.plugins.")
        relative = Path("plugins", *entry["module"].split(".")[2:])
        assert (REPO / f"{relative}.py").is_file() or (REPO / relative / "__init__.py").is_file()


def test_plugins_registry_link_points_at_the_top_level_registry():
    link = REPO / "plugins" / "registry.yaml"
    assert link.is_symlink() and link.resolve() == (REPO / "registry.yaml").resolve()


def test_the_installed_packages_are_wavelens_alone():
    """pyproject.toml lists every package folder under its import name, and loading
    the core and every built-in plugin imports no top-level framework or plugins."""
    import subprocess
    import sys
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"wavelens": REPO / "framework", "wavelens.plugins": REPO / "plugins"}
    expected = {"wavelens"} | {
        ".".join(["wavelens.plugins", *init.parent.relative_to(REPO / "plugins").parts]).rstrip(".")
        for init in (REPO / "plugins").rglob("__init__.py")
    }
    assert set(config["packages"]) == expected
    assert {k: REPO / v for k, v in config["package-dir"].items()} == folders
    code = ("import sys\nfrom wavelens.host import PluginRegistry\nPluginRegistry.discover().all()\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('framework', 'plugins')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO / "docs").stdout
    assert out.strip() == "[]"


# What the core must not know: the papers, their metrics, table layouts and models.
PAPER_VOCABULARY = ("pesq", "stoi", "csig", "cbak", "covl", "segsnr", "ssnr", "si_sdr", "si-sdr", "table i",
                    "ciwgan", "fiwgan", "wavegan", "csm", "vanet", "voicebank", "timit", "composite",
                    "mgcv", "gamm", "lexical", "begu", "def enhance", "def generate", "enhanced")


def test_the_core_knows_kinds_and_runs_not_the_papers():
    import re

    words = re.compile("|".join(rf"\b{re.escape(word)}\b" for word in PAPER_VOCABULARY))
    found = []
    for path in sorted((REPO / "framework").rglob("*.py")):
        if path.name == "_environment.py":  # the environment check names system packages
            continue
        for number, line in enumerate(path.read_text().lower().splitlines(), start=1):
            found += [f"{path.name}:{number}: {match}" for match in words.findall(line)]
    assert found == []


def test_the_public_modules_are_the_plugin_api_the_host_api_and_the_command_line():
    public = sorted(p.name for p in (REPO / "framework").glob("*.py") if not p.name.startswith("_"))
    assert public == ["cli.py", "host.py"]  # and wavelens/__init__.py, the plugin API
    import wavelens.host

    assert not set(wavelens.__all__) & set(wavelens.host.__all__)
    for name in wavelens.__all__ + wavelens.host.__all__:
        assert getattr(wavelens.host if name in wavelens.host.__all__ else wavelens, name) is not None


def test_host_names_from_the_top_level_still_resolve_with_a_warning_naming_wavelens_host():
    import wavelens.host

    with pytest.warns(DeprecationWarning, match="import it from wavelens.host"):
        assert wavelens.Run is wavelens.host.Run
    with pytest.raises(AttributeError):
        _ = wavelens.no_such_name
