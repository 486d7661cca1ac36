"""``tones``: a synthetic four-class dataset of short tone patterns in noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from wavelens import Contribution, Dataset, Params, StageContext, atomic_write, hookimpl

CLASSES = ("rising", "falling", "steady", "warble")


class TonesParams(Params):
    n_train: int = Field(512, ge=1, description="training examples (classes balanced)")
    n_test: int = Field(128, ge=1, description="test examples (classes balanced)")
    sample_rate: int = Field(16000, ge=1000, description="samples per second")
    length: int = Field(4096, ge=256, description="samples per example")
    snr_db: float = Field(10.0, description="signal-to-noise ratio of the added white noise")


def synthesize(label: int, params: TonesParams, rng: np.random.Generator) -> np.ndarray:
    """One example of class ``CLASSES[label]``: a windowed tone pattern plus noise,
    peak-normalised to 1."""
    rate = params.sample_rate
    duration = int(rng.uniform(0.4, 0.8) * params.length)
    start = int(rng.integers(0, params.length - duration + 1))
    t = np.arange(duration) / rate
    f0 = rng.uniform(300.0, 1500.0)
    name = CLASSES[label]
    if name == "rising":
        freq = np.linspace(f0, 2 * f0, duration)
    elif name == "falling":
        freq = np.linspace(2 * f0, f0, duration)
    elif name == "steady":
        freq = np.full(duration, f0)
    else:
        freq = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(15, 30) * t))
    phase = 2 * np.pi * np.cumsum(freq) / rate
    tone = np.sin(phase) * np.hanning(duration)
    signal = np.zeros(params.length)
    signal[start : start + duration] = tone
    noise_power = np.mean(tone**2) / 10 ** (params.snr_db / 10)
    signal += rng.normal(0.0, np.sqrt(noise_power), params.length)
    return (signal / np.max(np.abs(signal))).astype(np.float32)


class _Split(torch.utils.data.Dataset):
    def __init__(self, audio: np.ndarray, labels: np.ndarray):
        self.audio = torch.from_numpy(audio)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label = int(self.labels[index])
        return {"audio": self.audio[index].unsqueeze(0), "label": label, "word": CLASSES[label]}


class Tones(Dataset):
    def __init__(self, params: TonesParams):
        self.params = params

    def prepare(self, ctx: StageContext) -> None:
        rng = np.random.default_rng(ctx.seed)
        for split, count in (("train", self.params.n_train), ("test", self.params.n_test)):
            labels = np.arange(count) % len(CLASSES)
            rng.shuffle(labels)
            audio = np.stack([synthesize(int(label), self.params, rng) for label in labels])
            with atomic_write(ctx.workdir / f"{split}.npz", "wb") as handle:
                np.savez(handle, audio=audio, labels=labels.astype(np.int64))
        ctx.write_report(
            f"{self.params.n_train} training and {self.params.n_test} test examples of "
            f"{len(CLASSES)} tone patterns ({', '.join(CLASSES)}), {self.params.length} "
            f"samples at {self.params.sample_rate} Hz, white noise at {self.params.snr_db} dB SNR.\n"
        )

    def load(self, workdir: Path) -> dict[str, torch.utils.data.Dataset]:
        splits = {}
        for split in ("train", "test"):
            with np.load(workdir / f"{split}.npz") as data:
                splits[split] = _Split(data["audio"], data["labels"])
        return splits


@hookimpl
def wavelens_datasets():
    return [Contribution("tones", TonesParams, "Synthetic tone patterns in noise (4 classes)", Tones)]
