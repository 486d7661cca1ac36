"""The cost of probing, side by side in one run: the plain forward pass, the probe
(reduction inside the hook), and the obvious alternative that keeps the full
activations of the same layers and averages afterwards (what captum's
``LayerActivation`` returns), on two networks:

- the ciwGAN Q-network at full size (dim 64; its five activations), 256 tokens of
  16,384 samples in batches of 64;
- a third-party CNN that wavelens did not write (the probe-any-cnn example network,
  width 64, functional ReLUs declared), 64 one-second inputs in batches of 16.

Time: the three variants interleaved round by round, medians, each as a ratio to the
plain pass. Peak memory: each variant in a fresh process (resident-set growth on the
CPU, allocated memory on CUDA), as a ratio to the plain pass. The goals: the probe
at most 1.05× the plain pass's time and 1.2× its memory.

Run with ``make bench`` or ``pytest tests/benchmarks/test_bench_probes.py -s``.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time

import pytest
import torch

from wavelens.plugins.ciwgan.networks import WaveGANDiscriminator
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder

from conftest import REPO

GOAL_TIME, GOAL_MEMORY = 1.05, 1.2
ROUNDS = 5


def _example_cnn() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("my_cnn", REPO / "examples" / "probe-any-cnn" / "my_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MyCNN(64)


# name: (network, layers, post-activations, tokens, batch, samples)
NETWORKS = {
    "q_network": (lambda: WaveGANDiscriminator(outputs=8, dim=64), [f"act{i}" for i in range(1, 6)], {},
                  256, 64, 16384),
    "third_party_cnn": (_example_cnn, ["conv1", "conv2"], {"conv*": "relu"}, 64, 16, 16000),
}


def _build(network: str, device: str) -> tuple[torch.nn.Module, torch.Tensor]:
    make, _, _, tokens, _, samples = NETWORKS[network]
    torch.manual_seed(0)
    return make().to(device).eval(), (torch.randn(tokens, 1, samples) * 0.1).to(device)


def _plain(network, model, data):
    with torch.no_grad():
        for batch in data.split(NETWORKS[network][4]):
            model(batch)


def _probed(network, model, data):
    _, layers, post, _, size, _ = NETWORKS[network]
    with torch.no_grad(), FeatureMapRecorder(model, layers, post_activation=post) as recorder:
        for batch in data.split(size):
            model(batch)
    return recorder.collect()


def _full_then_average(network, model, data):
    _, layers, post, _, size, _ = NETWORKS[network]
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: kept[name].append(o.detach().clone())) for name in layers]
    try:
        with torch.no_grad():
            for batch in data.split(size):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    relu = torch.nn.functional.relu
    return {name: (relu(torch.cat(parts)) if post else torch.cat(parts)).mean(dim=1).cpu()
            for name, parts in kept.items()}


VARIANTS = {"plain": _plain, "probe": _probed, "full_activations": _full_then_average}

_MEMORY_SCRIPT = """
import json, resource, sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
from benchmarks.test_bench_probes import VARIANTS, _build
device, network = {device!r}, {network!r}
model, data = _build(network, device)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
VARIANTS[{variant!r}](network, model, data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = torch.cuda.max_memory_allocated() if device == "cuda" else (after - before) * 1024
print(json.dumps({{"peak_bytes": peak}}))
"""


def _peak_memory(network: str, variant: str, device: str) -> float:
    script = _MEMORY_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), device=device,
                                   network=network, variant=variant)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def _side_by_side(network: str, device: str) -> None:
    model, data = _build(network, device)
    for variant in VARIANTS.values():
        variant(network, model, data)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(ROUNDS):
        for name, variant in VARIANTS.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            variant(network, model, data)
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    memory = {name: _peak_memory(network, name, device) for name in VARIANTS}
    base_time, base_memory = statistics.median(times["plain"]), max(memory["plain"], 1.0)
    print(f"\n{network} on {device}, {ROUNDS} interleaved rounds:")
    print(f"{'variant':<18} {'median s':>9} {'× time':>7} {'peak MB':>9} {'× memory':>9}")
    for name in VARIANTS:
        median = statistics.median(times[name])
        print(f"{name:<18} {median:>9.3f} {median / base_time:>7.3f} {memory[name] / 2**20:>9.1f} "
              f"{memory[name] / base_memory:>9.2f}")
    print(f"goals for the probe: ≤ {GOAL_TIME}× time, ≤ {GOAL_MEMORY}× memory")


@pytest.mark.parametrize("network", list(NETWORKS))
def test_bench_probe_side_by_side_cpu(network):
    _side_by_side(network, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("network", list(NETWORKS))
def test_bench_probe_side_by_side_cuda(network):
    _side_by_side(network, "cuda")
