"""CSM-VANet speed: the real-time factor of enhancement (seconds of compute per second
of audio) on 10 s of audio, on the CPU with 2 threads and on CUDA when there is one;
and the training step. Parameters and multiply-accumulates per second of audio are
recorded in ``extra_info``. The issue's target for the full model: RTF ≤ 0.5 on the
2-core CPU.

Run on demand: ``pytest tests/benchmarks/test_bench_csm_vanet.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wavelens import resolve_placement
from wavelens.plugins.csm_vanet.model import CSMVANetModel, CSMVANetParams, loss_terms
from wavelens.plugins.csm_vanet.networks import count_parameters, macs_per_second

SECONDS = 10.0
RATE = 16000
QUICK = {"channels": [8, 16, 32, 64], "conformers": 1}  # the quick profile's network

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", ["full", "quick"])
def test_bench_enhance_rtf(benchmark, device, size):
    if device == "cpu":
        torch.set_num_threads(2)
    model = CSMVANetModel(CSMVANetParams(**({} if size == "full" else QUICK)))
    torch.manual_seed(0)
    network = model.network().eval()
    placement = resolve_placement(device, "bf16" if device == "cuda" else "fp32")
    network.to(placement.device)
    audio = (np.random.default_rng(0).standard_normal(int(SECONDS * RATE)) * 0.1).astype(np.float32)
    model.enhance(network, audio, RATE, placement)  # warm-up (CUDA: kernels chosen for these shapes)

    def enhance():
        result = model.enhance(network, audio, RATE, placement)
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    result = benchmark.pedantic(enhance, rounds=3, iterations=1)
    assert result.audio.shape == audio.shape
    rtf = benchmark.stats.stats.mean / SECONDS
    network.to("cpu")
    benchmark.extra_info.update(
        rtf=rtf, parameters=count_parameters(network),
        gmacs_per_second_of_audio=macs_per_second(network) / 1e9,
        threads=torch.get_num_threads() if device == "cpu" else None,
    )


@pytest.mark.parametrize("size", ["full", "quick"])
def test_bench_training_step_cpu(benchmark, size):
    torch.set_num_threads(2)
    params = CSMVANetParams(**({} if size == "full" else QUICK))
    torch.manual_seed(0)
    network = CSMVANetModel(params).network()
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr)
    segment = 2 * RATE if size == "full" else RATE
    noisy, clean = torch.randn(4, segment) * 0.1, torch.randn(4, segment) * 0.1
    vad = torch.randint(0, 2, (4, segment // 100 + 1)).float()

    def step():
        terms = loss_terms(network, network(noisy), clean, vad, params)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=4, segment_seconds=segment / RATE)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_bench_training_step_cuda(benchmark, precision):
    """One AdamW step of the paper's network on a batch of 4 two-second segments, as
    the full profile trains it (bf16 autocast; the STFT and losses stay in fp32)."""
    placement = resolve_placement("cuda", precision)
    params = CSMVANetParams()
    torch.manual_seed(0)
    network = CSMVANetModel(params).network().to(placement.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr)
    segment = 2 * RATE
    noisy = (torch.randn(4, segment) * 0.1).cuda()
    clean = (torch.randn(4, segment) * 0.1).cuda()
    vad = torch.randint(0, 2, (4, segment // 100 + 1)).float().cuda()

    def step():
        with placement.autocast():
            output = network(noisy)
        terms = loss_terms(network, output, clean, vad, params)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(batch=4, segment_seconds=2.0, precision=precision,
                                peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
