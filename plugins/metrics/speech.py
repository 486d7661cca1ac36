"""Metric plugins for enhanced speech and VAD, with one interface modelled on
torchmetrics (``update`` per batch, ``compute`` at the end, ``reset``; states that
merge across processes; ``higher_is_better``).

Speech metrics take ``update(estimates, references)``: sequences of 1-D signals (or a
2-D tensor), at the metric's ``sample_rate``. Each pair's value is kept, and
``compute`` returns the mean (a dict of means for ``composite``). The functional
forms are in :mod:`wavelens.plugins.metrics.quality`.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from wavelens import Contribution, Metric, MetricColumn, Params, StageError, hookimpl, resample

from . import quality

if TYPE_CHECKING:  # torch only where a model's tensors come in: scoring files needs none
    import torch

# How the values are presented: the published tables' names and order (PESQ, CSIG,
# CBAK, COVL, SSNR, STOI, then SI-SDR), two decimals; LLR and WSS, the composite
# measures' ingredients, with three, in per-file tables but not in comparisons.
PESQ = MetricColumn("pesq", "PESQ", rank=10)
COMPOSITE = (PESQ, MetricColumn("csig", "CSIG", rank=20), MetricColumn("cbak", "CBAK", rank=30),
             MetricColumn("covl", "COVL", rank=40), MetricColumn("ssnr", "SSNR", rank=50),
             MetricColumn("llr", "LLR", digits=3, rank=900, compare=False, higher_is_better=False),
             MetricColumn("wss", "WSS", digits=3, rank=910, compare=False, higher_is_better=False))


class SpeechParams(Params):
    sample_rate: int = Field(16000, ge=1000, description="the rate of the signals given to update")


class PesqParams(SpeechParams):
    mode: Literal["wb", "nb"] = Field("wb", description="wideband (P.862.2) or narrowband (P.862.1) MOS-LQO")
    other_rates: Literal["resample", "refuse"] = Field(
        "resample",
        description="PESQ is defined at 8 and 16 kHz: resample other rates (with a warning) or refuse",
    )


class StoiParams(SpeechParams):
    extended: bool = Field(False, description="ESTOI (Jensen & Taal 2016) instead of STOI")


class CompositeParams(PesqParams):
    convention: quality.Convention = Field(
        "voicebank", description="voicebank: the published VoiceBank+DEMAND tables; loizou: composite.m"
    )


class VadParams(Params):
    threshold: float = Field(0.5, ge=0, le=1, description="probability at which a frame counts as speech")


def _signals(batch: Any) -> list[np.ndarray]:
    if isinstance(batch, Mapping):  # a model's several outputs: the signals are "audio"
        if "audio" not in batch:
            raise StageError(f"speech metrics score the 'audio' entry; the model gave {', '.join(batch)}")
        batch = batch["audio"]
    torch = sys.modules.get("torch")  # a tensor can only come from a loaded torch
    if torch is not None and isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().double()
        if batch.ndim == 1:
            batch = batch[None]
        return [row.reshape(-1).numpy() for row in batch]
    if isinstance(batch, np.ndarray) and batch.ndim == 1:
        return [batch.astype(np.float64)]
    return [np.asarray(item, dtype=np.float64).reshape(-1) for item in batch]


class PairMetric(Metric):
    """A mean over (estimate, reference) pairs of a per-pair score.

    ``_clean`` keeps what a measure computed of the last reference alone (its
    analysis), so that further estimates of the same reference (systems compared
    file by file) reuse it; it is checked against the reference's samples, so a new
    reference is always analysed afresh. It is a cache, not a state: ``reset`` keeps it."""

    higher_is_better = True
    keys: tuple[str, ...] = ()

    def __init__(self, params: SpeechParams):
        super().__init__()
        self.params = params
        self.add_state("values", [], reduce="cat")
        self._clean: dict[str, Any] = {}

    def score(self, estimate: np.ndarray, reference: np.ndarray) -> float | dict[str, float]:
        raise NotImplementedError

    def silent(self, estimate: np.ndarray, reference: np.ndarray) -> float | dict[str, float]:
        """The value of an estimate that is digital silence (docs/metrics.md, "Silent
        estimates"): the measure's own value where its definition gives one (this
        default); measures that have none override it with their worst value."""
        return self.score(estimate, reference)

    def update(self, preds: Sequence | torch.Tensor, target: Sequence | torch.Tensor) -> None:
        estimates, references = _signals(preds), _signals(target)
        if len(estimates) != len(references):
            raise StageError(
                f"{type(self).__name__}: {len(estimates)} estimates for {len(references)} references"
            )
        for estimate, reference in zip(estimates, references, strict=True):
            # different lengths: cut, and eps added, as the VoiceBank convention does
            reference, estimate = quality.equal_lengths(reference, estimate)
            if quality.is_silent(estimate):  # a system that output nothing: never left out of a mean
                self.values.append(self.silent(estimate, reference))
            else:
                self.values.append(self.score(estimate, reference))

    def compute(self) -> float | dict[str, float]:
        if not self.values:
            raise StageError(f"{type(self).__name__}: no pairs were scored")
        if isinstance(self.values[0], dict):
            return {key: float(np.mean([v[key] for v in self.values])) for key in self.values[0]}
        return float(np.mean(self.values))


def _pesq_rate(params: PesqParams, signals: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    rate = params.sample_rate
    if rate in (8000, 16000):
        return rate, signals
    if params.other_rates == "refuse":
        raise StageError(f"PESQ is defined at 8 and 16 kHz, not {rate} Hz (other_rates: refuse)")
    target = 8000 if params.mode == "nb" and rate < 16000 else 16000
    warnings.warn(f"PESQ: resampling {rate} Hz to {target} Hz", stacklevel=3)
    return target, [resample(s, rate, target).astype(np.float64) for s in signals]


PESQ_NB = MetricColumn("pesq_nb", "PESQ (NB)", rank=10)


class Pesq(PairMetric):
    """Wideband PESQ under the name ``pesq`` (the published tables'); narrowband PESQ
    under ``pesq_nb``, so that the two are never averaged or compared as one."""

    def columns(self):
        return [PESQ_NB if self.params.mode == "nb" else PESQ]

    def score(self, estimate, reference):
        rate, (estimate, reference) = _pesq_rate(self.params, [estimate, reference])
        value = quality.pesq_score(reference, estimate, rate, self.params.mode)
        return {"pesq_nb": value} if self.params.mode == "nb" else value

    def silent(self, estimate, reference):
        # PESQ has no value for silence (its level alignment divides by zero): the scale's bottom
        return {"pesq_nb": quality.WORST["pesq"]} if self.params.mode == "nb" else quality.WORST["pesq"]


class Stoi(PairMetric):
    def columns(self):
        return [MetricColumn("stoi", "ESTOI" if self.params.extended else "STOI", rank=60)]

    def score(self, estimate, reference):
        return quality.stoi_score(reference, estimate, self.params.sample_rate, extended=self.params.extended,
                                  cache=self._clean)

    def silent(self, estimate, reference):
        # silence correlates with nothing: 0, also where the length rule's eps made it a constant
        return 0.0


class Composite(PairMetric):
    """CSIG, CBAK, COVL with the PESQ, segSNR, LLR and WSS they are built from."""

    def columns(self):
        # Loizou's convention reports narrowband PESQ: under its own name, as pesq does
        return (PESQ_NB, *COMPOSITE[1:]) if self.params.convention == "loizou" else COMPOSITE

    def score(self, estimate, reference):
        rate, (estimate, reference) = _pesq_rate(self.params, [estimate, reference])
        values = quality.composite(reference, estimate, rate, self.params.convention, cache=self._clean)
        if self.params.convention == "loizou":
            values["pesq_nb"] = values.pop("pesq")
        return values

    def silent(self, estimate, reference):
        # no PESQ and no LPC model of silence: the bottom of each scale; LLR and WSS, the
        # ingredients, have none (missing, and counted as such)
        values = {key: quality.WORST[key] for key in ("csig", "cbak", "covl", "pesq", "ssnr")}
        values.update(llr=math.nan, wss=math.nan)
        if self.params.convention == "loizou":
            values["pesq_nb"] = values.pop("pesq")
        return values


class SiSdr(PairMetric):
    def columns(self):
        return [MetricColumn("si_sdr", "SI-SDR", rank=80)]

    def score(self, estimate, reference):
        return quality.si_sdr(reference, estimate)


class Vad(Metric):
    """Frame-level VAD: accuracy, precision, recall and F1 at ``threshold``, and the
    ROC AUC, over all frames. ``update(probabilities, labels)``; frames labelled −1
    (padding) are ignored."""

    higher_is_better = True

    def columns(self):
        return [MetricColumn(f"vad_{key}", f"VAD {label}", digits=3, rank=100 + index)
                for index, (key, label) in enumerate((("accuracy", "accuracy"), ("precision", "precision"),
                                                     ("recall", "recall"), ("f1", "F1"), ("roc_auc", "AUC")))]

    def __init__(self, params: VadParams | None = None):
        super().__init__()
        self.params = params or VadParams()
        self.add_state("probabilities", [], reduce="cat")
        self.add_state("labels", [], reduce="cat")

    def update(self, preds: Any, target: Any) -> None:
        import torch

        if isinstance(preds, Mapping):  # a model's several outputs: the VAD is "vad"
            if "vad" not in preds or not isinstance(target, Mapping) or "vad" not in target:
                raise StageError("vad scores the 'vad' entry of the predictions and targets")
            preds, target = preds["vad"], target["vad"]
        p = torch.as_tensor(_flat(preds)).detach().cpu().double().reshape(-1)
        y = torch.as_tensor(_flat(target)).detach().cpu().reshape(-1)
        if torch.isnan(p).all():
            raise StageError("vad: the model gives no speech probabilities (no VAD)")
        if y.is_floating_point() and torch.isnan(y).all():
            raise StageError("vad: the data gives no frame labels ('vad' in its items)")
        if p.shape != y.shape:
            raise StageError(f"vad: {p.numel()} probabilities for {y.numel()} labels")
        keep = y >= 0
        self.probabilities.append(p[keep].numpy())
        self.labels.append(y[keep].numpy().astype(bool))

    def compute(self) -> dict[str, float]:
        if not self.labels:
            raise StageError("vad: no frames were scored")
        p, y = np.concatenate(self.probabilities), np.concatenate(self.labels)
        predicted = p >= self.params.threshold
        tp, fp = np.sum(predicted & y), np.sum(predicted & ~y)
        fn = np.sum(~predicted & y)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "accuracy": float(np.mean(predicted == y)),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "roc_auc": roc_auc(p, y),
        }


def _flat(values: Any) -> Any:
    """Sequences of per-item arrays (of different lengths) joined end to end."""
    if isinstance(values, (list, tuple)) and values and not np.isscalar(values[0]):
        import torch

        return np.concatenate([np.asarray(torch.as_tensor(v).cpu()).reshape(-1) for v in values])
    return values


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The area under the ROC curve: the probability that a random speech frame
    scores higher than a random non-speech frame (ties count half)."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@hookimpl
def wavelens_metrics():
    return [
        Contribution("pesq", PesqParams, "PESQ (pesq package): wideband P.862.2 or narrowband MOS-LQO", Pesq),
        Contribution("stoi", StoiParams, "STOI (pystoi's computation) or ESTOI (pystoi)", Stoi),
        Contribution(
            "composite",
            CompositeParams,
            "CSIG, CBAK, COVL (Hu & Loizou 2008) with PESQ, segSNR, LLR, WSS",
            Composite,
        ),
        Contribution("si_sdr", SpeechParams, "scale-invariant SDR (dB)", SiSdr),
        Contribution("vad", VadParams, "frame-level VAD accuracy, precision, recall, F1, ROC AUC", Vad),
    ]
