"""Reference rows for speech-enhancement tables: ``noisy_input`` (the unprocessed
mixture, the "Noisy" row of the CSM-VANet paper's Table II) and ``spectral_gating``
(a classical enhancer: noisereduce's spectral gating, which needs no training and
runs offline).

Both are model plugins with a parameterless network, so a spec scores them exactly
as it scores a trained model: as variants of one spec beside the trained network,
on the same test split, with the same metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from wavelens import (
    Contribution,
    Model,
    Params,
    Placement,
    StageContext,
    StageError,
    TrainSpec,
    hookimpl,
)

from .enhancement import Enhanced


class NoisyInputParams(Params):
    pass


class SpectralGatingParams(Params):
    """noisereduce's spectral gating. The defaults are the best PESQ of the grid in
    ``specs/spectral_gating_tuning.yaml``, chosen on mixtures no table is scored on
    (docs/csm-vanet.md); noisereduce's own defaults (non-stationary, full reduction)
    made speech worse than the unprocessed input there and on the real pairs."""

    stationary: bool = Field(
        True, description="estimate one noise spectrum for the whole file (else a running estimate)"
    )
    prop_decrease: float = Field(0.6, ge=0, le=1, description="how much of the gated noise to remove")
    time_constant_s: float = Field(
        2.0, gt=0, description="time constant of the running noise estimate (non-stationary)"
    )
    n_fft: int = Field(1024, ge=64, description="FFT size (1024 = 64 ms at 16 kHz)")


class _Passthrough(torch.nn.Module):
    """The network of a model with nothing to learn: no parameters, no state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Reference(Model):
    """Maps each noisy item of a paired split to a signal, item by item."""

    name = ""

    def __init__(self, params: Params):
        self.params = params

    def network(self) -> torch.nn.Module:
        return _Passthrough()

    def train(self, network: torch.nn.Module, ctx: StageContext, train: TrainSpec) -> None:
        raise StageError(f"{self.name} has nothing to train: leave 'train' out of the spec")

    def process(self, noisy: np.ndarray, rate: int) -> np.ndarray:
        raise NotImplementedError

    def predict(self, network: torch.nn.Module, batch: dict, ctx: StageContext) -> tuple[Any, Any]:
        if "noisy" not in batch or "clean" not in batch:
            raise StageError(f"{self.name} scores paired data (items with 'noisy' and 'clean'); "
                             "use voicebank_demand or noisy_mixtures")
        preds: dict[str, list] = {"audio": []}
        target: dict[str, list] = {"audio": []}
        lengths = batch["length"].tolist() if "length" in batch else [batch["noisy"].shape[-1]] * len(
            batch["noisy"])
        rates = batch.get("sample_rate")
        for i, length in enumerate(lengths):
            rate = int(rates[i]) if rates is not None else 16000
            noisy = batch["noisy"][i, 0, :length].float().numpy()
            preds["audio"].append(self.process(noisy, rate).astype(np.float32))
            target["audio"].append(batch["clean"][i, 0, :length].float().numpy())
        return preds, target

    def enhance(self, network: torch.nn.Module, audio: Any, sample_rate: int,
                placement: Placement) -> Enhanced:
        signal = np.asarray(audio, dtype=np.float32)
        return Enhanced(self.process(signal, sample_rate).astype(np.float32), sample_rate)


class NoisyInput(_Reference):
    name = "noisy_input"

    def process(self, noisy: np.ndarray, rate: int) -> np.ndarray:
        return noisy


class SpectralGating(_Reference):
    name = "spectral_gating"

    def process(self, noisy: np.ndarray, rate: int) -> np.ndarray:
        import noisereduce

        p = self.params
        if not np.any(noisy):
            return noisy
        out = noisereduce.reduce_noise(
            y=noisy, sr=rate, stationary=p.stationary, prop_decrease=p.prop_decrease,
            time_constant_s=p.time_constant_s, n_fft=p.n_fft, n_jobs=1,
        )
        out = np.asarray(out, dtype=np.float32)
        if len(out) != len(noisy):  # keep the input's length, as the metrics expect
            out = np.pad(out, (0, max(0, len(noisy) - len(out))))[: len(noisy)]
        return out


@hookimpl
def wavelens_models():
    return [
        Contribution("noisy_input", NoisyInputParams,
                     "The unprocessed noisy input, as an enhancement table's reference row",
                     NoisyInput),
        Contribution("spectral_gating", SpectralGatingParams,
                     "Classical spectral-gating enhancement (noisereduce), a training-free baseline",
                     SpectralGating),
    ]
