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
    "CUDA_CONVS",
    "conv1d_gemm",
    "conv_transpose1d_gemm",
    "WaveGANGenerator",
    "WaveGANDiscriminator",
    "CiwGAN",
]

KERNEL = 25
SLICE_LENGTHS = (8192, 16384, 32768, 65536)


def same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding (left, right) for an input length divisible by ``stride``."""
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def _layout(slice_len: int) -> tuple[list[int], list[int]]:
    """Channel multipliers of dim and strides of the up-sampling stack, from the
    reference: 16 steps of 16·dim channels up to 16,384 samples in five ×4 layers;
    32,768 and 65,536 start from 32·dim channels and add a sixth layer (×2 or ×4).
    8,192 (not in the reference; see docs/ciwgan.md) keeps the five layers and
    channels of 16,384 and makes the last up-sampling layer (the critic's and Q's
    last conv) ×2, as 32,768 does with its sixth."""
    if slice_len == 8192:
        return [16, 8, 4, 2, 1], [4, 4, 4, 4, 2]
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
    if phase == 0:
        return x
    # Shift along time in whichever memory layout x has (channels-last on CUDA), so
    # the result keeps it: [x[phase] … x[1], x[0] … x[L−1−phase]] for a right shift.
    time_major = x.stride(1) == 1 and x.shape[1] > 1
    series, dim = (x.transpose(1, 2), 1) if time_major else (x, -1)
    length, shift = series.shape[dim], abs(phase)
    if phase > 0:
        pieces = [series.narrow(dim, 1, shift).flip(dim), series.narrow(dim, 0, length - shift)]
    else:
        pieces = [series.narrow(dim, shift, length - shift),
                  series.narrow(dim, length - 1 - shift, shift).flip(dim)]
    out = torch.cat(pieces, dim)
    return out.transpose(1, 2) if time_major else out


def _glorot(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """Cast to the autocast dtype *before* im2col, so the copy is made at that width."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def conv1d_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                pad: tuple[int, int]) -> torch.Tensor:
    """``conv1d(F.pad(x, pad), weight, bias, stride)`` as one matrix product.

    x is (B, C, L) in any memory layout; the result is (B, C_out, L_out) as a view of a
    (B, L_out, C_out) tensor, which the next layer reads without a copy. cuDNN has no
    fast kernel for kernel 25 / stride 4 at these sizes (nor for the double backward the
    gradient penalty needs); a GEMM over the unfolded input runs on the tensor cores.
    """
    out_channels, in_channels, kernel = weight.shape
    time_major = F.pad(_autocast_input(x).transpose(1, 2), (0, 0, *pad))  # (B, L+pad, C)
    # (B, L_out, K, C): a view whose rows are runs of K·C consecutive elements, so the
    # copy into the matrix reads and writes contiguous memory.
    columns = time_major.unfold(1, kernel, stride).transpose(2, 3)
    out = F.linear(columns.reshape(*columns.shape[:2], kernel * in_channels),
                   weight.transpose(1, 2).reshape(out_channels, kernel * in_channels), bias)
    return out.transpose(1, 2)


def conv_transpose1d_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          stride: int, crop: int) -> torch.Tensor:
    """``conv_transpose1d(x, weight, bias, stride)[..., crop : crop + stride·L]`` as one
    matrix product, by polyphase decomposition.

    Output sample ``stride·m + p`` of the full transposed conv is
    ``Σ_j x[m − j] · weight[:, :, stride·j + p]``: for each phase p a stride-1
    correlation with ``taps = ⌈K / stride⌉`` taps. All phases come from one GEMM of the
    unfolded input with the re-arranged kernel, and interleave by a reshape.
    """
    in_channels, out_channels, kernel = weight.shape
    length = x.shape[-1]
    taps = -(-kernel // stride)
    first, last = crop // stride, (crop + stride * length - 1) // stride  # the m we need
    time_major = F.pad(_autocast_input(x).transpose(1, 2),
                       (0, 0, taps - 1, max(0, last + 1 - length)))
    columns = time_major.unfold(1, taps, 1)[:, first : last + 1].transpose(2, 3)  # (B, M, taps, C_in)
    # weight[c, o, stride·j + p] → matrix[(p, o), (i, c)] with window position i = taps−1−j.
    phased = F.pad(weight, (0, taps * stride - kernel)).view(in_channels, out_channels, taps, stride)
    matrix = phased.flip(2).permute(3, 1, 2, 0).reshape(stride * out_channels, taps * in_channels)
    out = F.linear(columns.reshape(*columns.shape[:2], taps * in_channels), matrix)
    out = out.view(out.shape[0], -1, out_channels)  # phases interleave: (B, M·stride, C_out)
    offset = crop - first * stride
    out = out[:, offset : offset + stride * length]
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.transpose(1, 2)


CUDA_CONVS = ("gemm", "cudnn")


class UpConv(nn.Module):
    """A transposed conv with TF SAME alignment: output length = input × stride.

    The CPU uses ``nn.ConvTranspose1d``. On CUDA, ``impl`` picks how the same function
    is computed: ``gemm`` (:func:`conv_transpose1d_gemm`, the default) or ``cudnn``
    (the module itself).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, KERNEL, stride)
        self.crop = same_padding(KERNEL, stride)[0]
        self.stride = stride
        self.impl = "gemm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.impl != "cudnn":
            return conv_transpose1d_gemm(x, self.conv.weight, self.conv.bias, self.stride, self.crop)
        full = self.conv(x)  # (in - 1) * stride + kernel samples
        return full[..., self.crop : self.crop + x.shape[-1] * self.stride]


class DownConv(nn.Module):
    """A conv with TF SAME alignment: output length = input / stride.

    The CPU uses ``nn.Conv1d``; on CUDA, ``impl`` as for :class:`UpConv`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, KERNEL, stride)
        self.pad = same_padding(KERNEL, stride)
        self.impl = "gemm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.impl != "cudnn":
            return conv1d_gemm(x, self.conv.weight, self.conv.bias, self.conv.stride[0], self.pad)
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
                 phase_shuffle_radius: int = 2, cuda_convs: str = "gemm"):
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
                          "latent_dim": latent_dim, "phase_shuffle_radius": phase_shuffle_radius,
                          "cuda_convs": cuda_convs}
        self.use_cuda_convs(cuda_convs)

    def use_cuda_convs(self, impl: str) -> None:
        """How the convs run on CUDA: ``gemm`` (the unfolded input times the kernel as
        one matrix product; the default, faster here) or ``cudnn`` (torch's strided
        convs). Both compute the same function; the CPU always uses torch's convs."""
        if impl not in CUDA_CONVS:
            raise ValueError(f"cuda_convs must be one of {', '.join(CUDA_CONVS)}, not {impl!r}")
        for module in self.modules():
            if isinstance(module, (UpConv, DownConv)):
                module.impl = impl

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """The Q-network's code logits for ``audio`` (what probes and predict use)."""
        return self.q_network(audio)
