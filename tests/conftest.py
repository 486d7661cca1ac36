from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from wavelens import shared_data_dir

FIXTURE_PLUGINS = Path(__file__).parent / "fixture_plugins"
REPO = Path(__file__).resolve().parent.parent
# The real recordings the project points at (never copies): ../shared/data beside the
# checkout, or $WAVELENS_SHARED_DATA.
SHARED_DATA = shared_data_dir()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    for name in ("WAVELENS_DISABLE_PLUGINS", "WAVELENS_TEST_INTERRUPT_AT", "WAVELENS_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WAVELENS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WAVELENS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def journal(monkeypatch, tmp_path) -> Callable[[], list[str]]:
    """Point the recorder plugins at a journal file; return a function reading it."""
    path = tmp_path / "journal.txt"
    monkeypatch.setenv("WAVELENS_TEST_JOURNAL", str(path))
    return lambda: path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def write_spec(tmp_path) -> Callable[..., Path]:
    """Write a spec (dedented YAML) into tmp_path; return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def recorder_spec(write_spec) -> Callable[..., Path]:
    """A spec using every stage of the recorder plugins (a local plugin file)."""

    def make(extra: str = "", steps: int = 6) -> Path:
        return write_spec(
            f"""
            spec_version: 1
            name: recorder
            seed: 3
            device: cpu
            plugins: [{FIXTURE_PLUGINS / "recorder.py"}]
            data: {{plugin: counting_data, params: {{n: 6}}}}
            model: {{plugin: counting_model, params: {{width: 2}}}}
            train: {{steps: {steps}, checkpoint_every: 2}}
            probe: [{{plugin: mean_activation}}]
            statistics: [{{plugin: table_mean}}]
            metrics: [{{plugin: mean_value}}]
            report: {{formats: [md, html]}}
            {extra}
            """
        )

    return make


@pytest.fixture
def entry_point_package(tmp_path, monkeypatch) -> Callable[[str, str], Path]:
    """Install a plugin package the way pip would, as far as importlib.metadata sees:
    a module plus a ``.dist-info`` folder declaring a ``wavelens.plugins`` entry point."""

    def install(module_name: str, source: str, ep_name: str | None = None, editable: bool = False) -> Path:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / f"{module_name}.py").write_text(textwrap.dedent(source))
        dist = site / f"{module_name}-1.2.3.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 1.2.3\n"
        )
        (dist / "entry_points.txt").write_text(
            f"[wavelens.plugins]\n{ep_name or module_name} = {module_name}\n"
        )
        if editable:  # what `pip install -e` records
            (dist / "direct_url.json").write_text(
                json.dumps({"url": site.as_uri(), "dir_info": {"editable": True}}))
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("PYTHONPATH", str(site))
        return site

    yield install
    for name in [m for m in sys.modules if m.startswith("ep_")]:
        del sys.modules[name]


def prepare_data(tmp_path: Path, plugin: str, params: str, seed: int = 4) -> tuple[dict, Path]:
    """Run only the data stage of a spec using ``plugin`` with ``params`` (the inside
    of a YAML flow mapping); return the loaded splits and the stage folder."""
    from wavelens.host import Run, load_spec_text

    resolved = load_spec_text(
        f"spec_version: 1\nname: data-{plugin}\nseed: {seed}\ndevice: cpu\n"
        f"data: {{plugin: {plugin}, params: {{{params}}}}}\n",
        spec_dir=tmp_path,
    )
    run = Run(resolved, runs_dir=tmp_path / "runs")
    run.execute(until="dataset")
    stage = run.stage_dir("dataset")
    return resolved.component("dataset").build().load(stage), stage
