"""Layer series at the input's time scale: upsampling and interval extraction.

A layer with ``T`` samples for an input of ``N`` samples covers ``N / T`` input
samples per layer sample; layer sample ``i`` is centred at input sample
``(i + 0.5) · N / T``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["upsample", "layer_centres", "interval_indices", "time_normalised"]


def upsample(series: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of ``(N, T)`` series to ``(N, length)``; the first and
    last values are kept (as in the paper's plots, which upsample each layer to the
    input length)."""
    if series.shape[-1] == length:
        return series
    return F.interpolate(series[:, None].float(), size=length, mode="linear", align_corners=True)[:, 0]


def layer_centres(layer_length: int, input_length: int) -> np.ndarray:
    """The input sample each layer sample is centred on."""
    return (np.arange(layer_length) + 0.5) * input_length / layer_length


def interval_indices(start: int, end: int, layer_length: int, input_length: int) -> np.ndarray:
    """Layer samples whose centres fall in the input interval ``[start, end)``."""
    centres = layer_centres(layer_length, input_length)
    return np.flatnonzero((centres >= start) & (centres < end))


def time_normalised(values: np.ndarray, points: int) -> np.ndarray:
    """Values at ``points`` evenly spaced positions of normalised time [0, 1] (linear
    interpolation between the layer samples, which sit evenly over the interval)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return np.full(points, values[0])
    return np.interp(np.linspace(0, 1, points), np.linspace(0, 1, len(values)), values)
