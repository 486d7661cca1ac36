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

PROCESSES = {
    "bare interpreter": ["-c", "pass"],
    "wavelens --help": ["-m", "wavelens.cli", "--help"],
    "discovery": ["-c", "from wavelens.host import PluginRegistry; PluginRegistry.discover().names()"],
    "wavelens plugins --json": ["-m", "wavelens.cli", "plugins", "--json"],
}
GOAL_SECONDS = 1.0  # wavelens' own time (above the bare interpreter) for --help and discovery


def test_bench_processes_side_by_side(benchmark):
    """The four processes interleaved, round by round, so that load on the machine
    falls on all alike: medians, and each one's time above the bare interpreter.
    ``plugins --json`` imports every built-in (it lists their parameters); the others
    must stay well under a second of wavelens' own time. (Run once under
    pytest-benchmark: the default test run skips it.)"""
    benchmark.pedantic(_processes_side_by_side, args=(benchmark.extra_info,), rounds=1, iterations=1)


def _processes_side_by_side(info: dict) -> None:
    import statistics
    import subprocess
    import sys
    import time

    rounds = 7
    times: dict[str, list[float]] = {name: [] for name in PROCESSES}
    for _ in range(rounds):
        for name, args in PROCESSES.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=REPO)
            times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["bare interpreter"])
    print(f"\n{'process':<26} {'median s':>9} {'own s':>7}   ({rounds} interleaved rounds)")
    for name, found in times.items():
        median = statistics.median(found)
        info[name] = {"median_s": median, "own_s": median - floor}
        print(f"{name:<26} {median:>9.3f} {median - floor:>7.3f}")
    for name in ("wavelens --help", "discovery"):
        assert statistics.median(times[name]) - floor < GOAL_SECONDS, name
