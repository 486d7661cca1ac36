"""Averaged feature maps of any ``torch.nn.Module`` (Beguš & Zhou, Eq. 1).

For each selected layer, the output after its activation is reduced over channels
(and any other non-time axes) **inside the forward hook, on the model's device**,
so a probe keeps ``(batch, time)`` per layer instead of ``(batch, channels,
time)``::

    with FeatureMapRecorder(model, ["q_network.act*"]) as recorder:
        logits = model(audio)
    series = recorder.series  # {"q_network.act1": (B, 4096), ...}

Layers are chosen by exact name, by a glob over ``named_modules()`` (``conv*``,
``encoder.*.act``), or by type (``type:Conv1d``); the choice is resolved once into
explicit names (``wavelens.resolve_layers``; the hooks are the core's
``wavelens.LayerHooks``). Where a model applies its activation functionally (``F.relu`` in
``forward``), hook the preceding module and declare the activation
(``post_activation: {"conv*": "leaky_relu(0.2)"}``). Hooks are removed on exit,
also after an exception.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wavelens import LayerHooks, StageError, resolve_layers

__all__ = ["REDUCERS", "parse_activation", "reduce_feature_map", "FeatureMapRecorder"]


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.mean(dim=dims)


def _l2(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.square().sum(dim=dims).sqrt()


def _max(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.amax(dim=dims)


REDUCERS: dict[str, Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]] = {
    "mean": _mean,  # Eq. 1: (1/|C|) Σ_i C_i
    "l2": _l2,
    "max": _max,
}


_ACTIVATION = re.compile(r"^\s*([a-z_]+)\s*(?:\(\s*([-+0-9.eE]+)?\s*\))?\s*$")


def parse_activation(text: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``relu``, ``leaky_relu(0.2)``, ``tanh``, ``sigmoid``, ``gelu``, ``elu(1.0)``,
    ``none``: the function applied to a hooked output before reducing it."""
    match = _ACTIVATION.match(text)
    if not match:
        raise StageError(f"cannot read the activation {text!r}; expected e.g. relu or leaky_relu(0.2)")
    name, argument = match.group(1), match.group(2)
    value = float(argument) if argument is not None else None
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "none": lambda x: x,
        "relu": F.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, 0.01 if value is None else value),
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": F.gelu,
        "elu": lambda x: F.elu(x, 1.0 if value is None else value),
    }
    if name not in table:
        raise StageError(f"unknown activation {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def reduce_feature_map(output: torch.Tensor, reducer: str = "mean", time_axis: int = 2) -> torch.Tensor:
    """Reduce a layer output ``(B, C, T)`` or ``(B, C, T, F)`` (time at ``time_axis``)
    to ``(B, T)`` over every other axis."""
    if output.dim() < 3:
        raise StageError(f"a feature map needs (batch, channels, time, ...); got shape "
                            f"{tuple(output.shape)}")
    axis = time_axis % output.dim()
    if axis == 0:
        raise StageError("time_axis cannot be the batch axis (0)")
    dims = tuple(d for d in range(1, output.dim()) if d != axis)
    return REDUCERS[reducer](output, dims)


class FeatureMapRecorder:
    """Forward hooks that keep each selected layer's reduced series of the last call(s).

    ``series[layer]`` is a list of CPU tensors ``(B, T)``, one per forward pass made
    inside the ``with`` block (``collect()`` joins them).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reducer: str = "mean",
                 time_axis: int = 2,
                 post_activation: Mapping[str, str] | None = None):
        if reducer not in REDUCERS:
            raise StageError(f"unknown reducer {reducer!r}; known: {', '.join(REDUCERS)}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.reducer = reducer
        self.time_axis = time_axis
        self.activations: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for pattern, activation in (post_activation or {}).items():
            matched = [n for n in self.layers if n == pattern or fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                raise StageError(f"post_activation names {pattern!r}, which is not among the "
                                    f"probed layers: {', '.join(self.layers)}")
            for name in matched:
                self.activations[name] = parse_activation(activation)
        self.series: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        # the reduction happens inside the hook, before any in-place op can touch the
        # output, so the hooks need not copy it
        self._hooks = LayerHooks(model, self.layers, self._record, clone=False)

    def _record(self, name: str, output: torch.Tensor) -> None:
        activation = self.activations.get(name)
        if activation is not None:
            output = activation(output)  # a new tensor: the model's own output is untouched
        reduced = reduce_feature_map(output.float(), self.reducer, self.time_axis)
        self.series[name].append(reduced.cpu())

    def __enter__(self) -> FeatureMapRecorder:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    def collect(self) -> dict[str, torch.Tensor]:
        """Each layer's series over every recorded batch, ``(N, T_layer)``."""
        return {name: torch.cat(parts) for name, parts in self.series.items() if parts}
