"""Averaged feature maps of any ``torch.nn.Module`` (Beguš & Zhou, Eq. 1).

For each selected layer, the output after its activation is reduced over channels
(and frequency, for 2-D layers, unless their (time, frequency) maps are kept)
**inside the forward hook, on the model's device**, so a probe keeps ``(batch,
time)`` per layer instead of ``(batch, channels, time)``::

    with FeatureMapRecorder(model, ["q_network.act*"]) as recorder:
        logits = model(audio)
    series = recorder.collect()  # {"q_network.act1": (B, 4096), ...}

Layers are chosen by exact name, by a glob over ``named_modules()`` (``conv*``,
``encoder.*.act``), or by type (``type:Conv1d``); the choice is resolved once into
explicit names (``wavelens.resolve_layers``; the hooks are the core's
``wavelens.LayerHooks``). Where a model applies its activation functionally (``F.relu`` in
``forward``), hook the preceding module and declare the activation
(``post_activation: {"conv*": "leaky_relu(0.2)"}``, keyed by the same selectors).

Each layer's axes are named by a layout: ``B`` (batch), ``C`` (channels), ``T``
(time) and, for 2-D layers, ``F`` (frequency): ``BCT`` for a Conv1d, ``BTC`` for a
transformer layer, ``BCTF`` for a Conv2d over (time, frequency). Without a declared
layout, ``time_axis`` gives it: time at axis 2 means ``BCT`` or ``BCTF``. A layer
whose output does not fit its layout is an error naming the layer and its shape.

Every selected layer must run exactly once per forward pass: a layer that never runs
(a ``ModuleList`` container) or runs twice (a module applied at two places) is an
error naming it, since its rows would be missing or mixed. Hooks are removed on exit,
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

__all__ = ["REDUCERS", "parse_activation", "parse_layout", "reduce_feature_map", "FeatureMapRecorder",
           "select", "by_layer"]


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


LAYOUT = re.compile(r"^(?=[^B]*B[^B]*$)(?=[^C]*C[^C]*$)(?=[^T]*T[^T]*$)(?=[^F]*F?[^F]*$)[BCTF]{3,4}$")


def parse_layout(text: str) -> str:
    """A layout string: the letters B, C and T once each, and F at most once (``BCT``,
    ``BTC``, ``BCTF``, ``TBC``)."""
    if not LAYOUT.match(text):
        raise ValueError(f"layout {text!r} must name each axis once: B (batch), C (channels), T (time), "
                         "and F (frequency) for 2-D layers, e.g. BCT, BTC or BCTF")
    return text


def layout_for(shape: Sequence[int], time_axis: int, layer: str) -> str:
    """The layout ``time_axis`` implies for an output of ``shape``: batch first,
    channels second, time where it says, frequency on the remaining axis."""
    dims = len(shape)
    if dims < 3:
        raise StageError(f"layer {layer} outputs shape {tuple(shape)}: a feature map needs (batch, "
                         "channels, time, ...); choose a layer before the network pools over time")
    if dims > 4:
        raise StageError(f"layer {layer} outputs {dims} axes {tuple(shape)}; feature maps take 3 "
                         "(B, C, T) or 4 (B, C, T, F): declare its layout")
    if not 0 < time_axis < dims:
        raise StageError(f"time_axis {time_axis} does not fit layer {layer}, whose output {tuple(shape)} "
                         f"has axes 0 (batch) to {dims - 1}; give time_axis 1 to {dims - 1}, or a layout")
    if time_axis == 1:
        if dims == 4:
            raise StageError(f"layer {layer} outputs {tuple(shape)}: with time at axis 1 of four, say "
                             "where channels and frequency are with a layout (e.g. BTCF)")
        return "BTC"
    letters = ["B", "C", "F", "F"][:dims]
    letters[time_axis] = "T"
    return "".join(letters)


def reduce_feature_map(output: torch.Tensor, reducer: str = "mean", time_axis: int = 2,
                       layout: str | None = None, keep_frequency: bool = False,
                       layer: str = "the layer") -> torch.Tensor:
    """Reduce a layer output to ``(B, T)`` over channels (and frequency), or to
    ``(B, T, F)`` over channels only with ``keep_frequency`` (a 2-D layer's map).
    ``layout`` names the axes (default: what ``time_axis`` implies)."""
    layout = layout or layout_for(output.shape, time_axis, layer)
    if len(layout) != output.dim():
        raise StageError(f"layer {layer} outputs {output.dim()} axes {tuple(output.shape)}, but its layout "
                         f"{layout} names {len(layout)}")
    order = [layout.index(axis) for axis in "BTCF" if axis in layout]
    ordered = output.permute(order)  # (B, T, C) or (B, T, C, F)
    if keep_frequency and "F" in layout:
        return REDUCERS[reducer](ordered, (2,))
    return REDUCERS[reducer](ordered, tuple(range(2, ordered.dim())))


def select(selector: str, names: Sequence[str], modules: Mapping[str, nn.Module]) -> list[str]:
    """The names among ``names`` a selector picks: the name itself, a glob, or
    ``type:ClassName``."""
    if selector.startswith("type:"):
        return [n for n in names if type(modules[n]).__name__ == selector[len("type:"):]]
    return [n for n in names if n == selector or fnmatch.fnmatchcase(n, selector)]


def by_layer(options: Mapping[str, str], layers: Sequence[str], modules: Mapping[str, nn.Module],
             param: str) -> dict[str, str]:
    """Each probed layer's value of a per-layer option keyed by selectors
    (``post_activation``, ``layout``); StageError naming a key that picks none."""
    found: dict[str, str] = {}
    for pattern, value in options.items():
        matched = select(pattern, layers, modules)
        if not matched:
            raise StageError(f"{param} names {pattern!r}, which is none of the probed layers: "
                             f"{', '.join(layers)} (keys are names, globs or type:Class)")
        found.update(dict.fromkeys(matched, value))
    return found


class FeatureMapRecorder:
    """Forward hooks that keep each selected layer's reduced series of the last call(s).

    ``series[layer]`` is a list of CPU tensors ``(B, T)``, one per forward pass made
    inside the ``with`` block (``collect()`` joins them); with ``maps``, ``maps[layer]``
    holds the ``(B, T, F)`` maps of the 2-D layers.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reducer: str = "mean",
                 time_axis: int = 2, post_activation: Mapping[str, str] | None = None,
                 layout: Mapping[str, str] | None = None, maps: bool = False):
        if reducer not in REDUCERS:
            raise StageError(f"unknown reducer {reducer!r}; known: {', '.join(REDUCERS)}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.reducer = reducer
        self.time_axis = time_axis
        self.keep_maps = maps
        modules = dict(model.named_modules())
        activations = by_layer(post_activation or {}, self.layers, modules, "post_activation")
        self.activations: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            name: parse_activation(text) for name, text in activations.items()}
        try:
            self.layouts = {name: parse_layout(text)
                            for name, text in by_layer(layout or {}, self.layers, modules, "layout").items()}
        except ValueError as exc:
            raise StageError(str(exc)) from None
        self.series: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self.maps: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._calls: dict[str, int] = {}
        self._in_forward = False
        # the reduction happens inside the hook, before any in-place op can touch the
        # output, so the hooks need not copy it
        self._hooks = LayerHooks(model, self.layers, self._record, clone=False)
        self._root: list = []

    def _record(self, name: str, output: torch.Tensor) -> None:
        if self._in_forward:  # a call of the model itself: each layer once (checked at its end)
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] > 1:
                return
        activation = self.activations.get(name)
        if activation is not None:
            output = activation(output)  # a new tensor: the model's own output is untouched
        self.shapes[name] = tuple(output.shape)
        layout = self.layouts.get(name) or layout_for(output.shape, self.time_axis, name)
        reduced = reduce_feature_map(output.float(), self.reducer, self.time_axis, layout, layer=name)
        self.series[name].append(reduced.cpu())
        if self.keep_maps and "F" in layout:
            self.maps[name].append(reduce_feature_map(output.float(), self.reducer, self.time_axis, layout,
                                                      keep_frequency=True, layer=name).cpu())

    def _forward_starts(self, *_: object) -> None:
        self._calls = {}
        self._in_forward = True

    def _forward_ends(self, *_: object) -> None:
        self._in_forward = False
        never = [name for name in self.layers if name not in self._calls]
        twice = {name: count for name, count in self._calls.items() if count > 1}
        if never:
            raise StageError(f"the selected layer(s) {', '.join(never)} did not run in the model's forward "
                             "pass (a container such as ModuleList or Sequential whose members run "
                             "instead, or a branch not taken): select the modules that run, e.g. "
                             f"{never[0]}.0")
        if twice:
            detail = ", ".join(f"{name} ({count} times)" for name, count in twice.items())
            raise StageError(f"the selected layer(s) {detail} ran more than once in one forward pass (a "
                             "module applied at several places): their feature maps would be mixed; "
                             "select a module used once")

    def __enter__(self) -> FeatureMapRecorder:
        self._hooks.__enter__()
        self._root = [self.model.register_forward_pre_hook(self._forward_starts),
                      self.model.register_forward_hook(self._forward_ends)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._root:
            handle.remove()
        self._root = []
        self._hooks.__exit__(*exc)

    def collect(self) -> dict[str, torch.Tensor]:
        """Each layer's series over every recorded batch, ``(N, T_layer)``."""
        return {name: torch.cat(parts) for name, parts in self.series.items() if parts}

    def collect_maps(self) -> dict[str, torch.Tensor]:
        """Each 2-D layer's (time, frequency) maps, ``(N, T_layer, F_layer)`` (with ``maps``)."""
        return {name: torch.cat(parts) for name, parts in self.maps.items() if parts}
