"""Reading spec YAML safely, with line numbers, and applying ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._errors import SpecError, SpecIssue

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
    """A spec's parsed data plus a map from dotted paths to line numbers.

    ``upgraded_from`` is the spec_version the text was written in when it was read
    as the current one (see :func:`upgrade_v1`), else None."""

    def __init__(self, data: Any, lines: dict[PathKey, int], source: str,
                 upgraded_from: int | None = None):
        self.data = data
        self.lines = lines
        self.source = source
        self.upgraded_from = upgraded_from

    def derive(self, data: Any) -> SpecText:
        """The same text's lines and origin with other data (a profile, a variant or
        overrides applied)."""
        return SpecText(data, self.lines, self.source, self.upgraded_from)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the file."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(str(p) for p in path[:cut]))
            if line is not None and (cut > 0 or len(path) == 0):
                return line
        return None


# Specs are untrusted data: their size and the size of the tree their aliases expand
# to are bounded, so that a "billion laughs" document is refused at once instead of
# expanding in memory (every later step walks the expanded tree).
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000


def _check_tree(root: yaml.Node, source: str) -> None:
    """Refuse duplicate keys, recursive aliases and trees whose expansion exceeds
    ``MAX_SPEC_NODES`` nodes; aliases are counted once per use."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    duplicates: list[SpecIssue] = []

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise SpecError(source, [SpecIssue("", "a YAML alias refers to its own anchor (a recursive "
                                                   "document)", node.start_mark.line + 1)])
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key_node.value in seen:
                        duplicates.append(SpecIssue(
                            "", f"the key {key_node.value!r} appears twice in one mapping, at lines "
                                f"{seen[key_node.value]} and {line}; YAML keeps only one of them", line))
                    seen.setdefault(key_node.value, line)
                total += size(key_node) + size(value_node)
                if total > MAX_SPEC_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_SPEC_NODES:
                    break
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_SPEC_NODES:
            raise SpecError(source, [SpecIssue(
                "", f"the document expands to more than {MAX_SPEC_NODES:,} values (through its aliases); "
                    "a spec is a small settings file", node.start_mark.line + 1)])
        return total

    size(root)
    if duplicates:
        raise SpecError(source, duplicates)


def load_bounded(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """YAML text → (data, composed tree), with the safe loader and the bounds above;
    SpecError on any problem."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [SpecIssue("", f"the text is {len(text):,} characters long; a spec may be "
                                               f"at most {MAX_SPEC_BYTES:,}")])
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses some characters
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_issue(exc)]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_tree(root, source)
        return loader.construct_document(root), root
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_issue(exc)]) from None
    except RecursionError:
        raise SpecError(source, [SpecIssue("", "the YAML nests too deeply")]) from None
    finally:
        loader.dispose()


def parse_spec_text(text: str, source: str) -> SpecText:
    """Parse YAML text with the safe loader; raise SpecError on any problem."""
    data, root = load_bounded(text, source)
    if data is None:
        raise SpecError(source, [SpecIssue("", "the spec is empty")])
    if not isinstance(data, dict):
        raise SpecError(
            source,
            [SpecIssue("", f"a spec is a mapping of keys to values, not a {type(data).__name__}", 1)],
        )
    assert root is not None
    text = SpecText(data, _line_map(root), source)
    return upgrade_v1(text) if data.get("spec_version") == 1 else text


# spec_version 1 → 2: the slots are named by their kind, plural where they hold a
# list: `data` became `dataset` and `probe` became `probes`.
V1_RENAMES = {"data": "dataset", "probe": "probes"}


def renamed_v1_path(key: str) -> str:
    """A dotted path of spec_version 1 in the names of version 2."""
    head, sep, rest = key.strip().partition(".")
    return V1_RENAMES.get(head, head) + sep + rest


def upgrade_v1(text: SpecText) -> SpecText:
    """Read a spec_version 1 text as version 2: its ``data`` and ``probe`` keys (at
    the top, and as the first part of the paths in ``profiles`` and ``variants``) are
    renamed, and every line stays where it was."""
    data = text.data
    for old, new in V1_RENAMES.items():
        if old in data and new in data:
            raise SpecError(text.source, [SpecIssue(
                old, f"spec_version 1 names this {old!r}, and the spec has {new!r} (the name of "
                     f"spec_version 2) too: keep one, and set spec_version to match",
                text.line_of((old,)))])
    upgraded = {V1_RENAMES.get(key, key): value for key, value in data.items()}
    upgraded["spec_version"] = 2
    lines = {}
    for path, line in text.lines.items():
        if path and path[0] in V1_RENAMES:
            path = (V1_RENAMES[path[0]], *path[1:])
        elif len(path) >= 3 and path[0] in ("profiles", "variants"):
            path = (*path[:2], renamed_v1_path(path[2]), *path[3:])
        lines[path] = line
    for section in ("profiles", "variants"):
        options = upgraded.get(section)
        if isinstance(options, dict):
            upgraded[section] = {
                name: {renamed_v1_path(str(k)): v for k, v in values.items()} if isinstance(values, dict)
                else values
                for name, values in options.items()}
    return SpecText(upgraded, lines, text.source, upgraded_from=1)


def read_spec_file(path: Path) -> SpecText:
    """Read and parse the spec at ``path`` (a regular file of at most
    ``MAX_SPEC_BYTES``: a device such as /dev/zero is refused, not read forever)."""
    try:
        if not path.is_file():
            what = "no such file" if not path.exists() else "not a regular file"
            raise SpecError(path, [SpecIssue("", what)])
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(path, [SpecIssue("", f"the file is larger than {MAX_SPEC_BYTES:,} bytes; "
                                                 "a spec is a small settings file")])
        text = raw.decode("utf-8")
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
        value = load_bounded(raw_value, source)[0] if raw_value.strip() else ""
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
