"""Speech-quality measures as functions of one (reference, estimate) pair of 1-D float
arrays: PESQ, STOI/ESTOI, SI-SDR, and Hu & Loizou's (2008) composite measures CSIG,
CBAK, COVL with their parts LLR, WSS and segSNR.

The composite measures share one framing: 30 ms Hann-like frames
(w(n) = 0.5(1 − cos(2πn/(L+1))), n = 1..L), hop L/4, floor((N − L)/hop) frames.
Every per-frame measure is computed for all frames at once (NumPy), not in a Python
loop over frames.

Two conventions (``convention=``; see docs/metrics.md):

``voicebank`` (the default)
    The one behind the published VoiceBank+DEMAND tables: the Python port of
    ``compute_metrics.m`` used by CMGAN and MP-SENet, on float input in [−1, 1].
    Wideband PESQ (P.862.2 MOS-LQO) in the regressions; eps added only when the
    lengths differ; and its WSS quirk: each frame is divided by 32768 as if the input
    were int16, which puts band energies ~90 dB lower, where the 1e-10 floor acts.
``loizou``
    Loizou's original ``composite.m``: raw P.862 PESQ (recovered from the narrowband
    MOS-LQO by inverting the P.862.1 mapping), eps always added, no /32768.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Convention = Literal["voicebank", "loizou"]
EPS = np.spacing(1)
TRIM = 0.95  # LLR and WSS average the lowest 95 % of frames

# Critical bands of the WSS measure (centre frequencies and bandwidths, Hz).
CENTRES = np.array(
    [
        50.0,
        120.0,
        190.0,
        260.0,
        330.0,
        400.0,
        470.0,
        540.0,
        617.372,
        703.378,
        798.717,
        904.128,
        1020.38,
        1148.30,
        1288.72,
        1442.54,
        1610.70,
        1794.16,
        1993.93,
        2211.08,
        2446.71,
        2701.97,
        2978.04,
        3276.17,
        3597.63,
    ]
)
BANDWIDTHS = np.array(
    [
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        77.3724,
        86.0056,
        95.3398,
        105.411,
        116.256,
        127.914,
        140.423,
        153.823,
        168.154,
        183.457,
        199.776,
        217.153,
        235.631,
        255.255,
        276.072,
        298.126,
        321.465,
        346.136,
    ]
)


def framing(rate: int) -> tuple[int, int]:
    """(frame length, hop) of the composite measures: 30 ms and a quarter of it."""
    length = int(round(0.03 * rate))
    return length, length // 4


def frames(signal: np.ndarray, rate: int) -> np.ndarray:
    """(F, L) windowed frames, F = floor((N − L) / hop)."""
    length, hop = framing(rate)
    count = int(len(signal) / hop - length / hop)
    if count < 1:
        raise ValueError(f"{len(signal)} samples are too short for one {length}-sample frame")
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, length + 1) / (length + 1)))
    return sliding_window_view(signal, length)[: count * hop : hop] * window


@dataclass(frozen=True)
class CleanAnalysis:
    """What the composite measures need of the clean signal alone, computed once
    and reused for every estimate of it (systems compared on the same references):
    its frames and their energies, autocorrelations and LPC models, and its WSS
    band energies, slopes and weights."""

    samples: np.ndarray
    rate: int
    int16_scaling: bool
    frames: np.ndarray
    energy: np.ndarray
    autocorrelation: np.ndarray
    lpc_energy: np.ndarray  # a·R·aᵀ of the clean LPC model under its own autocorrelation
    wss_slope: np.ndarray
    wss_weight: np.ndarray

    def matches(self, clean: np.ndarray, rate: int, int16_scaling: bool) -> bool:
        """Whether this is the analysis of ``clean`` at ``rate``."""
        return (rate == self.rate and int16_scaling == self.int16_scaling
                and clean.shape == self.samples.shape and np.array_equal(clean, self.samples))


def kept(cache: dict | None, key: str, fits: Callable[[Any], bool], compute: Callable[[], Any]) -> Any:
    """``cache[key]`` where it ``fits`` (a reference's half computed before, for the
    same reference), else ``compute()``, kept in ``cache`` for the next estimate."""
    found = (cache or {}).get(key)
    if found is None or not fits(found):
        found = compute()
        if cache is not None:
            cache[key] = found
    return found


def _lpc_order(rate: int) -> int:
    return 16 if rate >= 10000 else 10


def clean_analysis(clean: np.ndarray, rate: int, int16_scaling: bool = True) -> CleanAnalysis:
    """The clean signal's half of LLR, WSS and segSNR."""
    clean = np.asarray(clean, dtype=np.float64)
    c = frames(clean, rate)
    r = _autocorrelation(c, _lpc_order(rate))
    slope, weight = _wss_side(clean / 32768 if int16_scaling else clean, rate)
    return CleanAnalysis(clean, rate, int16_scaling, c, np.sum(c * c, axis=1), r,
                         _toeplitz_form(_levinson(r), r), slope, weight)


