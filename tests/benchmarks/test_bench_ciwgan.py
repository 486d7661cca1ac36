"""ciwGAN training speed: generator steps per second at batch 64 (one step = 5 critic
updates + 1 generator/Q update, as the papers count), and memory over steps.

Run with ``make bench`` (CPU) or on a GPU machine (the ``cuda`` ones). Reference:
the original TF1 code did about 0.53 steps/s on a GTX 1080 Ti.
"""

from __future__ import annotations

import resource

import pytest
import torch

from wavelens import resolve_placement
from wavelens.plugins.ciwgan.networks import CiwGAN
from wavelens.plugins.ciwgan.trainer import GANConfig, GANTrainer


def _trainer(tmp_path, dim: int, device: str, precision: str = "fp32") -> GANTrainer:
    torch.manual_seed(0)
    config = GANConfig(code="categorical", steps=10**9, batch_size=64, checkpoint_every=10**9,
                       sample_every=10**9)
    trainer = GANTrainer(CiwGAN(8, dim=dim), config, resolve_placement(device, precision), tmp_path)
    trainer.net.train()
    return trainer


def _step(trainer: GANTrainer, data: torch.Tensor) -> None:
    for _ in range(trainer.config.d_updates):
        trainer.critic_update(data)
    trainer.generator_update()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("dim", [8, 64])
def test_bench_cpu_generator_steps(benchmark, tmp_path, dim):
    trainer = _trainer(tmp_path, dim, "cpu")
    data = torch.randn(256, 1, 16384) * 0.1
    _step(trainer, data)  # warm-up
    benchmark.pedantic(_step, args=(trainer, data), rounds=3 if dim == 8 else 1, iterations=1)
    benchmark.extra_info["steps_per_s"] = 1 / benchmark.stats["mean"]


def test_bench_cpu_memory_is_flat_over_steps(benchmark, tmp_path):
    trainer = _trainer(tmp_path, 8, "cpu")
    data = torch.randn(256, 1, 16384) * 0.1
    for _ in range(3):
        _step(trainer, data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    benchmark.pedantic(_step, args=(trainer, data), rounds=5, iterations=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    benchmark.extra_info["peak_rss_mib"] = after / 1024
    assert after <= before * 1.05, f"peak RSS grew from {before} to {after} KiB over 5 steps"


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_bench_cuda_full_size_generator_steps(benchmark, tmp_path, precision):
    trainer = _trainer(tmp_path, 64, "cuda", precision)
    data = (torch.randn(1024, 1, 16384) * 0.1).cuda()
    for _ in range(3):
        _step(trainer, data)
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(_step, args=(trainer, data), rounds=20, iterations=1)
    first_peak = torch.cuda.max_memory_allocated()
    for _ in range(10):
        _step(trainer, data)
    benchmark.extra_info["steps_per_s"] = 1 / benchmark.stats["mean"]
    benchmark.extra_info["peak_memory_gib"] = first_peak / 2**30
    assert torch.cuda.max_memory_allocated() <= first_peak * 1.01
