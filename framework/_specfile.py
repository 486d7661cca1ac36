"""Reading spec YAML safely, with line numbers, and applying ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, SpecIssue

PathKey = tuple[str, ...]


def _line_map(node: yaml.Node, prefix: PathKey = (), out: dict | None = None) -> dict:
    """Map every dotted path in a composed YAML tree to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = (*prefix, str(key_node.value))
                out[path] = key_node.start_mark.line + 1
                _line_map(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*prefix, str(index)), out)
    return out


def _yaml_issue(exc: yaml.YAMLError) -> SpecIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(problem):
        problem = (
            f"{problem}; specs are plain data (YAML's safe subset): tags such as "
            "!!python/object are refused"
        )
    return SpecIssue("", f"invalid YAML: {problem}", line)


class SpecText:
    """A spec's parsed data plus a map from dotted paths to line numbers."""

    def __init__(self, data: Any, lines: dict[PathKey, int], source: str):
        self.data = data
        self.lines = lines
        self.source = source

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the file."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(str(p) for p in path[:cut]))
            if line is not None and (cut > 0 or len(path) == 0):
                return line
        return None


def parse_spec_text(text: str, source: str) -> SpecText:
    """Parse YAML text with the safe loader; raise SpecError on any problem."""
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_issue(exc)]) from None
    except RecursionError:
        raise SpecError(source, [SpecIssue("", "the YAML nests too deeply")]) from None
    if data is None:
        raise SpecError(source, [SpecIssue("", "the spec is empty")])
    if not isinstance(data, dict):
        raise SpecError(
            source,
            [SpecIssue("", f"a spec is a mapping of keys to values, not a {type(data).__name__}", 1)],
        )
    lines = _line_map(root) if root is not None else {}
    return SpecText(data, lines, source)


def read_spec_file(path: Path) -> SpecText:
    """Read and parse the spec at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, [SpecIssue("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, [SpecIssue("", f"cannot read the file: {exc}")]) from None
    return parse_spec_text(text, str(path))


def set_path(data: dict, key: str, value: Any, source: str) -> None:
    """Set the dotted ``key`` of ``data`` to ``value`` in place (intermediate
    mappings are created; list items are addressed by index and must exist)."""
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(source, [SpecIssue(here, f"list index expected, 0 to {len(node) - 1}")])
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            issue = SpecIssue(here, f"cannot set a key inside a {type(node).__name__} value")
            raise SpecError(source, [issue])


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a copy of ``data``.

    Intermediate mappings are created as needed; list items are addressed by index
    and must exist.
    """
    import copy

    result = copy.deepcopy(data)
    for override in overrides:
        source = f"--set {override}"
        key, sep, raw_value = override.partition("=")
        if not sep or not key.strip():
            raise SpecError(source, [SpecIssue("", "expected KEY.PATH=VALUE, e.g. train.steps=200")])
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError as exc:
            raise SpecError(source, [_yaml_issue(exc)]) from None
        set_path(result, key, value, source)
    return result


def apply_section(data: dict, section: str, name: str, source: str) -> dict:
    """A copy of ``data`` with the dotted-path values of ``data[section][name]``
    applied (a profile or a variant), the section removed, and ``name`` recorded under
    the singular key (``profile: quick``)."""
    import copy

    options = data.get(section)
    if not isinstance(options, dict) or name not in options:
        known = ", ".join(options) if isinstance(options, dict) and options else "none"
        issue = SpecIssue(section, f"no {section[:-1]} {name!r}; the spec defines: {known}")
        raise SpecError(source, [issue])
    values = options[name] or {}
    if not isinstance(values, dict):
        raise SpecError(source, [SpecIssue(f"{section}.{name}", "expected a mapping of KEY.PATH: value")])
    result = copy.deepcopy(data)
    del result[section]
    for key, value in values.items():
        set_path(result, str(key), copy.deepcopy(value), f"{source}: {section}.{name}.{key}")
    result[section[:-1]] = name
    return result
