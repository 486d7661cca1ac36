"""WaveGAN's generator and discriminator and the ciwGAN/fiwGAN Q-network, as in the
reference TensorFlow code (gbegus/fiwGAN-ciwGAN ``cinfowavegan.py``, itself
chrisdonahue/wavegan v2's ``wavegan.py``).

Faithfulness points (see ``docs/ciwgan.md``):

- TF "SAME" alignment: a stride-4, kernel-25 conv pads 10 samples on the left and
  11 on the right; a transposed conv crops the same amounts from its full output.
- The dense layer's output is read time-major ([16, 16·dim], as TF's reshape does)
  and followed by a ReLU.
- Phase shuffle (radius 2) after the LeakyReLU of the first four discriminator
  layers only, one shift drawn per call for the whole batch, reflect padding; off in
  eval mode. The Q-network has the same structure, phase shuffle included.
- Glorot-uniform weights and zero biases (the ``tf.layers`` defaults).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SLICE_LENGTHS",
    "same_padding",
    "phase_shuffle",
    "WaveGANGenerator",
    "WaveGANDiscriminator",
    "CiwGAN",
]

KERNEL = 25
SLICE_LENGTHS = (16384, 32768, 65536)


def same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding (left, right) for an input length divisible by ``stride``."""
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def _layout(slice_len: int) -> tuple[list[int], list[int]]:
    """Channel multipliers of dim and strides of the up-sampling stack, from the
    reference: 16 steps of 16·dim channels up to 16,384 samples in five ×4 layers;
    32,768 and 65,536 start from 32·dim channels and add a sixth layer (×2 or ×4)."""
    if slice_len == 16384:
        return [16, 8, 4, 2, 1], [4, 4, 4, 4, 4]
    if slice_len == 32768:
        return [32, 16, 8, 4, 2, 1], [4, 4, 4, 4, 4, 2]
    if slice_len == 65536:
        return [32, 16, 8, 4, 2, 1], [4, 4, 4, 4, 4, 4]
    raise ValueError(f"slice_len must be one of {SLICE_LENGTHS}, not {slice_len}")


def phase_shuffle(x: torch.Tensor, radius: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift the time axis by one phase in [-radius, radius] for the whole batch,
    filling the edge by reflection (WaveGAN's ``apply_phaseshuffle``)."""
    if radius == 0:
        return x
    phase = int(torch.randint(-radius, radius + 1, (1,), generator=generator, device="cpu"))
    pad_left, pad_right = max(phase, 0), max(-phase, 0)
    if phase == 0:
        return x
    length = x.shape[-1]
    padded = F.pad(x, (pad_left, pad_right), mode="reflect")
    return padded[..., pad_right : pad_right + length]


def _glorot(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class UpConv(nn.Module):
    """A transposed conv with TF SAME alignment: output length = input × stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, KERNEL, stride)
        self.crop = same_padding(KERNEL, stride)[0]
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.conv(x)  # (in - 1) * stride + kernel samples
        return full[..., self.crop : self.crop + x.shape[-1] * self.stride]


class DownConv(nn.Module):
    """A conv with TF SAME alignment: output length = input / stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, KERNEL, stride)
        self.pad = same_padding(KERNEL, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class WaveGANGenerator(nn.Module):
    """z (B, latent_dim) → audio (B, 1, slice_len) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, dim: int = 64, slice_len: int = 16384):
        super().__init__()
        multipliers, strides = _layout(slice_len)
        self.first_channels = multipliers[0] * dim
        self.dense = nn.Linear(latent_dim, 16 * self.first_channels)
        channels = [m * dim for m in multipliers] + [1]
        self.upconvs = nn.ModuleList(
            UpConv(channels[i], channels[i + 1], strides[i]) for i in range(len(strides))
        )
        self.latent_dim = latent_dim
        self.slice_len = slice_len
        _glorot(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # TF reshapes the dense output to [batch, 16, channels]: time-major.
        x = self.dense(z).view(z.shape[0], 16, self.first_channels).transpose(1, 2)
        x = F.relu(x)
        for index, layer in enumerate(self.upconvs):
            x = layer(x)
            x = torch.tanh(x) if index == len(self.upconvs) - 1 else F.relu(x)
        return x


class WaveGANDiscriminator(nn.Module):
    """audio (B, 1, slice_len) → (B, outputs): the critic (1 output) or the Q-network
    (one logit per code).

    Layers are named ``conv1..convN`` with activations ``act1..actN`` (LeakyReLU
    0.2), so probes can select them by name; phase shuffle follows ``act1..act4``.
    """

    def __init__(self, outputs: int = 1, dim: int = 64, slice_len: int = 16384,
                 phase_shuffle_radius: int = 2, generator: torch.Generator | None = None):
        super().__init__()
        multipliers, strides = _layout(slice_len)
        channels = [1] + [m * dim for m in reversed(multipliers)]
        for index, stride in enumerate(strides):
            self.add_module(f"conv{index + 1}", DownConv(channels[index], channels[index + 1], stride))
            self.add_module(f"act{index + 1}", nn.LeakyReLU(0.2))
        self.depth = len(strides)
        self.dense = nn.Linear(16 * channels[-1], outputs)
        self.phase_shuffle_radius = phase_shuffle_radius
        self.generator = generator
        _glorot(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.depth + 1):
            x = getattr(self, f"act{index}")(getattr(self, f"conv{index}")(x))
            # The reference shuffles after layers 0-3 (of 0-4) for 16,384 samples,
            # never after the last layer.
            if self.training and index < self.depth and index <= 4:
                x = phase_shuffle(x, self.phase_shuffle_radius, self.generator)
        # Flatten time-major, as TF's reshape of [batch, 16, channels] does.
        return self.dense(x.transpose(1, 2).reshape(x.shape[0], -1))


class CiwGAN(nn.Module):
    """The three networks of ciwGAN/fiwGAN in one module: ``generator``,
    ``discriminator`` (the WGAN critic) and ``q_network`` (its own weights)."""

    def __init__(self, n_codes: int, dim: int = 64, slice_len: int = 16384, latent_dim: int = 100,
                 phase_shuffle_radius: int = 2):
        super().__init__()
        if not 0 < n_codes < latent_dim:
            raise ValueError(f"n_codes must be between 1 and {latent_dim - 1}, not {n_codes}")
        self.shuffle_generator = torch.Generator()
        self.generator = WaveGANGenerator(latent_dim, dim, slice_len)
        self.discriminator = WaveGANDiscriminator(1, dim, slice_len, phase_shuffle_radius,
                                                  self.shuffle_generator)
        self.q_network = WaveGANDiscriminator(n_codes, dim, slice_len, phase_shuffle_radius,
                                              self.shuffle_generator)
        self.n_codes = n_codes
        # What rebuilds an identical network (in another process).
        self.arguments = {"n_codes": n_codes, "dim": dim, "slice_len": slice_len,
                          "latent_dim": latent_dim, "phase_shuffle_radius": phase_shuffle_radius}

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """The Q-network's code logits for ``audio`` (what probes and predict use)."""
        return self.q_network(audio)
