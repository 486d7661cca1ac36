"""Commands that plugins add to the ``wavelens`` command line.

A plugin answers the ``wavelens_commands`` hook with :class:`Command` objects, in
the spirit of pytest's ``pytest_addoption`` and datasette's ``register_commands``.
The core keeps ``plugins``, ``validate``, ``run``, ``data``, ``probe``, ``stats``
and ``report``; everything a plugin family knows how to do with its own models
(``generate`` for generative models, ``enhance`` for enhancement models,
``evaluate`` for folders of audio and metrics) is a plugin's command::

    from wavelens import Command, hookimpl

    def add_arguments(parser):
        parser.add_argument("run_dir", type=Path)

    def run(args, ctx):
        loaded = load_run_model(args.run_dir, ctx.disabled)
        ...
        return 0

    @hookimpl
    def wavelens_commands():
        return [Command("listen", "play a run's outputs", add_arguments, run)]

A command's ``run`` returns the exit status. It raises :class:`StageError` for a
problem the user can fix (printed as one line, status 2); ``wavelens --help`` lists
every loaded plugin's commands.

The helpers below are what the built-in commands share and what a plugin's command
may use: argument types that refuse bad values when the command line is parsed,
and loading a trained model from a run directory, a checkpoint or a folder of
shipped weights.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import WavelensError

if TYPE_CHECKING:
    from ._registry import PluginRegistry

__all__ = [
    "CORE_COMMANDS",
    "Command",
    "CommandContext",
    "LoadedModel",
    "finite_float",
    "int_between",
    "is_weights_folder",
    "load_run_model",
    "probability",
    "shipped_weights",
]

CORE_COMMANDS = ("plugins", "validate", "run", "data", "probe", "stats", "report")
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class CommandContext:
    """What a command receives besides its parsed arguments."""

    registry: PluginRegistry  # the plugins loaded for this invocation
    disabled: frozenset[str]  # names disabled by $WAVELENS_DISABLE_PLUGINS and --disable


@dataclass(frozen=True)
class Command:
    """A subcommand of ``wavelens``.

    Attributes:
        name: lowercase letters, digits and hyphens (``generate``); unique, and not
            one of the core's commands.
        help: one line for ``wavelens --help``.
        add_arguments: called with the command's ``argparse`` parser.
        run: called with the parsed arguments and a :class:`CommandContext`;
            returns the exit status.
        description: a longer text for ``wavelens NAME --help`` (default: ``help``).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, CommandContext], int]
    description: str | None = None


# -- argument types ----------------------------------------------------------------

def int_between(low: int, high: int) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low:,} to {high:,}, not {value:,}")
        return value

    return parse


def finite_float(text: str) -> float:
    """An ``argparse`` type: a finite number (not NaN or ±inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text}")
    return value


def probability(text: str) -> float:
    """An ``argparse`` type: a number from 0 to 1."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, not {text}")
    return value


# -- trained models ----------------------------------------------------------------

class LoadedModel(NamedTuple):
    """A trained model, ready to use: the component, its network with the weights
    loaded, the file the weights came from, and the run (or weights folder)."""

    model: Any
    network: Any
    source: Path
    run_dir: Path


def is_weights_folder(folder: Path) -> bool:
    """Whether ``folder`` is a folder of shipped weights: ``spec.yaml``,
    ``model.pt`` and ``manifest.json`` (docs/reproducing.md)."""
    return all((Path(folder) / name).is_file() for name in ("spec.yaml", "model.pt", "manifest.json"))


def shipped_weights(name: str) -> Path:
    """The folder of weights the project ships under ``weights/`` (a source checkout)."""
    folder = Path(__file__).resolve().parent.parent / "weights" / name
    if not is_weights_folder(folder):
        raise WavelensError(f"the shipped weights {name!r} are not here ({folder}: this is not a "
                            "source checkout of wavelens); give --checkpoint")
    return folder


def _find_run_dir(target: Path) -> Path:
    """The run directory holding ``target``, or the shipped-weights folder it is."""
    if is_weights_folder(target):
        return target
    for folder in [target, *target.parents]:
        if (folder / "run.json").is_file() and (folder / "spec.yaml").is_file():
            return folder
    raise WavelensError(
        f"{target} is not inside a wavelens run directory (no run.json and spec.yaml above it)"
    )


def load_run_model(target: Path, disabled: frozenset[str] | set[str] = frozenset()) -> LoadedModel:
    """The trained model of a run directory (its finished model stage), a folder
    inside one, a checkpoint file of its model stage, or a folder of shipped weights."""
    import torch

    from ._spec import load_spec

    target = Path(target).resolve()
    if not target.exists():
        raise WavelensError(f"{target} does not exist")
    run_dir = _find_run_dir(target)
    resolved = load_spec(run_dir / "spec.yaml", disabled=set(disabled))
    component = resolved.component("model")
    if component is None:
        raise WavelensError(f"the run {run_dir} has no model")
    model = component.build()
    network = model.network()
    if target.is_file():  # a training checkpoint (or a saved state dict)
        if target.suffix != ".pt":
            raise WavelensError(f"{target} is not a checkpoint (.pt); give a run directory, its "
                                "model stage folder or a checkpoint file")
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
            network.load_state_dict(state.get("network", state))
        except Exception as exc:
            raise WavelensError(f"cannot load {target} into the run's {component.plugin.name} "
                                f"model: {type(exc).__name__}: {exc}") from None
        source = target
    else:
        source = (run_dir / "model.pt" if is_weights_folder(run_dir)
                  else run_dir / "stages" / "model" / "model.pt")
        if not source.is_file():
            raise WavelensError(f"{run_dir} has no finished model stage ({source} is missing); "
                                "give a checkpoint file instead")
        model.load_weights(network, source)
    return LoadedModel(model, network, source, run_dir)