def segsnr_frames(clean: np.ndarray, estimate: np.ndarray, rate: int,
                  analysis: CleanAnalysis | None = None) -> np.ndarray:
    """Per-frame segmental SNR in dB, clipped to [−10, 35]."""
    c = analysis.frames if analysis is not None else frames(clean, rate)
    signal_energy = analysis.energy if analysis is not None else np.sum(c * c, axis=1)
    e = frames(estimate, rate)
    noise_energy = np.sum((c - e) ** 2, axis=1)
    return np.clip(10 * np.log10(signal_energy / (noise_energy + EPS) + EPS), -10, 35)


def _autocorrelation(x: np.ndarray, order: int) -> np.ndarray:
    """Lags 0..order of each row, through one real FFT per frame (zero-padded so the
    circular correlation equals the linear one at these lags)."""
    n_fft = 1 << int(math.ceil(math.log2(x.shape[1] + order)))
    power = np.abs(np.fft.rfft(x, n_fft)) ** 2
    return np.fft.irfft(power, n_fft)[:, : order + 1]


def _levinson(r: np.ndarray) -> np.ndarray:
    """LPC polynomials [1, −a₁ … −a_p] of each row of autocorrelations, by
    Levinson–Durbin (all frames at once).

    A digitally silent frame (zero autocorrelation) has no LPC model: its row is NaN,
    as MATLAB's ``lpc`` gives in the reference ``composite.m``. Its LLR is then NaN,
    which sorts last, so the trimmed mean drops it (while such frames are under 5 %)."""
    frames_n, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((frames_n, order))
    error = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):  # silent frames: NaN, on purpose
        for i in range(order):
            k = (r[:, i + 1] - np.sum(a[:, :i] * r[:, i:0:-1], axis=1)) / error
            previous = a[:, :i].copy()
            a[:, i] = k
            a[:, :i] = previous - k[:, None] * previous[:, ::-1]
            error = (1 - k * k) * error
    return np.concatenate([np.ones((frames_n, 1)), -a], axis=1)


def _toeplitz_form(poly: np.ndarray, r: np.ndarray) -> np.ndarray:
    """poly · Toeplitz(r) · polyᵀ for each row."""
    order = r.shape[1] - 1
    total = r[:, 0] * np.sum(poly * poly, axis=1)
    for lag in range(1, order + 1):
        total += 2 * r[:, lag] * np.sum(poly[:, :-lag] * poly[:, lag:], axis=1)
    return total


def llr_frames(clean: np.ndarray, estimate: np.ndarray, rate: int,
               analysis: CleanAnalysis | None = None) -> np.ndarray:
    """Per-frame log-likelihood ratio of the estimate's LPC model against the clean
    one (order 16 at ≥ 10 kHz, else 10), both under the clean frame's autocorrelation."""
    order = _lpc_order(rate)
    if analysis is None:
        r_clean = _autocorrelation(frames(clean, rate), order)
        clean_energy = _toeplitz_form(_levinson(r_clean), r_clean)
    else:
        r_clean, clean_energy = analysis.autocorrelation, analysis.lpc_energy
    a_estimate = _levinson(_autocorrelation(frames(estimate, rate), order))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_toeplitz_form(a_estimate, r_clean) / clean_energy)


def _critical_filters(rate: int, n_half: int) -> np.ndarray:
    max_freq = rate / 2
    floor = math.exp(-30.0 / (2.0 * 2.303))  # the filters' −30 dB point
    bins = np.arange(n_half)
    f0 = np.floor(CENTRES / max_freq * n_half)
    bw = BANDWIDTHS / max_freq * n_half
    norm = np.log(BANDWIDTHS[0]) - np.log(BANDWIDTHS)
    filters = np.exp(-11 * ((bins[None, :] - f0[:, None]) / bw[:, None]) ** 2 + norm[:, None])
    return np.where(filters > floor, filters, 0.0)


