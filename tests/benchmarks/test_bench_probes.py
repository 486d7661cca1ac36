"""The cost of probing: the Q-network (dim 64) with its five conv layers probed, over
a batch stream of tokens, against the plain forward pass and against the obvious
alternative that keeps full activations and averages afterwards (what captum's
``LayerActivation`` returns).

Run with ``make bench``. Time is measured per variant with pytest-benchmark; peak
memory (resident set on the CPU, allocated memory on CUDA) in a fresh process per
variant, recorded in ``extra_info``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from wavelens.plugins.ciwgan.networks import WaveGANDiscriminator
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder

from conftest import REPO

LAYERS = [f"act{i}" for i in range(1, 6)]
TOKENS, BATCH = 256, 32


def _q_network(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return WaveGANDiscriminator(outputs=8).to(device).eval()


def _plain(model, data):
    with torch.no_grad():
        for batch in data.split(BATCH):
            model(batch)


def _probed(model, data):
    with torch.no_grad(), FeatureMapRecorder(model, LAYERS) as recorder:
        for batch in data.split(BATCH):
            model(batch)
    return recorder.collect()


def _full_then_average(model, data):
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: kept[name].append(o.detach().clone())) for name in LAYERS]
    try:
        with torch.no_grad():
            for batch in data.split(BATCH):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts).mean(dim=1).cpu() for name, parts in kept.items()}


VARIANTS = {"plain": _plain, "probe": _probed, "full_activations": _full_then_average}

_MEMORY_SCRIPT = """
import json, resource, sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
from benchmarks.test_bench_probes import VARIANTS, _q_network, TOKENS
device = {device!r}
model = _q_network(device)
data = (torch.randn(TOKENS, 1, 16384) * 0.1).to(device)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
VARIANTS[{variant!r}](model, data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = torch.cuda.max_memory_allocated() if device == "cuda" else after * 1024
print(json.dumps({{"peak_bytes": peak, "rss_growth_bytes": (after - before) * 1024}}))
"""


def _peak_memory(variant: str, device: str) -> dict:
    script = _MEMORY_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), device=device,
                                   variant=variant)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _bench(benchmark, variant: str, device: str) -> None:
    model = _q_network(device)
    data = (torch.randn(TOKENS, 1, 16384) * 0.1).to(device)
    VARIANTS[variant](model, data)  # warm-up

    def run():
        VARIANTS[variant](model, data)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(_peak_memory(variant, device))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bench_probe_overhead_cpu(benchmark, variant):
    _bench(benchmark, variant, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bench_probe_overhead_cuda(benchmark, variant):
    _bench(benchmark, variant, "cuda")
