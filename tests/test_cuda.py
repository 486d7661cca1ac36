"""The same code on a CUDA device: networks agree with the CPU, training runs in fp32
and bf16, checkpoints move between devices, a whole spec runs with ``device: cuda``.

Every test here is marked ``cuda`` and skipped (with the reason) where no GPU is
visible; run them with ``pytest -m cuda``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wavelens import resolve_placement
from wavelens.host import Run, load_spec_text
from wavelens.plugins.ciwgan.networks import CiwGAN
from wavelens.plugins.ciwgan.trainer import GANConfig, GANTrainer
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder

pytestmark = pytest.mark.cuda


@pytest.fixture
def exact_fp32(monkeypatch):
    """fp32 on the GPU without TF32, so that it can be compared with the CPU."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_networks_on_cuda_agree_with_the_cpu(exact_fp32):
    torch.manual_seed(0)
    network = CiwGAN(8, dim=16).eval()
    z = torch.rand(4, 100) * 2 - 1
    audio_cpu = network.generator(z)
    logits_cpu = network.q_network(audio_cpu)
    score_cpu = network.discriminator(audio_cpu)
    network.cuda()
    audio = network.generator(z.cuda())
    assert _relative(audio.cpu(), audio_cpu) < 1e-5
    assert _relative(network.q_network(audio_cpu.cuda()).cpu(), logits_cpu) < 1e-5
    assert _relative(network.discriminator(audio_cpu.cuda()).cpu(), score_cpu) < 1e-5
    with torch.autocast("cuda", dtype=torch.bfloat16):
        audio_bf16 = network.generator(z.cuda())
        logits_bf16 = network.q_network(audio_cpu.cuda())
    assert audio_bf16.dtype == torch.bfloat16
    assert _relative(audio_bf16.cpu(), audio_cpu) < 2e-2
    assert _relative(logits_bf16.cpu(), logits_cpu) < 5e-2


def test_the_gemm_convs_equal_cudnn_including_the_gradient_penalty(exact_fp32):
    from wavelens.plugins.ciwgan.networks import CUDA_CONVS
    from wavelens.plugins.ciwgan.trainer import gradient_penalty

    torch.manual_seed(0)
    network = CiwGAN(4, dim=8).cuda()
    z = (torch.rand(6, 100) * 2 - 1).cuda()
    real = torch.randn(6, 1, 16384, device="cuda") * 0.1
    alpha = torch.rand(6, 1, 1, device="cuda")
    results = {}
    for impl in CUDA_CONVS:
        network.use_cuda_convs(impl)
        network.zero_grad(set_to_none=True)
        network.shuffle_generator.manual_seed(7)  # the same phase shuffles for each form
        fake = network.generator(z)
        penalty = gradient_penalty(network.discriminator, real, fake, alpha)
        loss = network.discriminator(fake).mean() + penalty + network.q_network(fake).square().mean()
        loss.backward()
        results[impl] = (fake.detach(), penalty.detach(), [p.grad.clone() for p in network.parameters()])
    (fake_a, penalty_a, grads_a), (fake_b, penalty_b, grads_b) = results["gemm"], results["cudnn"]
    assert _relative(fake_a, fake_b) < 1e-5 and _relative(penalty_a, penalty_b) < 1e-4
    for (name, _), a, b in zip(network.named_parameters(), grads_a, grads_b, strict=True):
        assert _relative(a, b) < 1e-4, name


def _toy(n: int = 16) -> torch.Tensor:
    t = torch.arange(16384) / 16000
    return torch.stack([(0.5 * torch.sin(2 * torch.pi * (200 + 40 * i) * t))[None] for i in range(n)])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda_updates_every_network_and_checkpoints_load_on_the_cpu(tmp_path, precision):
    torch.manual_seed(0)
    network = CiwGAN(2, dim=4)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    config = GANConfig(code="categorical", steps=3, batch_size=8, d_updates=2, checkpoint_every=3,
                       log_every=1, sample_every=3, seed=0)
    trainer = GANTrainer(network, config, resolve_placement("cuda", precision), tmp_path)
    history = trainer.train(_toy())
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h[k]) for h in history for k in ("d_loss", "g_loss", "q_loss", "gp"))
    for prefix in ("generator.", "discriminator.", "q_network."):
        changed = [k for k, v in network.state_dict().items()
                   if k.startswith(prefix) and not torch.equal(v.cpu(), before[k])]
        assert changed, f"no {prefix[:-1]} weight changed"
    state = torch.load(tmp_path / "checkpoints" / "ckpt-000000003.pt", map_location="cpu",
                       weights_only=False)
    on_cpu = CiwGAN(2, dim=4)
    on_cpu.load_state_dict(state["network"])
    for key, value in network.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[key], value.cpu()), key
    assert len(list((tmp_path / "samples").rglob("*.wav"))) == 2


