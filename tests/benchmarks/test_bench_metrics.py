"""Speed of the full metric set (PESQ, CSIG, CBAK, COVL, segSNR, STOI, SI-SDR) over the
25 real VoiceBank+DEMAND pairs, and of the vectorised composite measures against a
straightforward per-frame Python loop, measured in the same run.

Run on demand: ``pytest tests/benchmarks/test_bench_metrics.py --benchmark-only``.
Target: the full set in ≤ 0.07 s per utterance on the 2-core machine.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf

from wavelens.plugins.metrics import quality
from wavelens.plugins.metrics.folders import evaluate_folders
from wavelens.plugins.metrics.speech import Composite, CompositeParams, SiSdr, SpeechParams, Stoi, StoiParams

from conftest import SHARED_DATA

VOICEBANK = SHARED_DATA / "voicebank_demand"
pytestmark = pytest.mark.skipif(
    not (VOICEBANK / "clean").is_dir(), reason=f"the shared VoiceBank+DEMAND pairs are not at {VOICEBANK}"
)


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (VOICEBANK / "clean").glob("*.wav"))
    return [(sf.read(VOICEBANK / "clean" / n)[0], sf.read(VOICEBANK / "noisy" / n)[0]) for n in names]


def test_bench_full_metric_set_per_utterance(benchmark):
    metrics = {
        "composite": Composite(CompositeParams()),
        "stoi": Stoi(StoiParams()),
        "si_sdr": SiSdr(SpeechParams()),
    }
    outcome = {}

    def run():
        rows, _ = evaluate_folders(VOICEBANK / "clean", VOICEBANK / "noisy", metrics, workers=os.cpu_count())
        outcome["rows"] = rows

    benchmark.pedantic(run, rounds=3, iterations=1)
    count = len(outcome["rows"])
    benchmark.extra_info["utterances"] = count
    benchmark.extra_info["seconds_per_utterance"] = benchmark.stats["mean"] / count
    benchmark.extra_info["workers"] = os.cpu_count()


# -- a per-frame loop, the way the common reference scripts compute the measures -------


def _loop_frames(x: np.ndarray, rate: int):
    length, hop = quality.framing(rate)
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, length + 1) / (length + 1)))
    for index in range(int(len(x) / hop - length / hop)):
        yield x[index * hop : index * hop + length] * window


def _loop_lpc(frame: np.ndarray, order: int):
    r = np.array([np.dot(frame[: len(frame) - k], frame[k:]) for k in range(order + 1)])
    a, error = np.zeros(order), r[0]
    for i in range(order):
        k = (r[i + 1] - np.dot(a[:i], r[i:0:-1])) / error
        previous = a[:i].copy()
        a[i] = k
        a[:i] = previous - k * previous[::-1]
        error *= 1 - k * k
    return r, np.concatenate([[1.0], -a])


def _loop_composite(clean: np.ndarray, estimate: np.ndarray, rate: int) -> tuple[float, float, float]:
    from scipy.linalg import toeplitz

    llr = []
    for c, e in zip(_loop_frames(clean, rate), _loop_frames(estimate, rate), strict=True):
        r_c, a_c = _loop_lpc(c, 16)
        _, a_e = _loop_lpc(e, 16)
        t = toeplitz(r_c)
        llr.append(math.log((a_e @ t @ a_e) / (a_c @ t @ a_c)))
    length, _ = quality.framing(rate)
    n_fft = int(2 ** math.ceil(math.log2(2 * length)))
    filters = quality._critical_filters(rate, n_fft // 2)
    wss = []
    for c, e in zip(_loop_frames(clean / 32768, rate), _loop_frames(estimate / 32768, rate), strict=True):
        energies, slopes, weights = [], [], []
        for frame in (c, e):
            energy = 10 * np.log10(
                np.maximum(filters @ (np.abs(np.fft.fft(frame, n_fft)[: n_fft // 2]) ** 2), 1e-10)
            )
            slope = energy[1:] - energy[:-1]
            peaks = np.empty(24)
            for i in range(24):
                n = i
                if slope[i] > 0:
                    while n < 24 and slope[n] > 0:
                        n += 1
                    peaks[i] = energy[n - 1]
                else:
                    while n >= 0 and slope[n] <= 0:
                        n -= 1
                    peaks[i] = energy[n + 1]
            w = (20 / (20 + energy.max() - energy[:24])) * (1 / (1 + peaks - energy[:24]))
            energies.append(energy), slopes.append(slope), weights.append(w)
        w = (weights[0] + weights[1]) / 2
        wss.append(np.dot(w, (slopes[0] - slopes[1]) ** 2) / w.sum())
    seg = []
    for c, e in zip(_loop_frames(clean, rate), _loop_frames(estimate, rate), strict=True):
        value = 10 * math.log10(np.sum(c * c) / (np.sum((c - e) ** 2) + quality.EPS) + quality.EPS)
        seg.append(min(max(value, -10), 35))
    return quality.trimmed_mean(np.array(llr)), quality.trimmed_mean(np.array(wss)), float(np.mean(seg))


@pytest.mark.parametrize("form", ["vectorised", "per_frame_loop"])
def test_bench_composite_parts_llr_wss_segsnr(benchmark, form):
    pairs = _pairs()

    def vectorised():
        return [
            (
                quality.trimmed_mean(quality.llr_frames(c, n, 16000)),
                quality.trimmed_mean(quality.wss_frames(c, n, 16000)),
                float(np.mean(quality.segsnr_frames(c, n, 16000))),
            )
            for c, n in pairs
        ]

    def loop():
        return [_loop_composite(c, n, 16000) for c, n in pairs]

    run = vectorised if form == "vectorised" else loop
    result = benchmark.pedantic(run, rounds=3 if form == "vectorised" else 1, iterations=1)
    np.testing.assert_allclose(
        np.array(result), np.array(loop() if form == "vectorised" else vectorised()), rtol=1e-9, atol=1e-9
    )
    benchmark.extra_info["seconds_per_utterance"] = benchmark.stats["mean"] / len(pairs)
