"""The Python environment against the lock file (``requirements.lock``).

The lock pins every Python distribution wavelens is tested with, direct and
transitive, with hashes (``make lock`` writes it with ``uv pip compile``;
docs/environment.md). This module reads it and compares it with what is installed,
for two users: ``run.json`` records the lock's digest and whether the environment
follows it, and ``scripts/check_environment.py`` stops the setup when it does not.

It imports nothing but the standard library and ``packaging`` (for the
environment markers of the lock's lines), so the setup runs it by path, before
anything else is installed, and its check loads it without importing wavelens,
whose import needs the very packages being checked:

    python framework/_environment.py select requirements.lock pip numpy

prints the lock's requirements (with their hashes) for the named distributions
that apply to this interpreter, ready for ``pip install --require-hashes -r -``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "requirements.lock"

# "name==version ; marker \" — the first line of each requirement uv writes; the
# hashes follow on continuation lines.
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]*))?")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str | None
    text: str  # the whole requirement, hashes included, as it stands in the lock

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    def applies(self) -> bool:
        """Whether this line is for the running interpreter and platform."""
        if not self.marker:
            return True
        try:
            from packaging.markers import Marker
        except ImportError:  # a new virtual environment has pip, and pip carries packaging
            from pip._vendor.packaging.markers import Marker

        return Marker(self.marker).evaluate()


def canonical_name(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def default_lock_path() -> Path:
    """``requirements.lock`` at the top of the source tree this module lives in."""
    return Path(__file__).resolve().parent.parent / LOCK_NAME


def read_lock(path: str | Path) -> list[Pin]:
    """Every pinned requirement of a lock, in its order."""
    pins: list[Pin] = []
    block: list[str] = []
    for line in [*Path(path).read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith((" ", "\t")) and block:
            block.append(line)
            continue
        if block:
            match = _PIN.match(block[0])
            if match is None:
                raise ValueError(f"{path}: cannot read the requirement {block[0]!r}")
            marker = (match.group("marker") or "").strip() or None
            pins.append(Pin(match.group("name"), match.group("version"), marker, "\n".join(block)))
            block = []
        if line.strip() and not line.lstrip().startswith("#"):
            block = [line]
    return pins


def applicable_pins(path: str | Path) -> dict[str, Pin]:
    """The lock's pins for this interpreter and platform, by canonical name."""
    return {pin.key: pin for pin in read_lock(path) if pin.applies()}


def distribution_versions() -> dict[str, str]:
    """Every installed distribution's version, by its name as it spells it, sorted."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            versions[name] = distribution.version
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version, by canonical name."""
    return {canonical_name(name): version for name, version in distribution_versions().items()}


def _same_version(locked: str, installed: str) -> bool:
    # A local build label (torch 2.11.0+cu130) is the same release as the lock's pin.
    return installed == locked or installed.split("+", 1)[0] == locked


def differences(
    path: str | Path, installed: dict[str, str] | None = None
) -> dict[str, dict[str, str | None]]:
    """Locked distributions that are missing or at another version: name ->
    ``{"locked": version, "installed": version or None}``."""
    installed = installed_versions() if installed is None else installed
    found: dict[str, dict[str, str | None]] = {}
    for key, pin in applicable_pins(path).items():
        version = installed.get(key)
        if version is None or not _same_version(pin.version, version):
            found[pin.name] = {"locked": pin.version, "installed": version}
    return found


def lock_digest(path: str | Path) -> str:
    """The SHA-256 of the lock file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lock_record(path: str | Path | None = None) -> dict | None:
    """What a run records of the lock: its digest and whether the environment
    follows it (with the differences); ``None`` outside a source checkout."""
    path = default_lock_path() if path is None else Path(path)
    if not path.is_file():
        return None
    found = differences(path)
    return {"file": path.name, "sha256": lock_digest(path), "matches": not found, "differences": found}


def select(path: str | Path, names: list[str]) -> str:
    """The lock's requirements for ``names`` on this interpreter, as a requirements
    file; a name the lock does not pin is an error."""
    pins = applicable_pins(path)
    unknown = [name for name in names if canonical_name(name) not in pins]
    if unknown:
        raise ValueError(f"{path} pins no {', '.join(unknown)} for this Python and platform")
    return "".join(pins[canonical_name(name)].text + "\n" for name in names)


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "select":
        sys.exit("usage: python framework/_environment.py select LOCK NAME [NAME ...]")
    try:
        sys.stdout.write(select(sys.argv[2], sys.argv[3:]))
    except (OSError, ValueError) as error:
        sys.exit(f"setup: {error}")
