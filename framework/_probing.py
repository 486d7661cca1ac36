"""Attaching probes to any ``torch.nn.Module``: layer selection and forward hooks
that are always removed.

A probe plugin chooses layers with :func:`resolve_layers` (exact names, globs over
``named_modules()``, ``type:ClassName``) and records what it needs with
:class:`LayerHooks`: a callback gets each selected layer's output during every
forward pass inside the ``with`` block, and the hooks are removed on exit, also
after an exception::

    layers = resolve_layers(model, ["conv*", "type:LeakyReLU"])
    with LayerHooks(model, layers, lambda name, output: kept[name].append(output.mean(1))):
        for batch in batches:
            model(batch)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._errors import WavelensError

__all__ = ["resolve_layers", "LayerHooks"]


def resolve_layers(model: nn.Module, selectors: Sequence[str]) -> list[str]:
    """Explicit module names for ``selectors``, in the model's module order.

    A selector is an exact name, a glob (``conv*``, ``encoder.*.act``), or
    ``type:ClassName`` (``type:Conv1d``, matched by class name).

    Raises:
        WavelensError: the model is a TorchScript module (hooks do not run on it), or
            a selector matches nothing (the message lists the model's modules).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise WavelensError(
            "TorchScript modules do not support forward hooks, so they cannot be probed; load the "
            "model's Python class and its state_dict (or torch.export it) and probe that"
        )
    modules = dict(model.named_modules())
    names = [name for name in modules if name]
    chosen: set[str] = set()
    for selector in selectors:
        if selector.startswith("type:"):
            wanted = selector[len("type:"):]
            found = [n for n in names if type(modules[n]).__name__ == wanted]
        elif selector and selector in modules:
            found = [selector]
        else:
            found = [n for n in names if fnmatch.fnmatchcase(n, selector)]
        if not found:
            sample = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise WavelensError(f"layer selector {selector!r} matches no module; the model's modules "
                                f"are: {sample}")
        chosen.update(found)
    return [n for n in names if n in chosen]


class LayerHooks:
    """Forward hooks on named layers calling ``on_output(name, output)`` (the first
    element when a layer returns a tuple). Removed on exit.

    The output handed over is detached and, by default, a **copy**: the model's own
    tensor may be overwritten right after the hook by an in-place operation (a
    ``ReLU(inplace=True)``, ``x += residual``), so a callback that keeps the tensor
    would otherwise find values the layer never output. A callback that reduces the
    output at once, inside the hook, may pass ``clone=False`` and save the copy (the
    built-in feature-map probe does).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str],
                 on_output: Callable[[str, torch.Tensor], None], clone: bool = True):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise WavelensError(f"the model has no module named {', '.join(missing)}")
        self.modules = [(name, modules[name]) for name in layers]
        self.on_output = on_output
        self.clone = clone
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = (output[0] if isinstance(output, tuple) else output).detach()
            self.on_output(name, tensor.clone() if self.clone else tensor)

        return hook

    def __enter__(self) -> LayerHooks:
        try:
            for name, module in self.modules:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
