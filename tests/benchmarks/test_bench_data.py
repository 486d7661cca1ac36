"""Data loading costs: what a training or evaluation loop pays per item.

Run with ``make bench``. The VoiceBank benchmarks read the real pairs in
``../shared/data/voicebank_demand`` and skip when they are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wavelens import read_audio
from wavelens.plugins.noisy_speech.vad import frame_energy_db, vad_labels
from wavelens.plugins.noisy_speech.voicebank import PairParams, PairSplit

from conftest import SHARED_DATA

VOICEBANK = SHARED_DATA / "voicebank_demand"
needs_voicebank = pytest.mark.skipif(not VOICEBANK.is_dir(), reason=f"{VOICEBANK} is not present")


def _rows() -> list[dict]:
    rows = []
    for clean in sorted((VOICEBANK / "clean").glob("*.wav")):
        samples, _ = sf.read(clean)
        rows.append({"name": clean.stem, "clean": str(clean), "noisy": str(VOICEBANK / "noisy" / clean.name),
                     "samples": len(samples), "max_db": float(frame_energy_db(samples).max())})
    return rows


def test_bench_vad_labels_of_a_5_second_utterance(benchmark):
    signal = np.random.default_rng(0).standard_normal(5 * 16000)
    labels = benchmark(vad_labels, signal)
    assert len(labels) == 801


@needs_voicebank
def test_bench_read_and_resample_a_voicebank_file_to_8k(benchmark):
    path = next((VOICEBANK / "clean").glob("*.wav"))
    samples, rate = benchmark(read_audio, path, resample_to=8000)
    assert rate == 8000 and len(samples) > 8000


@needs_voicebank
def test_bench_voicebank_training_segment(benchmark):
    split = PairSplit(_rows(), PairParams(), segment=32000, seed=0)
    item = benchmark(split.__getitem__, 3)
    assert item["clean"].shape == (1, 32000)


@needs_voicebank
def test_bench_voicebank_test_utterance(benchmark):
    split = PairSplit(_rows(), PairParams(), segment=None, seed=0)
    item = benchmark(split.__getitem__, 3)
    assert item["vad"].shape == (item["length"] // 100 + 1,)
