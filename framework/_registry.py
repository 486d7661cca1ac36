"""Loading plugins and collecting what they contribute.

Load order (documented in docs/architecture.md):

1. **Built-ins** listed in ``registry.yaml`` (each entry: name, kind, module), in file
   order. Each module is registered under its dotted module path.
2. **Third-party packages** through the entry-point group ``wavelens.plugins``, in
   the order ``importlib.metadata`` reports them; each is registered under its
   entry-point name.
3. **Local plugin files** a spec names (``plugins: [./my_cnn.py]``, relative to the
   spec), in spec order; each is registered under ``file:<stem>``.

Built-in modules are imported lazily: ``registry.yaml`` already says which module
contributes which name, so discovery reads it and imports a built-in module only
when one of its contributions, commands or extension points is first used (and then
checks the module against its entries). Entry points and files are imported when
discovered. As each plugin is registered, ``check_pending()`` rejects functions
marked ``@hookimpl`` that match no hook, and the plugin's hooks are called once to
collect its contributions. Names are unique across all plugins and kinds.

Disabling: ``WAVELENS_DISABLE_PLUGINS=a,b`` (or ``wavelens --disable a``) skips the
plugins or contributions with those names; a disabled built-in module is not even
imported.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pluggy
import yaml
from pydantic import BaseModel

from . import _hookspecs as hookspecs
from ._commands import COMMAND_NAME, CORE_COMMANDS, Command
from ._contributions import KINDS, NAME_PATTERN, Contribution, Kind
from ._errors import PluginError
from ._extensions import ExtensionPoint

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_ENV",
    "PluginSource",
    "LoadedContribution",
    "PluginRegistry",
    "find_registry_file",
    "disabled_from_env",
]

ENTRY_POINT_GROUP = "wavelens.plugins"
BUILTIN_PACKAGE = "wavelens.plugins"  # the plugins/ folder of the source tree
DISABLE_ENV = "WAVELENS_DISABLE_PLUGINS"
REGISTRY_ENV = "WAVELENS_REGISTRY"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin came from: ``builtin`` (module path), ``entry_point``
    (``name = value`` and its distribution) or ``file`` (absolute path)."""

    type: Literal["builtin", "entry_point", "file"]
    location: str

    def __str__(self) -> str:
        label = {"builtin": "built-in module", "entry_point": "entry point", "file": "file"}
        return f"{label[self.type]} {self.location}"


# registry.yaml lists contributions of the five kinds and the commands of built-ins.
REGISTRY_KINDS = (*KINDS, "command", "extension_point")


@dataclass(frozen=True)
class LoadedExtensionPoint:
    """An extension point a plugin declares, with the plugin it came from."""

    point: ExtensionPoint
    plugin: str
    source: PluginSource

    @property
    def name(self) -> str:
        return self.point.name


@dataclass(frozen=True)
class LoadedCommand:
    """A command a plugin adds to ``wavelens``, with the plugin it came from."""

    command: Command
    plugin: str
    source: PluginSource

    @property
    def name(self) -> str:
        return self.command.name


