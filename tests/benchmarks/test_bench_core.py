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
