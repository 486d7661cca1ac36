"""Exceptions raised by wavelens.

Every error the project raises on purpose derives from :class:`WavelensError`, so a
caller (the CLI, a notebook, a test) can tell a problem the user can act on from a
bug. The message of each error says what was wrong, where, and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WavelensError",
    "SpecError",
    "SpecIssue",
    "PluginError",
    "DeviceError",
    "StageError",
    "AudioError",
    "RunInterrupted",
]


class WavelensError(Exception):
    """Base class of all errors wavelens raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is and what was expected.

    ``path`` is the dotted path inside the spec (``model.params.n_codes``; list
    items by index, ``probes.0.plugin``); ``line`` is 1-based when known.
    """

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "<top level>"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class SpecError(WavelensError):
    """A spec could not be read or does not validate.

    Carries the spec's source (a file path, or a description such as
    ``"<string>"``) and one :class:`SpecIssue` per problem found.
    """

    def __init__(self, source: str | Path, issues: list[SpecIssue]):
        self.source = str(source)
        self.issues = list(issues)
        super().__init__(self._format())

    #: how many issues the message lists; the rest are counted (all stay in ``issues``)
    SHOWN = 20

    def _format(self) -> str:
        count = len(self.issues)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{self.source}: {count} {noun} in spec"]
        lines += [f"  - {issue}" for issue in self.issues[: self.SHOWN]]
        if count > self.SHOWN:
            lines.append(f"  … and {count - self.SHOWN} more")
        return "\n".join(lines)


class PluginError(WavelensError):
    """A plugin could not be loaded, registered or used.

    The message names the plugin and where it came from (built-in module, entry
    point or local file).
    """


class DeviceError(WavelensError):
    """The requested device or precision is not available on this machine."""


class StageError(WavelensError):
    """A stage of a run failed in a way the user can act on: the error a plugin
    raises for a problem with its input, its parameters or its data (the message
    says what was wrong and what was expected)."""


class AudioError(WavelensError):
    """An audio file cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class RunInterrupted(WavelensError):
    """A run was stopped by SIGINT or SIGTERM; running it again resumes it."""