@dataclass(frozen=True)
class LoadedContribution:
    """A contribution together with its kind, plugin, source and version."""

    kind: Kind
    contribution: Contribution
    plugin: str
    source: PluginSource
    version: str

    @property
    def name(self) -> str:
        return self.contribution.name

    @property
    def params(self) -> type[BaseModel]:
        return self.contribution.params

    def describe(self) -> dict[str, Any]:
        """The stable JSON description used by ``wavelens plugins --json``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.contribution.description,
            "plugin": self.plugin,
            "source": {"type": self.source.type, "location": self.source.location},
            "version": self.version,
            "params_schema": self.params.model_json_schema(),
        }


def find_registry_file() -> Path:
    """Locate ``registry.yaml``: ``$WAVELENS_REGISTRY``, else beside the
    ``wavelens.plugins`` package (an installed wheel), else the repository top (a
    source checkout, whose ``plugins/`` folder that package is).

    The ``wavelens.plugins`` package is located without importing it.
    """
    override = os.environ.get(REGISTRY_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(
            f"cannot find the built-in '{BUILTIN_PACKAGE}' package; is wavelens installed "
            f"(pip install -e .)? Set {REGISTRY_ENV} to a registry.yaml to override."
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (package_dir / "registry.yaml", package_dir.parent / "registry.yaml"):
        if candidate.is_file():
            return candidate
    raise PluginError(f"no registry.yaml beside {package_dir}")


def disabled_from_env() -> set[str]:
    """Names listed in ``$WAVELENS_DISABLE_PLUGINS`` (comma-separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _package_version() -> str:
    try:
        return importlib.metadata.version("wavelens")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    """Whether ``dist`` is installed in place (``pip install -e``): its code can change
    without its version changing."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (ValueError, OSError):
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def _source_digest(module: str) -> str:
    """A digest of the Python source of ``module``'s top-level package (or of the
    module's file, for a lone module): an edit to any of its files changes it."""
    top = importlib.util.find_spec(module.split(".")[0])
    if top is None:
        return "unknown"
    if top.submodule_search_locations:
        folders = [Path(folder) for folder in top.submodule_search_locations]
        files = sorted((f.relative_to(folder).as_posix(), f)
                       for folder in folders for f in folder.rglob("*.py"))
    else:
        files = [(Path(top.origin).name, Path(top.origin))] if top.origin else []
    digest = hashlib.sha256()
    for name, file in files:
        digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _import_failure(what: str, exc: BaseException) -> PluginError:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return PluginError(
        f"{what} failed to import: {detail}\n"
        f"  (disable it with {DISABLE_ENV}=<name> or --disable <name> to run without it)"
    )


class PluginRegistry:
    """The plugins and their contributions.

    Build one with :meth:`discover`; look contributions up with :meth:`get`.

    Built-in plugins are imported lazily: ``registry.yaml`` says which module
    contributes which name, so a module is imported (and checked against its entries)
    only when one of its contributions, commands or extension points is asked for.
    Looking up one model imports that model's module and no other; ``names()`` reads
    the list and imports nothing. Entry-point plugins and local files are imported when
    discovered: what they contribute is only known from their hooks.
    """

    def __init__(self, disabled: Iterable[str] = ()):
        self.disabled = set(disabled)
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._sources: dict[str, PluginSource] = {}
        self._versions: dict[str, str] = {}
        self._listed: dict[str, tuple[str, str]] = {}  # registry.yaml: name -> (kind, module)
        self._registry_file: Path | None = None
        self._pending: dict[str, list[str]] = {}  # built-in modules not imported yet -> wanted names
        self._found: dict[str, LoadedContribution] = {}
        self._commands: dict[str, LoadedCommand] = {}
        self._extension_points: dict[str, LoadedExtensionPoint] = {}
        self._disabled_seen: set[str] = set()

    # -- loading ---------------------------------------------------------------

    @classmethod
    def discover(
        cls,
        files: Iterable[Path] = (),
        disabled: Iterable[str] | None = None,
        registry_file: Path | None = None,
        entry_points: bool = True,
    ) -> PluginRegistry:
        """Read the built-ins' list, load entry points and ``files``, in the documented
        order. Built-in modules are imported later, when first used.

        ``disabled`` defaults to the names in ``$WAVELENS_DISABLE_PLUGINS``.
        """
        registry = cls(disabled_from_env() if disabled is None else disabled)
        registry.load_builtins(registry_file or find_registry_file())
        if entry_points:
            registry.load_entry_points()
        for path in files:
            registry.load_file(path)
        return registry

    def _register(self, plugin: object, name: str, source: PluginSource, version: str) -> None:
        if name in self._sources:
            raise PluginError(
                f"plugin name {name!r} from {source} is already taken by {self._sources[name]}"
            )
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} from {source} is invalid: {exc}") from None
        self._sources[name] = source
        self._versions[name] = version
        self._collect(name)

    def _is_disabled(self, name: str) -> bool:
        if name in self.disabled:
            self._disabled_seen.add(name)
            return True
        return False

    def load_builtins(self, registry_file: Path) -> None:
        """Read the modules ``registry_file`` lists; each is imported when first used."""
        entries = _read_registry(registry_file)
        self._registry_file = registry_file
        modules: dict[str, list[str]] = {}
        for entry in entries:
            self._listed[entry["name"]] = (entry["kind"], entry["module"])
            modules.setdefault(entry["module"], []).append(entry["name"])
        for module_name, names in modules.items():
            if self._is_disabled(module_name):
                continue
            wanted = [n for n in names if not self._is_disabled(n)]
            if wanted:
                self._pending[module_name] = wanted

    def _import_builtin(self, module_name: str) -> None:
        if self._pending.pop(module_name, None) is None:
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise _import_failure(
                f"built-in plugin {module_name!r} ({self._registry_file})", exc
            ) from exc
        self._register(module, module_name, PluginSource("builtin", module_name), _package_version())
        self._check_module_complete(module_name)

    def _import_listed(self, *kinds: str) -> None:
        """Import every pending built-in module that lists something of ``kinds``
        (of any kind when none is given), in registry.yaml's order."""
        for module_name in list(self._pending):
            if not kinds or any(self._listed[n][0] in kinds for n in self._pending.get(module_name, [])):
                self._import_builtin(module_name)

    def load_entry_points(self) -> None:
        """Import and register the plugins of the ``wavelens.plugins`` group."""
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self._is_disabled(ep.name):
                continue
            dist = ep.dist
            dist_label = f"{dist.metadata['Name']} {dist.version}" if dist else "unknown package"
            source = PluginSource("entry_point", f"{ep.name} = {ep.value} ({dist_label})")
            try:
                plugin = ep.load()
            except Exception as exc:
                raise _import_failure(f"plugin {ep.name!r} from {source}", exc) from exc
            version = dist.version if dist else "unknown"
            if dist is not None and _is_editable(dist):
                version = f"{version}+src.{_source_digest(ep.module)}"
            self._register(plugin, ep.name, source, version)

    def load_file(self, path: Path) -> None:
        """Import a local plugin file and register it as ``file:<stem>``."""
        path = Path(path).resolve()
        name = f"file:{path.stem}"
        if self._is_disabled(name) or self._is_disabled(path.stem):
            return
        source = PluginSource("file", str(path))
        if not path.is_file():
            raise PluginError(f"plugin file {path} does not exist")
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()[:12]
        module_name = f"wavelens_local_plugins.{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot import {source}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise _import_failure(f"plugin {name!r} from {source}", exc) from exc
        self._register(module, name, source, f"file-{digest}")

    # -- collecting ------------------------------------------------------------

    def _collect(self, plugin: str) -> None:
        """Call one newly registered plugin's hooks; validate and index what it offers."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin_name = self._pm.get_name(exc.plugin) if exc.plugin else "?"
            source = self._sources.get(plugin_name or "", "unknown source")
            raise PluginError(
                f"plugin {plugin_name!r} from {source}: {exc}. Hooks are "
                + ", ".join(hookspecs.HOOK_FOR_KIND.values())
            ) from None
        for kind in KINDS:
            hook = hookspecs.HOOK_FOR_KIND[kind]
            for item, _, source, where in self._declared(hook, Contribution, plugin):
                loaded = self._check(item, kind, plugin, source, where)
                if loaded is None:
                    continue
                listed_kind = self._listed.get(loaded.name, ("",))[0]
                other = self._holder(self._found, loaded.name, listed_kind)
                if other is None:
                    self._found[loaded.name] = loaded
                    continue
                held = self._found.get(loaded.name)
                other_kind = held.kind if held is not None else listed_kind
                raise PluginError(
                    f"duplicate plugin name {loaded.name!r}: the {kind} from {source} and "
                    f"the {other_kind} from {other}. Disable one with {DISABLE_ENV}=<plugin name>."
                )
        self._collect_commands(plugin)
        self._collect_extension_points(plugin)

    def collect(self) -> dict[str, LoadedContribution]:
        """Import every built-in module not imported yet; every contribution by name."""
        self._import_listed()
        return self._found

    def _declared(self, hook: str, expected: type,
                  plugin: str) -> Iterator[tuple[Any, str, PluginSource, str]]:
        """``(item, plugin, source, where)`` for every item ``plugin`` returns from
        ``hook``; PluginError naming the plugin when the hook raises or returns
        something other than ``expected``."""
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            if impl.plugin_name != plugin:
                continue
            source = self._sources[impl.plugin_name]
            where = f"plugin {impl.plugin_name!r} from {source}"
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(f"{where} raised in {hook}(): {type(exc).__name__}: {exc}") from exc
            for item in [result] if isinstance(result, expected) else list(result or []):
                if not isinstance(item, expected):
                    if expected is Contribution:
                        kind = next(k for k, h in hookspecs.HOOK_FOR_KIND.items() if h == hook)
                        raise PluginError(f"{where} returned {type(item).__name__} from its {kind} "
                                          "hook; expected wavelens.Contribution")
                    raise PluginError(f"{where} returned {type(item).__name__} from {hook}; "
                                      f"expected wavelens.{expected.__name__}")
                yield item, impl.plugin_name, source, where

    def _listed_in_registry(self, name: str, kind: str, source: PluginSource) -> bool:
        """Whether a built-in's ``name`` is in registry.yaml as a ``kind`` of its module
        (anything not built in needs no entry)."""
        return source.type != "builtin" or self._listed.get(name) == (kind, source.location)

    def _collect_commands(self, plugin: str) -> None:
        found = self._commands
        for item, _, source, where in self._declared("wavelens_commands", Command, plugin):
            if not isinstance(item.name, str) or not COMMAND_NAME.match(item.name):
                raise PluginError(f"{where}: command name {item.name!r} must be lowercase letters, "
                                  "digits and hyphens, starting with a letter")
            if item.name in CORE_COMMANDS:
                raise PluginError(f"{where} adds the command {item.name!r}, which is one of the "
                                  f"core's ({', '.join(CORE_COMMANDS)})")
            if not (callable(item.add_arguments) and callable(item.run)):
                raise PluginError(f"{where}: command {item.name!r} needs callable add_arguments and run")
            if not self._listed_in_registry(item.name, "command", source):
                raise PluginError(f"{where} adds the command {item.name!r}, which registry.yaml does "
                                  f"not list as a command of {source.location}; add or correct its entry")
            if self._is_disabled(item.name):
                continue
            other = self._holder(found, item.name, "command")
            if other is not None:
                raise PluginError(f"two plugins add the command {item.name!r}: {other} "
                                  f"and {source}. Disable one with {DISABLE_ENV}=<plugin name>.")
            found[item.name] = LoadedCommand(item, plugin, source)

    def _collect_extension_points(self, plugin: str) -> None:
        found = self._extension_points
        for item, _, source, where in self._declared("wavelens_extension_points", ExtensionPoint, plugin):
            if not isinstance(item.name, str) or not NAME_PATTERN.match(item.name):
                raise PluginError(f"{where}: extension point name {item.name!r} must be lowercase "
                                  "letters, digits and underscores, starting with a letter")
            if not self._listed_in_registry(item.name, "extension_point", source):
                raise PluginError(f"{where} declares the extension point {item.name!r}, which "
                                  f"registry.yaml does not list as an extension_point of "
                                  f"{source.location}; add or correct its entry")
            other = self._holder(found, item.name, "extension_point")
            if other is not None:
                raise PluginError(f"two plugins declare the extension point {item.name!r}: "
                                  f"{other} and {source}")
            found[item.name] = LoadedExtensionPoint(item, plugin, source)

    def _holder(self, found: dict[str, Any], name: str, kind: str) -> PluginSource | None:
        """Where ``name`` already comes from: an entry of ``found``, or a built-in of
        ``kind`` whose module is not imported yet (registry.yaml lists it); None when
        the name is free."""
        if name in found:
            return found[name].source
        if self._listed_kind(name) == kind:
            return PluginSource("builtin", self._listed[name][1])
        return None

    def _in_load_order(self, items: dict[str, Any]) -> list[Any]:
        """Built-ins in registry.yaml's order, then the others as they were loaded."""
        order = {name: i for i, name in enumerate(self._listed)}
        return sorted(items.values(), key=lambda item: (item.source.type != "builtin",
                                                        order.get(item.name, 0)))

    def extension_points(self) -> list[LoadedExtensionPoint]:
        """The extension points the plugins declare, in load order."""
        self._import_listed("extension_point")
        return self._in_load_order(self._extension_points)

    def commands(self) -> list[LoadedCommand]:
        """The commands the plugins add, in load order (imports only the modules
        registry.yaml lists commands of: keep those light)."""
        self._import_listed("command")
        return self._in_load_order(self._commands)

    def _check(self, item: Contribution, kind: Kind, plugin: str, source: PluginSource,
               where: str) -> LoadedContribution | None:
        if not isinstance(item.name, str) or not NAME_PATTERN.match(item.name):
            raise PluginError(
                f"{where}: contribution name {item.name!r} must be lowercase letters, "
                "digits and underscores, starting with a letter"
            )
        if not (isinstance(item.params, type) and issubclass(item.params, BaseModel)):
            raise PluginError(f"{where}: {item.name}.params must be a pydantic model class")
        if item.params.model_config.get("extra") != "forbid":
            raise PluginError(
                f"{where}: {item.name}.params must forbid unknown fields "
                "(subclass wavelens.Params, or set model_config extra='forbid')"
            )
        if item.params.model_config.get("allow_inf_nan", True) is not False:
            raise PluginError(
                f"{where}: {item.name}.params must refuse NaN and infinite numbers "
                "(subclass wavelens.Params, or set model_config allow_inf_nan=False; a field "
                "where infinity means something can say so with Annotated[float, AllowInfNan(True)])"
            )
        if not callable(item.build):
            raise PluginError(f"{where}: {item.name}.build is not callable")
        if not self._listed_in_registry(item.name, kind, source):
            raise PluginError(
                f"{where} contributes the {kind} {item.name!r}, which registry.yaml "
                f"does not list as a {kind} of {source.location}; registry.yaml is the "
                "list of built-ins: add or correct its entry"
            )
        if self._is_disabled(item.name):
            return None
        version = item.version or self._versions[plugin]
        return LoadedContribution(kind, item, plugin, source, version)

    def _check_module_complete(self, module_name: str) -> None:
        offered = {"command": self._commands, "extension_point": self._extension_points}
        for name, (kind, module) in self._listed.items():
            if module == module_name and name not in offered.get(kind, self._found) \
                    and name not in self.disabled:
                raise PluginError(
                    f"registry.yaml lists the {kind} {name!r} in {module}, but that module "
                    f"contributes no {kind} of that name"
                )

    # -- lookup ----------------------------------------------------------------

    def all(self) -> list[LoadedContribution]:
        """Every contribution, sorted by kind (in hook order) and name (imports every
        built-in module)."""
        order = {kind: i for i, kind in enumerate(KINDS)}
        return sorted(self.collect().values(), key=lambda c: (order[c.kind], c.name))

    def _listed_kind(self, name: str) -> str | None:
        """The kind of a not-yet-imported built-in ``name`` (None when there is none)."""
        kind, module = self._listed.get(name, (None, None))
        return kind if module in self._pending and name in self._pending[module] else None

    def names(self, kind: Kind | None = None) -> list[str]:
        """Contribution names, sorted like :meth:`all`; imports nothing."""
        order = {k: i for i, k in enumerate(KINDS)}
        kinds = {name: c.kind for name, c in self._found.items()}
        for name in self._listed:
            listed = self._listed_kind(name)
            if listed in order:
                kinds[name] = listed
        return [name for name, k in sorted(kinds.items(), key=lambda nk: (order[nk[1]], nk[0]))
                if kind is None or k == kind]

    def find(self, name: str) -> LoadedContribution | None:
        """The contribution ``name`` (importing its built-in module if needed), or None."""
        if name not in self._found and self._listed_kind(name) in KINDS:
            self._import_builtin(self._listed[name][1])
        return self._found.get(name)

    def get(self, kind: Kind, name: str) -> LoadedContribution:
        """The contribution ``name`` of ``kind``; PluginError with suggestions otherwise."""
        found = self.find(name) if self._kind_of(name) == kind else None
        if found is not None and found.kind == kind:
            return found
        raise PluginError(self.unknown_message(kind, name))

    def _kind_of(self, name: str) -> str | None:
        found = self._found.get(name)
        return found.kind if found is not None else self._listed_kind(name)

    def unknown_message(self, kind: Kind, name: str) -> str:
        """Explain that ``name`` is not a ``kind`` plugin, suggesting close names."""
        other = self._kind_of(name)
        if other is not None:
            return f"{name!r} is a {other} plugin, not a {kind} plugin"
        known = self.names(kind)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
        message = f"unknown {kind} plugin {name!r}"
        if close:
            message += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        if name in self.disabled:
            message += f" (it is disabled by {DISABLE_ENV} or --disable)"
        message += f" (known {kind} plugins: {', '.join(known) or 'none'})"
        return message

    def unused_disables(self) -> set[str]:
        """Disabled names that matched no plugin or contribution."""
        return self.disabled - self._disabled_seen


def _read_registry(path: Path) -> list[dict[str, str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PluginError(f"cannot read the plugin registry {path}: {exc}") from None
    entries = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise PluginError(f"{path}: expected a top-level 'plugins:' list")
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}: plugins.{index}"
        if not isinstance(entry, dict) or set(entry) != {"name", "kind", "module"}:
            raise PluginError(f"{where}: each entry needs exactly name, kind and module")
        if entry["kind"] not in REGISTRY_KINDS:
            raise PluginError(f"{where}: kind {entry['kind']!r} is not one of {', '.join(REGISTRY_KINDS)}")
        if entry["name"] in seen:
            raise PluginError(f"{where}: duplicate name {entry['name']!r}")
        seen.add(entry["name"])
    return entries
