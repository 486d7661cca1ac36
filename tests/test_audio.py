"""wavelens's audio functions: reading and writing audio with errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from wavelens import AudioError, collate_items, peak_normalize, read_audio, resample, write_audio


def test_read_gives_float_samples_and_rate(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(100, 0.5), 16000, subtype="PCM_16")
    samples, rate = read_audio(path)
    assert rate == 16000 and samples.dtype == np.float32
    np.testing.assert_allclose(samples, 0.5, atol=1e-4)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"RIFF not really"), "unreadable audio"),
        (lambda p: sf.write(p, np.zeros((0,)), 16000), "no samples"),
        (lambda p: sf.write(p, np.zeros((50, 2)), 16000), "2 channels, expected mono"),
        (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2]), 16000, subtype="FLOAT"), "NaN"),
        (lambda p: sf.write(p, np.zeros(50), 8000), "sample rate 8000 Hz, expected 16000 Hz"),
    ],
)
def test_unusable_files_raise_an_error_naming_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=reason) as caught:
        read_audio(path, sample_rate=16000)
    assert caught.value.path == path and str(path) in str(caught.value)


def test_a_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "nope.wav")


def test_stereo_can_be_mixed_down(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([np.full(10, 0.2), np.full(10, 0.4)], axis=1), 16000, subtype="FLOAT")
    samples, _ = read_audio(path, channels="mix")
    np.testing.assert_allclose(samples, 0.3, atol=1e-6)


def test_resampling_48k_to_16k_keeps_a_tone(tmp_path):
    t = np.arange(48000) / 48000
    path = tmp_path / "tone.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 48000, subtype="FLOAT")
    samples, rate = read_audio(path, resample_to=16000)
    assert rate == 16000 and len(samples) == 16000
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over one second
    assert len(resample(samples, 16000, 16000)) == 16000


def test_write_is_sphere_for_nist_and_refuses_clipping(tmp_path):
    path = tmp_path / "x.WAV"
    write_audio(path, np.linspace(-0.5, 0.5, 200), 16000, format="NIST")
    assert path.read_bytes().startswith(b"NIST_1A")
    assert sf.info(path).frames == 200
    with pytest.raises(ValueError, match="scale them into"):
        write_audio(tmp_path / "loud.wav", np.array([0.5, 1.5]), 16000)
    assert not (tmp_path / "loud.wav").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_peak_normalize_scales_to_one_and_leaves_silence_alone():
    np.testing.assert_allclose(peak_normalize(np.array([0.1, -0.25])), [0.4, -1.0])
    np.testing.assert_array_equal(peak_normalize(np.zeros(3)), 0)


def test_collate_pads_utterances_and_keeps_strings_as_lists():
    items = [{"audio": torch.ones(1, 3), "name": "a", "length": 3, "snr": 1.5},
             {"audio": torch.ones(1, 5), "name": "b", "length": 5, "snr": None}]
    batch = collate_items(items)
    assert batch["audio"].shape == (2, 1, 5)
    assert batch["audio"][0, 0].tolist() == [1, 1, 1, 0, 0]
    assert batch["name"] == ["a", "b"]
    assert batch["length"].tolist() == [3, 5]
    assert batch["snr"] == [1.5, None]
