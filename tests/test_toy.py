"""The embedded demo: tones dataset, tiny_cnn model, accuracy; and the demo spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wavelens import RunInterrupted
from wavelens.host import Run, load_spec
from wavelens.plugins.toy.tones import CLASSES, TonesParams, synthesize

from conftest import REPO

DEMO = REPO / "specs" / "demo.yaml"
SMALL = ["dataset.params.n_train=16", "dataset.params.n_test=8", "model.params.channels=[4, 4]",
         "train.batch_size=4", "train.checkpoint_every=3", "device=cpu"]


def dominant_frequency_slope(audio: np.ndarray, rate: int) -> float:
    """Slope (Hz per frame) of the peak frequency over the frames that carry the tone."""
    frames = audio[: len(audio) // 256 * 256].reshape(-1, 256)
    energy = (frames**2).sum(axis=1)
    active = energy > 0.25 * energy.max()
    peaks = np.abs(np.fft.rfft(frames * np.hanning(256), axis=1)).argmax(axis=1) * rate / 256
    x = np.flatnonzero(active)
    return float(np.polyfit(x, peaks[active], 1)[0])


def test_tones_are_peak_normalised_and_follow_their_class_pattern():
    params = TonesParams(snr_db=40.0)
    rng = np.random.default_rng(0)
    slopes = {}
    for label, name in enumerate(CLASSES):
        audio = synthesize(label, params, rng)
        assert audio.shape == (params.length,) and audio.dtype == np.float32
        assert np.max(np.abs(audio)) == pytest.approx(1.0)
        slopes[name] = dominant_frequency_slope(audio, params.sample_rate)
    assert slopes["rising"] > 20 and slopes["falling"] < -20
    assert abs(slopes["steady"]) < 10


def test_demo_spec_runs_end_to_end_on_the_cpu():
    directory = Run(load_spec(DEMO, overrides=[*SMALL, "train.steps=6"])).execute()
    metrics = json.loads((directory / "stages/metrics/metrics.json").read_text())
    accuracy = metrics["results"][0]["value"]
    assert 0.0 <= accuracy <= 1.0
    assert (directory / "stages/model/loss.png").stat().st_size > 1000
    html = (directory / "report.html").read_text()
    assert "data:image/png;base64," in html  # the loss curve is embedded


def test_interrupted_training_resumes_bit_for_bit(monkeypatch):
    from wavelens import CheckpointManager

    uninterrupted = Run(load_spec(DEMO, overrides=[*SMALL, "train.steps=8"]), fresh=True).execute()

    calls = {"n": 0}
    real_save = CheckpointManager.save

    def save_then_stop(self, step, state):
        real_save(self, step, state)
        calls["n"] += 1
        if step == 6 and calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointManager, "save", save_then_stop)
    spec = load_spec(DEMO, overrides=[*SMALL, "train.steps=8"])
    run = Run(spec, fresh=True)
    with pytest.raises(RunInterrupted):
        run.execute()
    monkeypatch.setattr(CheckpointManager, "save", real_save)
    resumed = Run(spec).execute()  # picks the interrupted directory up again
    assert resumed == run.directory != uninterrupted

    a = torch.load(uninterrupted / "stages/model/model.pt")
    b = torch.load(resumed / "stages/model/model.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_demo_spec_learns_the_task():
    directory = Run(load_spec(DEMO, overrides=["device=cpu"]), fresh=True).execute()
    metrics = json.loads((directory / "stages/metrics/metrics.json").read_text())
    assert metrics["results"][0]["value"] > 0.9


@pytest.mark.cuda
def test_demo_spec_runs_on_cuda_in_bf16():
    spec = load_spec(DEMO, overrides=[*SMALL[:-1], "train.steps=6", "device=cuda"])
    run = Run(spec, fresh=True)
    assert run.placement.precision == "bf16"
    directory = run.execute()
    record = json.loads((directory / "run.json").read_text())
    assert record["device"]["device"].startswith("cuda")
