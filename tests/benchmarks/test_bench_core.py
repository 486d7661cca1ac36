"""Start-up cost of the core: plugin discovery and spec validation.

Run with ``make bench``. Every CLI command pays these before doing any work.
"""

from __future__ import annotations

from wavelens.host import PluginRegistry, load_spec

from conftest import REPO


def test_bench_plugin_discovery(benchmark):
    registry = benchmark(PluginRegistry.discover)
    assert "tiny_cnn" in registry.names()


def test_bench_load_demo_spec(benchmark):
    resolved = benchmark(load_spec, REPO / "specs" / "demo.yaml")
    assert resolved.spec.name == "demo-tones"


# -- whole processes: what a user waits for before a command does any work -------------


def _process(*args: str):
    import subprocess
    import sys

    def run() -> None:
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=REPO)

    return run


def test_bench_process_help(benchmark):
    """``wavelens --help`` (the core and every built-in plugin are imported today)."""
    benchmark.pedantic(_process("-m", "wavelens.cli", "--help"), rounds=5, iterations=1)


def test_bench_process_plugins_json(benchmark):
    benchmark.pedantic(_process("-m", "wavelens.cli", "plugins", "--json"), rounds=5, iterations=1)


def test_bench_process_discovery(benchmark):
    """A fresh interpreter importing the host API and discovering the plugins."""
    code = "from wavelens.host import PluginRegistry; PluginRegistry.discover()"
    benchmark.pedantic(_process("-c", code), rounds=5, iterations=1)


def test_bench_process_bare_interpreter(benchmark):
    """The interpreter alone: the floor the three above are measured against."""
    benchmark.pedantic(_process("-c", "pass"), rounds=5, iterations=1)
