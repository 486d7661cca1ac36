"""Extension points: parts of a plugin that other packages add to.

A plugin may let other packages extend it: a statistic may fit with a backend that
another package provides, a dataset read a format another package knows. The
plugin declares an
:class:`ExtensionPoint` from the ``wavelens_extension_points`` hook: a name, the
entry-point group other packages register under, and its built-in entries. Other
packages register the way plugins themselves do, by entry point::

    [project.entry-points."my_statistic.backends"]
    fast = "their_package.backend:FastBackend"

``wavelens plugins`` (and ``--json``) lists every point and what is registered at
it; the plugin finds and loads entries with :meth:`ExtensionPoint.names` and
:meth:`ExtensionPoint.load`. Nothing is imported to list or check names: the
built-ins are ``"module:attribute"`` strings, loaded when used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._errors import WavelensError

__all__ = ["ExtensionEntry", "ExtensionPoint"]


class ExtensionEntry(NamedTuple):
    """One thing registered at an extension point."""

    name: str
    target: str  # "module:attribute"
    source: str  # "builtin" or "entry point <group> from <distribution>"


@dataclass(frozen=True)
class ExtensionPoint:
    """Something other packages can add to a plugin.

    Attributes:
        name: lowercase letters, digits and underscores (``my_backend``); unique
            among the loaded plugins' extension points.
        group: the entry-point group other packages register under
            (``my_statistic.backends``).
        builtins: the plugin's own entries, name → ``"module:attribute"``.
        help: one line for ``wavelens plugins``: what an entry is and where its
            interface is documented.
        label: what one entry is called in messages (default: the name with
            spaces, ``my backend``).
    """

    name: str
    group: str
    builtins: Mapping[str, str] = field(default_factory=dict)
    help: str = ""
    label: str = ""

    def entries(self) -> list[ExtensionEntry]:
        """The built-in entries, then the installed entry points of ``group`` (an
        entry point named like a built-in does not replace it)."""
        found = [ExtensionEntry(name, target, "builtin") for name, target in self.builtins.items()]
        seen = set(self.builtins)
        for entry in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: e.name):
            if entry.name in seen:
                continue
            seen.add(entry.name)
            distribution = entry.dist.name if entry.dist is not None else "an unknown distribution"
            found.append(ExtensionEntry(entry.name, entry.value, f"entry point from {distribution}"))
        return found

    def names(self) -> list[str]:
        """Every registered name, built-ins first."""
        return [entry.name for entry in self.entries()]

    def load(self, name: str) -> Any:
        """The object registered as ``name`` (imported now); WavelensError naming the
        known entries when there is none, or when it cannot be imported."""
        entry = next((e for e in self.entries() if e.name == name), None)
        if entry is None:
            raise WavelensError(f"no {self.label or self.name.replace('_', ' ')} {name!r}; known: "
                                f"{', '.join(self.names())} (others register under the entry-point "
                                f"group {self.group})")
        module, _, attribute = entry.target.partition(":")
        try:
            loaded: Any = importlib.import_module(module)
            for part in filter(None, attribute.split(".")):
                loaded = getattr(loaded, part)
        except Exception as exc:
            raise WavelensError(f"the {self.label or self.name.replace('_', ' ')} {name!r} ({entry.target}, "
                                f"{entry.source}) "
                                f"could not be loaded: {type(exc).__name__}: {exc}") from exc
        return loaded
