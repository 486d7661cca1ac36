"""What a speech-enhancement model offers ``wavelens enhance``: a protocol, owned by
this plugin family and not by the core's ``Model``.

CSM-VANet and the baselines (``noisy_input``, ``spectral_gating``) implement it; a
third-party enhancer that has ``enhance`` works with the command too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from wavelens import Placement


@dataclass
class Enhanced:
    """What :meth:`Enhancer.enhance` returns for one signal.

    Attributes:
        audio: the enhanced signal, 1-D, as long as the input and at its rate.
        sample_rate: the input's rate.
        speech_probability: per-frame speech probabilities, if the model has a VAD.
        frame_seconds: the hop between those frames (frame ``t`` is centred on
            ``t * frame_seconds``).
    """

    audio: Any
    sample_rate: int
    speech_probability: Any = None
    frame_seconds: float | None = None


@runtime_checkable
class Enhancer(Protocol):
    """A model that enhances one signal at a time."""

    def enhance(self, network: torch.nn.Module, audio: Any, sample_rate: int,
                placement: Placement) -> Enhanced:
        """Enhance one 1-D float signal (NumPy) at any rate and length: the model
        resamples and chunks as it needs, and returns audio of the input's length and
        rate."""
