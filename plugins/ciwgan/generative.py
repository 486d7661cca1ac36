"""What a generative model offers the ciwGAN family's probe and command: a protocol,
owned by this plugin family and not by the core's ``Model``.

``lexical_learning`` and ``wavelens generate`` work with any model that has these
members, a third-party GAN included: they check ``isinstance(model, Generative)``.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch


@runtime_checkable
class Generative(Protocol):
    """A model whose network generates audio from a code and latent noise."""

    code: Literal["categorical", "binary"]  # one-hot codes (ciwGAN) or bits (fiwGAN)

    def code_names(self) -> list[str]:
        """The codes to set one at a time: indices, or bit strings."""

    def code_vector(self, code: str, value: float) -> torch.Tensor:
        """The code part of the latent for ``code`` at ``value``."""

    def generate(self, network: torch.nn.Module, code: str, value: float, n: int,
                 seed: int) -> tuple[torch.Tensor, int]:
        """``n`` outputs ``(n, samples)`` for ``code`` at ``value`` and their sample
        rate; the latent noise is drawn from ``seed``, so the same seed gives the same
        noise for every code."""