def _nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """For each band i < 24: climbing (slope > 0), the energy where the rise ends;
    otherwise the energy after the last rise to its left — exactly as the
    compute_metrics port indexes it."""
    bands = slope.shape[1]  # 24
    rows = np.arange(slope.shape[0])
    next_fall = np.empty_like(slope, dtype=int)  # first j ≥ i with slope ≤ 0, else 24
    following = np.full(slope.shape[0], bands)
    for i in range(bands - 1, -1, -1):
        following = np.where(slope[:, i] <= 0, i, following)
        next_fall[:, i] = following
    last_rise = np.empty_like(slope, dtype=int)  # last j ≤ i with slope > 0, else −1
    preceding = np.full(slope.shape[0], -1)
    for i in range(bands):
        preceding = np.where(slope[:, i] > 0, i, preceding)
        last_rise[:, i] = preceding
    right = energy[rows[:, None], next_fall - 1]
    left = energy[rows[:, None], last_rise + 1]
    return np.where(slope > 0, right, left)


def _wss_side(signal: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """One signal's spectral slopes across the critical bands and their weights."""
    length, _ = framing(rate)
    n_fft = int(2 ** math.ceil(math.log2(2 * length)))
    n_half = n_fft // 2
    k_max, k_loc_max = 20.0, 1.0
    spectrum = np.abs(np.fft.rfft(frames(signal, rate), n_fft)[:, :n_half]) ** 2
    energy = 10 * np.log10(np.maximum(spectrum @ _critical_filters(rate, n_half).T, 1e-10))
    slope = energy[:, 1:] - energy[:, :-1]
    peaks = _nearest_peaks(energy, slope)
    below = energy[:, :-1]
    w_max = k_max / (k_max + energy.max(axis=1, keepdims=True) - below)
    w_loc = k_loc_max / (k_loc_max + peaks - below)
    return slope, w_max * w_loc


def wss_frames(clean: np.ndarray, estimate: np.ndarray, rate: int, int16_scaling: bool = True,
               analysis: CleanAnalysis | None = None) -> np.ndarray:
    """Per-frame weighted spectral slope distance (Klatt 1982), normalised by the
    sum of weights. ``int16_scaling`` divides the signals by 32768 first (the
    voicebank convention's quirk)."""
    scale = 32768 if int16_scaling else 1
    if analysis is None:
        clean_slope, clean_weight = _wss_side(clean / scale, rate)
    else:
        clean_slope, clean_weight = analysis.wss_slope, analysis.wss_weight
    slope, weight = _wss_side(estimate / scale, rate)
    w = (clean_weight + weight) / 2
    return np.sum(w * (clean_slope - slope) ** 2, axis=1) / np.sum(w, axis=1)


def trimmed_mean(values: np.ndarray, fraction: float = TRIM) -> float:
    """The mean of the lowest ``fraction`` of values (round(n·fraction) of them)."""
    ordered = np.sort(values)
    return float(np.mean(ordered[: round(len(ordered) * fraction)]))


@contextlib.contextmanager
def c_stdout_captured() -> Iterator[list[str]]:
    """Whatever native code writes to file descriptor 1 inside the block is kept out
    of the user's output and appended to the yielded list (the pesq C code prints its
    usage text there on some errors)."""
    sys.stdout.flush()
    saved = os.dup(1)
    captured: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield captured
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace").strip())


def pesq_score(clean: np.ndarray, estimate: np.ndarray, rate: int, mode: Literal["wb", "nb"] = "wb") -> float:
    """PESQ MOS-LQO from the ``pesq`` package (P.862.2 wideband or P.862.1 narrowband).
    Wideband PESQ is defined at 16 kHz only; what the C code prints goes into the
    error, not into the user's output."""
    from pesq import pesq

    if mode == "wb" and rate != 16000:
        raise ValueError(f"wideband PESQ is defined at 16 kHz, not {rate} Hz; narrowband PESQ (mode nb) "
                         "scores 8 kHz audio")
    with c_stdout_captured() as printed:
        try:
            value = pesq(rate, clean, estimate, mode)
        except Exception as error:
            raised = error
        else:
            raised = None
    if raised is not None:
        if not (printed and printed[0]):
            raise raised
        try:
            annotated = type(raised)(f"{raised} (the pesq library printed: {printed[0][:200]})")
        except Exception:  # an exception type that takes other arguments: as it was
            annotated = raised
        raise annotated from raised
    return float(value)


def raw_pesq_from_nb(mos_lqo: float) -> float:
    """Invert the P.862.1 mapping: raw P.862 PESQ from a narrowband MOS-LQO."""
    return (4.6607 - math.log(4.0 / (mos_lqo - 0.999) - 1.0)) / 1.4945


# What a silent estimate scores where a measure has no value for silence: the bottom
# of each scale (PESQ's MOS-LQO and the composite measures' 1 to 5; segSNR's clip).
WORST = {"pesq": 1.0, "csig": 1.0, "cbak": 1.0, "covl": 1.0, "ssnr": -10.0}


def is_silent(signal: np.ndarray) -> bool:
    """Whether ``signal`` is digital silence: no sample differs from the first (all
    zeros, or zeros plus the eps the length rule adds)."""
    return len(signal) == 0 or bool(np.all(signal == signal[0]))


def equal_lengths(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two signals of different lengths as the VoiceBank convention scores them
    (``compute_metrics.m``): both cut to the shorter, and eps added to both; signals of
    equal length are returned as they are."""
    if len(first) == len(second):
        return first, second
    length = min(len(first), len(second))
    return (np.asarray(first[:length], dtype=np.float64) + EPS,
            np.asarray(second[:length], dtype=np.float64) + EPS)


def composite(
    clean: np.ndarray,
    estimate: np.ndarray,
    rate: int,
    convention: Convention = "voicebank",
    pesq_value: float | None = None,
    cache: dict | None = None,
) -> dict[str, float]:
    """CSIG, CBAK, COVL (each clipped to [1, 5]) with the PESQ, LLR, WSS and segSNR
    they are built from, in one of the two conventions. ``cache``: a dict that keeps
    the clean signal's half (:func:`clean_analysis`) between calls, reused while the
    clean signal (after the convention's alignment) is the same."""
    clean, estimate = np.asarray(clean, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if convention == "voicebank":
        clean, estimate = equal_lengths(clean, estimate)
        pesq_for_regression = (
            pesq_value if pesq_value is not None else pesq_score(clean, estimate, rate, "wb")
        )
        pesq_reported = pesq_for_regression
        int16 = True
    elif convention == "loizou":
        length = min(len(clean), len(estimate))
        clean, estimate = clean[:length] + EPS, estimate[:length] + EPS
        pesq_reported = pesq_value if pesq_value is not None else pesq_score(clean, estimate, rate, "nb")
        pesq_for_regression = raw_pesq_from_nb(pesq_reported)
        int16 = False
    else:
        raise ValueError(f"convention must be 'voicebank' or 'loizou', not {convention!r}")
    analysis = kept(cache, "clean", lambda found: found.matches(clean, rate, int16),
                    lambda: clean_analysis(clean, rate, int16))
    llr = trimmed_mean(llr_frames(clean, estimate, rate, analysis))
    wss = trimmed_mean(wss_frames(clean, estimate, rate, int16, analysis))
    segsnr = float(np.mean(segsnr_frames(clean, estimate, rate, analysis)))
    p = pesq_for_regression
    return {
        "csig": float(np.clip(3.093 - 1.029 * llr + 0.603 * p - 0.009 * wss, 1, 5)),
        "cbak": float(np.clip(1.634 + 0.478 * p - 0.007 * wss + 0.063 * segsnr, 1, 5)),
        "covl": float(np.clip(1.594 + 0.805 * p - 0.512 * llr - 0.007 * wss, 1, 5)),
        "pesq": pesq_reported,
        "llr": llr,
        "wss": wss,
        "ssnr": segsnr,  # segmental SNR: one name, ssnr, in files and SSNR in tables
    }


def stoi_score(clean: np.ndarray, estimate: np.ndarray, rate: int, extended: bool = False,
               cache: dict | None = None) -> float:
    """STOI (:mod:`.intelligibility`, pystoi's computation, the reference's half kept
    in ``cache`` for further estimates of it), or ESTOI with ``extended`` (from
    ``pystoi``). NaN (a value that could not be computed) where the reference has too
    few frames of speech: pystoi would return its placeholder 1e-5, which a mean would
    take for a real score."""
    import warnings

    if not extended:
        from .intelligibility import stoi_reference, stoi_with

        samples = np.asarray(clean, dtype=np.float64)
        reference = kept(cache, "stoi", lambda found: found.matches(samples, rate),
                         lambda: stoi_reference(samples, rate))
        return stoi_with(reference, estimate)

    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(clean, estimate, rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    for warning in caught:  # any other warning is passed on as it came
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return value


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals mean-removed."""
    reference = np.asarray(reference, dtype=np.float64) - np.mean(reference)
    estimate = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + EPS)
    target = scale * reference
    noise = estimate - target
    return float(10 * np.log10((np.dot(target, target) + EPS) / (np.dot(noise, noise) + EPS)))
