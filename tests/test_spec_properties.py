"""Property: the spec loader accepts a spec or raises SpecError, never anything else."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wavelens import SpecError
from wavelens.host import ResolvedSpec, load_spec_text

BASE = {
    "spec_version": 2,
    "name": "prop",
    "seed": 1,
    "device": "cpu",
    "precision": "fp32",
    "dataset": {"plugin": "tones", "params": {"n_train": 8, "n_test": 4}},
    "model": {"plugin": "tiny_cnn", "params": {"channels": [4, 8], "learning_rate": 0.01}},
    "train": {"steps": 3, "batch_size": 2},
    "metrics": [{"plugin": "accuracy", "params": {}}],
    "report": {"formats": ["md"]},
}

KEYS = sorted(
    {"spec_version", "name", "seed", "device", "precision", "plugins", "dataset", "data",
     "model", "train", "probes", "probe", "statistics", "metrics", "evaluation", "report", "plugin",
     "params", "weights", "steps", "batch_size", "n_train", "channels", "learning_rate", "formats", "split"}
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["tones", "tiny_cnn", "accuracy", "cuda", "auto", "bf16", "~nobody/x",
                     "~no_such_user_xyz/w.pt", "a\x00b", "../..", "md", "1e3", "test"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children,
                        max_size=4),
    ),
    max_leaves=12,
)


def paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from paths(value, (*prefix, index))


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        targets = [p for p in paths(spec) if p]
        if not targets:
            break
        target = draw(st.sampled_from(targets))
        parent = spec
        for part in target[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["set", "delete", "add_key", "rename"]))
        last = target[-1]
        if action == "set":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict) and action == "add_key":
            parent[draw(st.sampled_from(KEYS))] = draw(values)
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(last)
    return spec


def check(text: str, overrides: list[str] | None = None) -> None:
    try:
        result = load_spec_text(text, overrides=overrides)
    except SpecError as exc:
        assert exc.issues, "a SpecError must carry at least one issue"
        assert str(exc)
    else:
        assert isinstance(result, ResolvedSpec)
        result.to_dict()
        result.digest()


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(mutated_specs())
def test_mutated_specs_validate_or_raise_spec_error(spec):
    check(yaml.safe_dump(spec, allow_unicode=True))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_validates_or_raises_spec_error(text):
    check(text)


@SETTINGS
@given(st.data())
def test_edited_yaml_text_validates_or_raises_spec_error(data):
    text = yaml.safe_dump(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:position] + data.draw(st.text(max_size=5)) + text[position:]
        else:
            text = text[:position] + text[position + data.draw(st.integers(1, 10)):]
    check(text)


@SETTINGS
@given(st.lists(st.text(max_size=30), max_size=3))
def test_arbitrary_overrides_validate_or_raise_spec_error(overrides):
    check(yaml.safe_dump(BASE), overrides)


def test_valid_base_spec_is_accepted():
    assert isinstance(load_spec_text(yaml.safe_dump(BASE)), ResolvedSpec)


def _alias_tree(width: int, depth: int, key: str) -> str:
    """``depth`` anchors, each a list of ``width`` aliases of the one before, and
    ``key`` set to the last: width**depth values once expanded."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, depth)]
    return "\n".join(lines) + f"\n{key}: *a{depth - 1}\n"


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from(["description", "name", "unknown", "seed"]))
def test_aliases_expand_within_bounds_or_are_refused_quickly(width, depth, key):
    import time

    started = time.perf_counter()
    check(yaml.safe_dump(BASE) + _alias_tree(width, depth, key))
    assert time.perf_counter() - started < 10  # milliseconds normally; 12**12 values if expanded


@SETTINGS
@given(st.sampled_from([("model", "params", "learning_rate"), ("dataset", "params", "snr_db")]),
       st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_non_finite_numbers_in_float_params_are_refused_with_their_path(path, value):
    spec = copy.deepcopy(BASE)
    spec[path[0]][path[1]][path[2]] = value
    try:
        load_spec_text(yaml.safe_dump(spec))
    except SpecError as exc:
        assert any(issue.path == ".".join(path) and "finite number" in issue.message for issue in exc.issues)
    else:
        raise AssertionError(f"{'.'.join(path)} = {value} was accepted")
