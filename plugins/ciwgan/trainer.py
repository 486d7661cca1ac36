"""The ciwGAN/fiwGAN trainer: WGAN-GP with a Q-network trained on generated audio.

One step, as in the reference (``train_ciwgan.py`` 239-250) and as the papers count
steps:

1. five critic updates, each with a new real batch and a new latent batch:
   ``D_loss = mean D(G(z)) − mean D(x) + 10 · mean((‖∇D(x̂)‖₂ − 1)²)``, Adam(1e-4, β 0.5/0.9);
2. one generator forward ``G(z)`` feeding both ``G_loss = −mean D(G(z))`` and the
   Q loss (softmax cross-entropy for ciwGAN, sigmoid cross-entropy for fiwGAN).
   Both gradients are taken at the same parameter values: Adam applies the G_loss
   gradient to G; TF1-style RMSProp applies the Q-loss gradient to Q **and** G.

Everything random (real batches, latents, interpolation weights, phase shuffle)
comes from generators stored in each checkpoint, so a resumed run continues exactly
as an uninterrupted one would. SIGINT/SIGTERM end the current step, save a
checkpoint and stop.

Launched with torchrun, every process takes ``batch_size / processes`` of every
batch, and the core's loop averages the gradients across processes before every
optimizer step, which keeps the replicas identical. (``DistributedDataParallel``'s
wrapper cannot be used here: it does not support ``torch.autograd.grad``, which the
gradient penalty and the separate G and Q gradients need; the explicit all-reduce
does what it would.) Under fp16 the loop's gradient scaler scales every loss, the
gradient penalty's inner gradient included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wavelens import (
    Placement,
    StageContext,
    StageError,
    TrainingLoop,
    write_audio,
    write_csv,
)

from .networks import CiwGAN
from .optim import TFRMSprop

__all__ = ["GANConfig", "GANTrainer", "sample_latent", "gradient_penalty", "code_names", "code_vector"]


@dataclass
class GANConfig:
    """What the trainer needs besides the network and the data (all picklable)."""

    code: str  # "categorical" (ciwGAN) or "binary" (fiwGAN)
    steps: int
    batch_size: int = 64
    d_updates: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    q_lr: float = 1e-4
    q_weight: float = 1.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    sample_every: int = 500
    sample_value: float = 1.0
    sample_rate: int = 16000
    seed: int = 0
    on_nonfinite: str = "stop"
    history: list[dict[str, float]] = field(default_factory=list)


def sample_latent(batch: int, n_codes: int, code: str, latent_dim: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, target)``: z = [code, U(−1, 1) noise]; the target is the class index
    (ciwGAN, one-hot code drawn uniformly) or the bits (fiwGAN, Bernoulli 0.5)."""
    if code == "categorical":
        target = torch.randint(n_codes, (batch,), generator=generator, device=generator.device)
        codes = F.one_hot(target, n_codes).float()
    else:
        codes = torch.randint(2, (batch, n_codes), generator=generator, device=generator.device).float()
        target = codes
    noise = torch.rand(batch, latent_dim - n_codes, generator=generator, device=generator.device) * 2 - 1
    return torch.cat([codes, noise], dim=1), target


def code_names(code: str, n_codes: int) -> list[str]:
    """The codes to show one at a time: each index, or, for fiwGAN with up to 4 bits,
    each bit pattern ("000" ... "111")."""
    if code == "binary" and n_codes <= 4:
        return [format(k, f"0{n_codes}b") for k in range(2**n_codes)]
    return [str(i) for i in range(n_codes)]


def code_vector(code: str, n_codes: int, name: str, value: float) -> torch.Tensor:
    """The code part of the latent for ``name``: an index ("3") sets that code
    (ciwGAN: one-hot) or that bit (fiwGAN); a bit string ("101", fiwGAN) sets those
    bits. Set entries get ``value``; the papers use values outside the training
    range (2, 3, ... for codes trained at 1)."""
    text = str(name).strip()
    if code == "binary" and len(text) == n_codes and set(text) <= {"0", "1"}:
        bits = [int(c) for c in text]
    elif text.isdigit() and int(text) < n_codes:
        bits = [int(i == int(text)) for i in range(n_codes)]
    else:
        expected = f"an index 0..{n_codes - 1}" + (
            f" or {n_codes} bits such as {'1' + '0' * (n_codes - 1)}" if code == "binary" else "")
        raise StageError(f"code {name!r} does not name a code of this model: expected {expected}")
    return torch.tensor(bits, dtype=torch.float32) * value


