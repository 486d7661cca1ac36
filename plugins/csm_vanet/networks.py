"""CSM-VANet (two-stage complex spectrum mapping with a VAD decoder), as nn.Modules.

Paper facts (``../shared/seeds/003_*``): STFT 400/400/100 with a Hann window at
16 kHz; magnitude compressed by 0.3 with the phase kept; input channels magnitude,
real and imaginary of the compressed spectrum; input convolution (2-D conv, instance
norm, PReLU) to 24 channels; four encoder blocks of multi-scale gated convolution
(MSGC) with a (3, 3) stride (1, 2) down-sampling conv, channels {24, 48, 96, 192};
a bottleneck of 4 TF-Conformer blocks (time, then frequency, as in CMGAN); a complex
decoder of four mirrored blocks with transposed-conv up-sampling and skip
connections; an output convolution predicting the magnitude; a VAD decoder mapping
each encoder output and the bottleneck output to one channel (conv) and one
frequency bin (linear), concatenated, then a 1-D conv (kernel 3, padding 1) and a
sigmoid: one speech probability per STFT frame.

Every choice the paper leaves open is listed, with its reason, in docs/csm-vanet.md
(MSGC's inner layout follows MogaNet's multi-order gated aggregation; the Conformer
follows CMGAN's; skips are added; the magnitude and complex outputs combine as in
CMGAN; the VAD probability multiplies the first stage's complex spectrum frame by
frame).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Spectra", "CSMVANet", "MSGC", "GatedConv", "TFConformer", "Conformer"]


class Spectra(nn.Module):
    """STFT features and their inverse: ``analyse(audio)`` gives the compressed
    complex spectrum (B, 2, T, F) (real, imaginary of |X|^c e^{j∠X}); ``synthesise``
    undoes it. T = n // hop + 1 (centred frames), F = n_fft / 2 + 1."""

    def __init__(self, n_fft: int = 400, hop: int = 100, compress: float = 0.3):
        super().__init__()
        self.n_fft, self.hop, self.compress = n_fft, hop, compress
        # periodic=False gives the symmetric Hann of MATLAB's hanning(); torch's default
        # periodic window is what STFT libraries use and makes overlap-add exact.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True).transpose(-1, -2)  # (B, T, F)

    def analyse(self, audio: torch.Tensor) -> torch.Tensor:
        spec = self.stft(audio)
        magnitude = spec.abs().clamp_min(1e-12)
        compressed = spec * magnitude.pow(self.compress - 1)  # |X|^c, phase kept
        return torch.stack([compressed.real, compressed.imag], dim=1)

    def synthesise(self, compressed: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 2, T, F) compressed spectrum → (B, length) waveform."""
        complex_ = torch.complex(compressed[:, 0].float(), compressed[:, 1].float())
        magnitude = complex_.abs().clamp_min(1e-12)
        spec = complex_ * magnitude.pow(1 / self.compress - 1)
        return torch.istft(spec.transpose(-1, -2), self.n_fft, self.hop, window=self.window,
                           center=True, length=length)


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels, affine=True), nn.PReLU(channels)]


class MSGC(nn.Module):
    """Multi-scale gated convolution (MogaNet's multi-order gated aggregation).

    gate = SiLU(1×1 x); context: a depthwise 5×5 on all channels, then the channels
    split 1:3:4 — the first eighth kept, three eighths through a depthwise 5×5 with
    dilation 2, the last half through a depthwise 7×7 with dilation 3 — concatenated
    and mixed by a 1×1, then SiLU; out = x + 1×1(gate ⊙ context). Receptive fields
    5, 13 and 23 bins/frames. ``channels`` must be divisible by 8.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % 8:
            raise ValueError(f"MSGC needs channels divisible by 8, not {channels}")
        self.splits = (channels // 8, 3 * channels // 8, channels // 2)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.dw0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        c1, c2 = self.splits[1], self.splits[2]
        self.dw1 = nn.Conv2d(c1, c1, 5, padding=4, dilation=2, groups=c1)
        self.dw2 = nn.Conv2d(c2, c2, 7, padding=9, dilation=3, groups=c2)
        self.mix = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.dw0(x)
        kept, medium, large = torch.split(x0, self.splits, dim=1)
        return F.silu(self.mix(torch.cat([kept, self.dw1(medium), self.dw2(large)], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.silu(self.gate(x)) * self.context(x))


class GatedConv(MSGC):
    """The "w/o msgc" ablation: the same gated block with a single-scale context (one
    depthwise 3×3, no channel split, no dilation)."""

    def __init__(self, channels: int):
        nn.Module.__init__(self)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.dw0 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.mix = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.mix(self.dw0(x)))


class EncoderBlock(nn.Module):
    """Gated block, then a (3, 3) stride (1, 2) conv halving frequency, IN, PReLU."""

    def __init__(self, c_in: int, c_out: int, msgc: bool):
        super().__init__()
        self.block = (MSGC if msgc else GatedConv)(c_in)
        self.down = nn.Sequential(nn.Conv2d(c_in, c_out, (3, 3), stride=(1, 2), padding=(1, 1)),
                                  *_norm_act(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.block(x))


class DecoderBlock(nn.Module):
    """Skip added, gated block, then a (3, 3) stride (1, 2) transposed conv doubling
    frequency (to the size of the encoder level it mirrors), IN, PReLU."""

    def __init__(self, c_in: int, c_out: int, msgc: bool):
        super().__init__()
        self.block = (MSGC if msgc else GatedConv)(c_in)
        self.up = nn.ConvTranspose2d(c_in, c_out, (3, 3), stride=(1, 2), padding=(1, 1))
        self.post = nn.Sequential(*_norm_act(c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, bins: int) -> torch.Tensor:
        x = self.block(x + skip)
        extra = bins - (2 * x.shape[-1] - 1)  # output_padding that reaches `bins`
        return self.post(self.up(x, output_size=[x.shape[-2], 2 * x.shape[-1] - 1 + extra]))


class RelativeAttention(nn.Module):
    """Multi-head self-attention with Shaw relative position embeddings clamped at
    ±``max_distance`` (CMGAN's conformer), dropout on the output."""

    def __init__(self, dim: int, heads: int, dropout: float, max_distance: int = 512):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.max_distance = max_distance
        self.rel_pos = nn.Embedding(2 * max_distance + 1, self.head_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(x).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # Shaw's term q_i·r_{clamp(i−j)}: q against the n·2−1 embeddings the distances
        # use, then gathered to (i, j) — never the (n, n, d) tensor of embeddings.
        low = max(0, self.max_distance - (n - 1))
        high = min(2 * self.max_distance, self.max_distance + n - 1)
        table = self.rel_pos.weight[low : high + 1].to(q.dtype)
        position = torch.arange(n, device=x.device)
        distance = (position[:, None] - position[None, :]).clamp(-self.max_distance, self.max_distance)
        index = (distance + self.max_distance - low).expand(b, self.heads, n, n)
        bias = torch.gather(q @ table.T, -1, index) * self.scale
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.dropout(self.to_out(out.transpose(1, 2).reshape(b, n, -1)))


class ConvModule(nn.Module):
    """LayerNorm → pointwise to 2·inner → GLU → depthwise (kernel 31) → BatchNorm →
    Swish → pointwise back (CMGAN's). The pointwise convolutions are linear layers on
    (B, L, C), and the depthwise one is a (1, k) 2-D conv on channels-last memory:
    the same arithmetic, and on the CPU 25–45× faster than a 1-D depthwise conv."""

    def __init__(self, dim: int, expansion: int = 2, kernel: int = 31, dropout: float = 0.0):
        super().__init__()
        inner = dim * expansion
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * inner)
        self.depthwise = nn.Conv2d(inner, inner, (1, kernel), padding=(0, kernel // 2), groups=inner)
        self.batch_norm = nn.BatchNorm1d(inner)
        self.pointwise_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)  # (B, L, inner)
        y = self.depthwise(y.transpose(1, 2).unsqueeze(2)).squeeze(2)  # (B, inner, L)
        y = F.silu(self.batch_norm(y))
        return self.dropout(self.pointwise_out(y.transpose(1, 2)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Conformer(nn.Module):
    """x += ½FFN(x); x += MHSA(LN x); x += Conv(x); x += ½FFN(x); LN (CMGAN's)."""

    def __init__(self, dim: int, heads: int = 4, ff_mult: int = 4, conv_expansion: int = 2,
                 kernel: int = 31, dropout: float = 0.2):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_mult, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = RelativeAttention(dim, heads, dropout)
        self.conv = ConvModule(dim, conv_expansion, kernel)
        self.ff2 = FeedForward(dim, ff_mult, dropout)
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(self.attn_norm(x))
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(x)
        return self.post_norm(x)


class TFConformer(nn.Module):
    """A Conformer over time (per frequency bin), then one over frequency (per
    frame), each with its own residual: (B, C, T, F) → (B, C, T, F)."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.time = Conformer(dim, heads, dropout=dropout)
        self.frequency = Conformer(dim, heads, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        y = x.permute(0, 3, 2, 1).reshape(b * f, t, c)
        y = self.time(y) + y
        y = y.view(b, f, t, c).permute(0, 2, 1, 3).reshape(b * t, f, c)
        y = self.frequency(y) + y
        return y.view(b, t, f, c).permute(0, 3, 1, 2)


class VADDecoder(nn.Module):
    """Each input (B, C_i, T, F_i) → 1×1 conv to one channel → linear over F_i to one
    bin → (B, 1, T); the k inputs concatenated (B, k, T) → Conv1d(k, 1, 3, padding 1)
    → sigmoid: (B, T) speech probabilities."""

    def __init__(self, channels: list[int], bins: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)
        self.linears = nn.ModuleList(nn.Linear(f, 1) for f in bins)
        self.head = nn.Conv1d(len(channels), 1, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        rows = [lin(conv(x)).squeeze(-1) for x, conv, lin in zip(features, self.convs, self.linears,
                                                                strict=True)]
        return torch.sigmoid(self.head(torch.cat(rows, dim=1)).float()).squeeze(1)


def frequency_sizes(bins: int, levels: int) -> list[int]:
    """Bins after each stride-2 (kernel 3, padding 1) conv: 201 → 101 → 51 → 26 → 13."""
    sizes = [bins]
    for _ in range(levels):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


class CSMVANet(nn.Module):
    """The network: ``forward(noisy)`` with noisy (B, n) at 16 kHz returns a dict
    ``audio`` (B, n), ``spec`` (B, 2, T, F) compressed complex estimate, ``vad``
    (B, T) or None, ``first_stage`` (B, 2, T, F).

    Args:
        channels: encoder block outputs (the input conv gives ``channels[0]``).
        conformers: TF-Conformer blocks in the bottleneck.
        msgc: multi-scale gated convolutions (False: single-scale gated convs).
        vad_decoder: the VAD decoder and second stage (False: single-stage).
        vad_floor: the second stage's gain is ``floor + (1 − floor)·p_speech``.
        noisy_mix: the output is ``(1 − m)·enhanced + m·noisy`` (0: the paper's).
    """

    def __init__(self, channels: tuple[int, ...] = (24, 48, 96, 192), conformers: int = 4,
                 heads: int = 4, msgc: bool = True, vad_decoder: bool = True, vad_floor: float = 0.0,
                 n_fft: int = 400, hop: int = 100, compress: float = 0.3, dropout: float = 0.2,
                 noisy_mix: float = 0.0):
        super().__init__()
        self.spectra = Spectra(n_fft, hop, compress)
        self.bins = frequency_sizes(n_fft // 2 + 1, len(channels))
        self.vad_floor = vad_floor
        self.noisy_mix = noisy_mix
        first = channels[0]
        self.input_conv = nn.Sequential(nn.Conv2d(3, first, 1), *_norm_act(first))
        ins = [first, *channels[:-1]]
        self.encoder = nn.ModuleList(EncoderBlock(i, o, msgc) for i, o in zip(ins, channels, strict=True))
        self.bottleneck = nn.Sequential(*(TFConformer(channels[-1], heads, dropout)
                                          for _ in range(conformers)))
        self.decoder = nn.ModuleList(
            DecoderBlock(o, i, msgc) for i, o in zip(reversed(ins), reversed(channels), strict=True)
        )
        self.complex_head = nn.Conv2d(first, 2, 1)
        # "the same structure as the input convolution", then one channel
        self.output_conv = nn.Sequential(nn.Conv2d(first, first, 1), *_norm_act(first),
                                         nn.Conv2d(first, 1, 1))
        self.vad = (VADDecoder([*channels, channels[-1]], [*self.bins[1:], self.bins[-1]])
                    if vad_decoder else None)
        # Channels-last weights make every 2-D conv run channels-last: on the CPU
        # (oneDNN) the depthwise convolutions' backward passes are ~10× faster so.
        self.to(memory_format=torch.channels_last)

    def forward(self, noisy: torch.Tensor) -> dict[str, torch.Tensor | None]:
        if noisy.dim() == 3:
            noisy = noisy.squeeze(1)
        length = noisy.shape[-1]
        # CMGAN's level normalisation: the noisy input at unit RMS, undone at the end.
        scale = torch.rsqrt(noisy.float().pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10))
        with torch.autocast(noisy.device.type, enabled=False):
            spec = self.spectra.analyse(noisy.float() * scale)  # (B, 2, T, F)
        magnitude = torch.linalg.vector_norm(spec, dim=1, keepdim=True)
        features = torch.cat([magnitude, spec], dim=1).contiguous(memory_format=torch.channels_last)
        x = self.input_conv(features)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        bottleneck = self.bottleneck(x)
        y = bottleneck
        for block, skip, bins in zip(self.decoder, reversed(skips), reversed(self.bins[:-1]),
                                     strict=True):
            y = block(y, skip, bins)
        residual = self.complex_head(y).float()
        predicted_magnitude = self.output_conv(y).float()
        # First stage (CMGAN's combination): magnitude with the noisy phase, plus the
        # predicted real and imaginary parts.
        phase = spec / magnitude.clamp_min(1e-8)
        first_stage = predicted_magnitude * phase + residual
        vad = None
        estimate = first_stage
        if self.vad is not None:
            vad = self.vad([*skips, bottleneck])
            gain = self.vad_floor + (1 - self.vad_floor) * vad
            estimate = first_stage * gain[:, None, :, None]
        with torch.autocast(noisy.device.type, enabled=False):
            audio = self.spectra.synthesise(estimate, length) / scale
            if self.noisy_mix:
                audio = (1 - self.noisy_mix) * audio + self.noisy_mix * noisy.float()
        return {"audio": audio, "spec": estimate, "vad": vad, "first_stage": first_stage,
                "scale": scale}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs_per_second(network: CSMVANet, seconds: float = 2.0, rate: int = 16000) -> float:
    """Multiply-accumulates per second of audio (convolutions, linears and attention
    matrix products, counted by torch's flop counter on ``seconds`` of input, halved)."""
    from torch.utils.flop_counter import FlopCounterMode

    audio = torch.zeros(1, int(seconds * rate))
    was_training = network.training
    network.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(audio)
    network.train(was_training)
    return counter.get_total_flops() / 2 / seconds

