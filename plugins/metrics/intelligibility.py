"""STOI (Taal et al. 2011) computed the way ``pystoi`` computes it, for all frames and
segments at once, and in two halves: what depends on the clean reference alone
(:class:`StoiReference`: its resampling, the frames kept as speech, its one-third-
octave envelopes and their normalised segments) and what the estimate adds. Several
estimates of one reference (systems compared on the same files) share the first half.

Every step follows pystoi 0.4 (the implementation behind the published tables), so
the value agrees with ``pystoi.stoi`` to rounding (tests/test_metrics.py checks it to
1e-10 on the real pairs):

* the signals are resampled to 10 kHz by the Octave-compatible polyphase filter
  (Kaiser-windowed sinc, 60 dB rejection, roll-off a tenth of the cut-off, taps
  normalised to sum 1), evaluated here one output phase at a time;
* frames of 256 samples (Hann window without its end zeros), hop 128, starting at
  0, 128, … while the start is *below* ``len − 256``; a frame is speech when its
  energy is within 40 dB of the loudest frame of the reference; the speech frames of
  both signals are overlap-added back into signals;
* the same framing again, a 512-point FFT, the 15 one-third-octave bands from 150 Hz
  (band edges snapped to the nearest FFT bin), envelopes as root band powers;
* segments of 30 frames ending at every frame from the 30th; per band, the estimate
  is scaled to the reference's energy, clipped at −15 dB SDR (``x·(1 + 10^(15/20))``),
  and both are mean-removed and normalised; STOI is the mean correlation.

Fewer than 30 speech frames leave no segment: the value cannot be computed and is NaN
(pystoi returns a 1e-5 placeholder with a warning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 10_000
FRAME = 256
HOP = FRAME // 2
FFT = 512
BANDS = 15
LOWEST_CENTRE = 150.0
SEGMENT = 30
CLIP = 1 + 10 ** (15 / 20)  # the estimate is clipped at −15 dB SDR (beta)
DYNAMIC_RANGE = 40.0
EPS = np.finfo(np.float64).eps

__all__ = ["StoiReference", "stoi", "stoi_reference", "stoi_with"]


@lru_cache(maxsize=8)
def _phases(up: int, down: int) -> tuple[np.ndarray, int]:
    """The polyphase taps of pystoi's resampler, ``(up, taps)`` (phase ``r`` holds
    taps ``r, r + up, …`` of the filter, reversed for a correlation), and the half
    length of the filter."""
    cutoff = 1.0 / (2 * max(up, down))
    half = math.ceil((60.0 - 8.0) / (28.714 * cutoff / 10))
    t = np.arange(-half, half + 1)
    beta = 0.1102 * (60.0 - 8.7)
    taps = np.kaiser(2 * half + 1, beta) * (2 * up * cutoff * np.sinc(2 * cutoff * t))
    taps = taps / np.sum(taps) * up
    width = -(-len(taps) // up)
    phases = np.zeros((up, width))
    for r in range(up):
        phases[r, : len(taps[r::up])] = taps[r::up]
    return phases[:, ::-1].copy(), half


def resample(signal: np.ndarray, rate: int) -> np.ndarray:
    """``signal`` at 10 kHz through pystoi's filter (``resample_poly`` with zero
    padding): output n is Σ_k x[k]·h[n·down − k·up + half]."""
    if rate == RATE:
        return np.asarray(signal, dtype=np.float64)
    g = math.gcd(RATE, rate)
    up, down = RATE // g, rate // g
    phases, half = _phases(up, down)
    width = phases.shape[1]
    n_out = -(-len(signal) * up // down)
    padded = np.concatenate([np.zeros(width), np.asarray(signal, dtype=np.float64), np.zeros(width + 1)])
    windows = sliding_window_view(padded, width)
    out = np.empty(n_out)
    for first in range(min(up, n_out)):  # outputs first, first + up, …: one phase, input step `down`
        centre = first * down + half
        r, m = centre % up, centre // up
        # window w starts at padded[m - width + 1 + width] = signal[m - width + 1]
        out[first::up] = windows[m + 1: m + 1 + down * len(out[first::up]): down] @ phases[r]
    return out


def _window() -> np.ndarray:
    return np.hanning(FRAME + 2)[1:-1]


def _frames(signal: np.ndarray) -> np.ndarray:
    """Windowed frames starting at 0, HOP, … below ``len − FRAME`` (pystoi's range)."""
    count = len(range(0, len(signal) - FRAME, HOP))
    if count <= 0:
        return np.zeros((0, FRAME))
    return sliding_window_view(signal, FRAME)[: count * HOP : HOP] * _window()


def _overlap_add(frames: np.ndarray) -> np.ndarray:
    """Frames at hop FRAME/2 added back into one signal."""
    if len(frames) == 0:
        return np.zeros(0)
    out = np.zeros((len(frames) + 1) * HOP)
    halves = frames.reshape(len(frames), 2, HOP)
    out[: len(frames) * HOP] += halves[:, 0].reshape(-1)
    out[HOP:] += halves[:, 1].reshape(-1)
    return out


@lru_cache(maxsize=1)
def _band_matrix() -> np.ndarray:
    """The 15 × 257 one-third-octave band matrix, band edges at the nearest bins."""
    bins = np.linspace(0, RATE, FFT + 1)[: FFT // 2 + 1]
    k = np.arange(BANDS, dtype=np.float64)
    low = LOWEST_CENTRE * np.power(2.0, (2 * k - 1) / 6)
    high = LOWEST_CENTRE * np.power(2.0, (2 * k + 1) / 6)
    matrix = np.zeros((BANDS, len(bins)))
    for band in range(BANDS):
        start = np.argmin(np.square(bins - low[band]))
        stop = np.argmin(np.square(bins - high[band]))
        matrix[band, start:stop] = 1
    return matrix


def _envelopes(signal: np.ndarray) -> np.ndarray:
    """Root band powers, bands × frames."""
    spectrum = np.fft.rfft(_frames(signal), n=FFT, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return np.sqrt(_band_matrix() @ power.T)


def _segments(envelopes: np.ndarray) -> np.ndarray:
    """Segments of SEGMENT frames ending at every frame from the SEGMENT-th:
    segments × bands × SEGMENT (a view)."""
    return sliding_window_view(envelopes, SEGMENT, axis=1).transpose(1, 0, 2)


def _centred_unit(segments: np.ndarray) -> np.ndarray:
    centred = segments - segments.mean(axis=2, keepdims=True)
    return centred / (np.linalg.norm(centred, axis=2, keepdims=True) + EPS)


@dataclass(frozen=True)
class StoiReference:
    """What STOI needs of a clean reference, computed once: its samples and rate (to
    recognise it), the speech-frame mask, its segments, their norms and their
    centred unit form. ``segments`` is None when fewer than 30 frames are speech."""

    samples: np.ndarray
    rate: int
    mask: np.ndarray
    segments: np.ndarray | None
    norms: np.ndarray | None
    unit: np.ndarray | None

    def matches(self, clean: np.ndarray, rate: int) -> bool:
        """Whether this is the analysis of ``clean`` at ``rate``."""
        return rate == self.rate and clean.shape == self.samples.shape and np.array_equal(clean, self.samples)


def stoi_reference(clean: np.ndarray, rate: int) -> StoiReference:
    """The reference's half of STOI."""
    clean = np.asarray(clean, dtype=np.float64)
    x = resample(clean, rate)
    frames = _frames(x)
    energies = 20 * np.log10(np.linalg.norm(frames, axis=1) + EPS)
    mask = (np.max(energies, initial=-np.inf) - DYNAMIC_RANGE - energies) < 0
    envelopes = _envelopes(_overlap_add(frames[mask]))
    if envelopes.shape[1] < SEGMENT:
        return StoiReference(clean, rate, mask, None, None, None)
    segments = _segments(envelopes)
    return StoiReference(clean, rate, mask, segments, np.linalg.norm(segments, axis=2, keepdims=True),
                         _centred_unit(segments))


def stoi_with(reference: StoiReference, estimate: np.ndarray) -> float:
    """STOI of ``estimate`` (same length and rate as the reference) given the
    reference's half; NaN when the reference has fewer than 30 speech frames."""
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.shape != reference.samples.shape:
        raise ValueError(f"STOI needs signals of one length: {len(reference.samples)} and {len(estimate)}")
    if reference.segments is None:
        return math.nan
    y = resample(estimate, reference.rate)
    segments = _segments(_envelopes(_overlap_add(_frames(y)[reference.mask])))
    scaled = segments * (reference.norms / (np.linalg.norm(segments, axis=2, keepdims=True) + EPS))
    clipped = np.minimum(scaled, reference.segments * CLIP)
    correlations = _centred_unit(clipped) * reference.unit
    return float(np.sum(correlations) / (correlations.shape[0] * correlations.shape[1]))


def stoi(clean: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    """STOI of ``estimate`` against ``clean`` (1-D, one length, at ``rate``)."""
    return stoi_with(stoi_reference(clean, rate), estimate)