def q_loss(logits: torch.Tensor, target: torch.Tensor, code: str) -> torch.Tensor:
    if code == "categorical":
        return F.cross_entropy(logits.float(), target)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """mean((‖∇D(x̂)‖₂ − 1)²) with x̂ = x + α(G(z) − x), the norm over (channel, time).

    With an enabled gradient scaler (fp16), the inner gradient is taken of the scaled
    score and unscaled before the norm, as PyTorch's AMP recipe for gradient penalties
    does, so that small gradients do not underflow in fp16."""
    mixed = (real + alpha * (fake - real)).requires_grad_(True)
    score = critic(mixed).sum()
    if scaler is not None and scaler.is_enabled():
        scale = scaler.get_scale()
        gradient, = torch.autograd.grad(score * scale, mixed, create_graph=True)
        gradient = gradient.float() / scale
    else:
        gradient, = torch.autograd.grad(score, mixed, create_graph=True)
    norm = gradient.float().flatten(1).norm(dim=1)
    return ((norm - 1.0) ** 2).mean()


class GANTrainer(TrainingLoop):
    """Trains a :class:`CiwGAN` in place; rank 0 writes checkpoints, logs, samples.
    The loop itself (resumption, logging, checkpoints, interrupts, gradient averaging)
    is the core's :class:`~wavelens.TrainingLoop`."""

    def __init__(self, network: CiwGAN, config: GANConfig, placement: Placement | None = None,
                 workdir: Path | None = None, rank: int | None = None, world: int | None = None,
                 log: Any = None, progress: Callable[..., Iterator] | None = None,
                 context: StageContext | None = None):
        super().__init__(context=context, workdir=workdir, placement=placement, steps=config.steps,
                         network=network, checkpoint_every=config.checkpoint_every,
                         keep_checkpoints=config.keep_checkpoints, log_every=config.log_every,
                         rank=rank, world=world, log=log, progress=progress, description="GAN steps",
                         on_nonfinite=config.on_nonfinite)
        placement, world = self.placement, self.world
        self.history = config.history
        self.net = network.to(placement.device)
        self.config = config
        self.device = placement.device
        self.data: torch.Tensor | None = None
        if config.batch_size % world:
            raise StageError(f"train.batch_size {config.batch_size} is not divisible by {world} processes")
        self.local_batch = config.batch_size // world
        generator, q = network.generator, network.q_network
        fused = placement.device.type == "cuda"  # one kernel per step instead of one per tensor
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=config.betas,
                                      fused=fused)
        self.opt_d = torch.optim.Adam(network.discriminator.parameters(), lr=config.lr,
                                      betas=config.betas, fused=fused)
        self.opt_q = TFRMSprop([*q.parameters(), *generator.parameters()], lr=config.q_lr)
        # Every random draw has its own generator; each process its own stream.
        base = config.seed * 1000 + self.rank
        self.data_rng = torch.Generator().manual_seed(base + 1)
        # Latents and penalty mixes are drawn where they are used: on CUDA, a copy from
        # the CPU at every update would wait for the GPU and stop the CPU queueing ahead.
        self.latent_rng = torch.Generator(self.device).manual_seed(base + 2)
        network.shuffle_generator.manual_seed(base + 3)
        self.order: torch.Tensor | None = None
        self.position = 0

    # -- state -----------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {  # the network is checkpointed by the loop
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_q": self.opt_q.state_dict(),
            "data_rng": self.data_rng.get_state(),
            "latent_rng": self.latent_rng.get_state(),
            "shuffle_rng": self.net.shuffle_generator.get_state(),
            "order": None if self.order is None else self.order.cpu(),
            "position": self.position,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_q.load_state_dict(state["opt_q"])
        self.data_rng.set_state(state["data_rng"])
        try:
            self.latent_rng.set_state(state["latent_rng"])
        except RuntimeError:  # a CPU generator's state cannot seed a CUDA one, and back
            self.latent_rng.manual_seed(self.config.seed * 1000 + self.rank + 2 + state["step"])
            if self.log and self.rank == 0:
                self.log.warning("the checkpoint was written on another kind of device; training "
                                 "goes on with a fresh latent random stream (seeded from the step)")
        self.net.shuffle_generator.set_state(state["shuffle_rng"])
        self.order, self.position = state["order"], state["position"]

    def restore(self) -> int:
        step = super().restore()
        self.config.history = self.history
        return step

    def parameters_for_checksum(self) -> list[torch.Tensor]:
        return list(self.net.state_dict().values())

    # -- pieces of a step -------------------------------------------------------------

    def real_batch(self, data: torch.Tensor) -> torch.Tensor:
        """The next batch of an epoch-wise shuffle (this process's share)."""
        if self.order is None or self.position + self.local_batch > len(self.order):
            self.order = torch.randperm(len(data), generator=self.data_rng)
            self.position = 0
        if self.order.device != data.device:  # once per epoch, not once per batch
            self.order = self.order.to(data.device)
        index = self.order[self.position : self.position + self.local_batch]
        self.position += self.local_batch
        return data[index]

    def latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        z, target = sample_latent(self.local_batch, self.net.n_codes, self.config.code,
                                  self.net.generator.latent_dim, self.latent_rng)
        return z, target

    def critic_update(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        net, config = self.net, self.config
        real = self.real_batch(data)
        z, _ = self.latent()
        alpha = torch.rand(self.local_batch, 1, 1, generator=self.latent_rng, device=self.device)
        with self.autocast():
            with torch.no_grad():
                fake = net.generator(z)
            fake_score = net.discriminator(fake).float().mean()
            real_score = net.discriminator(real).float().mean()
            penalty = gradient_penalty(net.discriminator, real, fake.to(real.dtype), alpha, self.scaler)
            loss = fake_score - real_score + config.gp_weight * penalty
        self.opt_d.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(self.opt_d)
        # Tensors, not floats: reading a value would wait for the GPU at every update.
        return {"d_loss": loss.detach(), "wasserstein": (real_score - fake_score).detach(),
                "gp": penalty.detach()}

    def generator_update(self) -> dict[str, torch.Tensor]:
        net, config = self.net, self.config
        z, target = self.latent()
        g_params = list(net.generator.parameters())
        q_params = list(net.q_network.parameters())
        with self.autocast():
            audio = net.generator(z)
            g_loss = -net.discriminator(audio).float().mean()
            logits = net.q_network(audio)
            loss_q = config.q_weight * q_loss(logits, target, config.code)
        # Both gradients at the same parameter values (and the same loss scale), as one
        # TF session.run does; the scale is updated after both steps.
        g_grads = torch.autograd.grad(self.scale(g_loss), g_params, retain_graph=True)
        q_grads = torch.autograd.grad(self.scale(loss_q), q_params + g_params)
        for param, grad in zip(g_params, g_grads, strict=True):
            param.grad = grad
        self.step(self.opt_g, update=False)
        for param, grad in zip(q_params + g_params, q_grads, strict=True):
            param.grad = grad
        self.step(self.opt_q)
        if config.code == "categorical":
            accuracy = (logits.argmax(dim=1) == target).float().mean()
        else:
            accuracy = ((logits > 0).float() == target).float().mean()
        return {"g_loss": g_loss.detach(), "q_loss": loss_q.detach(), "q_accuracy": accuracy.detach()}

    # -- the loop ---------------------------------------------------------------------

    def train(self, data: torch.Tensor) -> list[dict[str, float]]:
        """Train to ``config.steps``; return the logged history. ``data`` is
        (N, 1, slice_len) real audio."""
        self.data = data.to(self.device)
        self.net.train()
        return self.run()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        record: dict[str, torch.Tensor] = {}
        for _ in range(self.config.d_updates):
            record.update(self.critic_update(self.data))
        record.update(self.generator_update())
        return record

    def after_step(self, step: int) -> None:
        if step % self.config.sample_every == 0 and self.rank == 0:
            self.write_samples(step)

    def log_message(self, entry: dict[str, float]) -> str:
        return (f"step {entry['step']}: D {entry['d_loss']:.4f}  G {entry['g_loss']:.4f}  "
                f"Q {entry['q_loss']:.4f} (accuracy {entry['q_accuracy']:.2f})  "
                f"{entry['steps_per_s']:.2f} steps/s")

    def status(self) -> str:
        if not self._done_here:
            return ""
        text = f"{self._done_here / (time.perf_counter() - self._started):.2f} steps/s"
        if self.history:
            last = self.history[-1]
            text += f"  D {last['d_loss']:.3f}  G {last['g_loss']:.3f}  Q {last['q_loss']:.3f}"
        return text

    def codes_for_samples(self) -> list[tuple[str, torch.Tensor]]:
        kind, n = self.config.code, self.net.n_codes
        prefix = "bits" if kind == "binary" and n <= 4 else "code"
        return [(prefix + name, code_vector(kind, n, name, self.config.sample_value))
                for name in code_names(kind, n)]

    @torch.no_grad()
    def write_samples(self, step: int) -> None:
        """One output per code (fiwGAN: per bit pattern), same noise for every code."""
        generator = self.net.generator
        was_training = generator.training
        generator.eval()
        noise = torch.rand(1, generator.latent_dim - self.net.n_codes,
                           generator=torch.Generator().manual_seed(12345)) * 2 - 1
        folder = self.workdir / "samples" / f"step-{step:07d}"
        for name, code in self.codes_for_samples():
            z = torch.cat([code[None], noise], dim=1).to(self.device)
            audio = generator(z)[0, 0].float().cpu().numpy()
            write_audio(folder / f"{name}.wav", np.clip(audio, -1, 1), self.config.sample_rate)
        generator.train(was_training)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """The logged losses as CSV (one row per logged step)."""
    write_csv(path, history)