def test_resume_on_cuda_continues_the_uninterrupted_run(tmp_path, exact_fp32, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def trainer(directory, steps):
        torch.manual_seed(0)
        config = GANConfig(code="categorical", steps=steps, batch_size=8, d_updates=2,
                           checkpoint_every=2, log_every=1, sample_every=1000, seed=5)
        return GANTrainer(CiwGAN(2, dim=4), config, resolve_placement("cuda"), directory)

    data = _toy()
    whole = trainer(tmp_path / "whole", 4)
    whole.train(data)
    trainer(tmp_path / "split", 2).train(data)
    resumed = trainer(tmp_path / "split", 4)
    resumed.train(data)
    for (name, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_checkpoint_written_on_the_cpu_resumes_on_cuda(tmp_path):
    def trainer(steps, device):
        config = GANConfig(code="categorical", steps=steps, batch_size=8, d_updates=1,
                           checkpoint_every=2, log_every=1, sample_every=1000, seed=5)
        return GANTrainer(CiwGAN(2, dim=4), config, resolve_placement(device), tmp_path)

    trainer(2, "cpu").train(_toy())
    history = trainer(4, "cuda").train(_toy())
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(np.isfinite(h["d_loss"]) for h in history)


def test_feature_maps_recorded_on_cuda_equal_the_cpu(exact_fp32):
    torch.manual_seed(0)
    network = CiwGAN(8, dim=8).eval()
    audio = torch.randn(3, 1, 16384) * 0.1
    layers = [f"q_network.act{i}" for i in range(1, 6)]
    with FeatureMapRecorder(network, layers) as recorder:
        network(audio)
    on_cpu = recorder.collect()
    network.cuda()
    with FeatureMapRecorder(network, layers) as recorder:
        network(audio.cuda())
    on_gpu = recorder.collect()
    for name in layers:
        assert on_gpu[name].device.type == "cpu"  # collected for writing
        assert _relative(on_gpu[name], on_cpu[name]) < 1e-5, name


def test_a_spec_trains_probes_and_generates_on_cuda_in_bf16(tmp_path):
    from test_timit import make_tree

    root = make_tree(tmp_path / "timit", speakers=4)
    resolved = load_spec_text(
        "spec_version: 1\nname: gan-cuda\nseed: 1\ndevice: cuda\nprecision: bf16\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 4, sample_every: 2}}\n"
        "train: {steps: 4, batch_size: 4, checkpoint_every: 2, log_every: 1}\n"
        "probe:\n"
        "  - {plugin: lexical_learning, params: {n_per_code: 6, values: [1, 3], classifier_epochs: 2}}\n"
        "  - {plugin: feature_map_average, params: {layers: ['q_network.act*'], figures_per_word: 0}}\n",
        spec_dir=tmp_path,
    )
    run = Run(resolved, runs_dir=tmp_path / "runs").execute()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "complete" and record["device"]["device"].startswith("cuda")
    assert json.loads((run / "stages" / "model" / "stage.json").read_text())["summary"]["trained"]
    assert (run / "stages" / "probes.0" / "lexical.json").exists()
    layers = json.loads((run / "stages" / "probes.1" / "layers.json").read_text())["layers"]
    assert layers == {f"q_network.act{i}": 16384 // 4**i for i in range(1, 6)}


def test_csm_vanet_on_cuda_agrees_with_the_cpu_and_trains_in_bf16(exact_fp32):
    from wavelens.plugins.csm_vanet.model import CSMVANetParams, loss_terms
    from wavelens.plugins.csm_vanet.networks import CSMVANet

    torch.manual_seed(0)
    network = CSMVANet((8, 16, 32, 64), 1, dropout=0.0).eval()
    noisy = torch.randn(2, 8037) * 0.1
    with torch.no_grad():
        cpu = network(noisy)
        network.cuda()
        gpu = network(noisy.cuda())
    assert _relative(gpu["audio"].cpu(), cpu["audio"]) < 1e-4
    assert _relative(gpu["vad"].cpu(), cpu["vad"]) < 1e-4
    network.train()
    params = CSMVANetParams()
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr)
    clean = (noisy * 0.5).cuda()
    vad = torch.ones(2, 8037 // 100 + 1, device="cuda")
    placement = resolve_placement("cuda", "bf16")
    losses = []
    for _ in range(3):
        with placement.autocast():
            out = network(noisy.cuda())
        terms = loss_terms(network, out, clean, vad, params)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["total"].item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
