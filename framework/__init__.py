"""wavelens: a plugin-based toolkit for interpreting and enhancing speech CNNs.

This package is the core. The names exported here are the plugin API: what plugins
(built-in or third-party) implement and call. Programs that run specs (the command
line, notebooks, schedulers) use the host API in :mod:`wavelens.host`. Every module
whose name starts with ``_`` is private.
"""

import importlib as _importlib
import warnings as _warnings
from typing import TYPE_CHECKING

from ._commands import (
    Command,
    CommandContext,
    LoadedModel,
    finite_float,
    int_between,
    is_weights_folder,
    load_run_model,
    probability,
    shipped_weights,
)
from ._contributions import Contribution, Params
from ._errors import (
    AudioError,
    DeviceError,
    PluginError,
    RunInterrupted,
    SpecError,
    SpecIssue,
    StageError,
    WavelensError,
)
from ._extensions import ExtensionEntry, ExtensionPoint
from ._hookspecs import hookimpl

# The rest loads on first use (PEP 562), so that importing wavelens, or a plugin
# module that needs only the names above, imports neither torch nor numpy.
_LAZY = {
    "AUDIO_SUFFIXES": "_audio",
    "audio_channels": "_audio",
    "peak_normalize": "_audio",
    "read_audio": "_audio",
    "resample": "_audio",
    "write_audio": "_audio",
    "DataSplits": "_components",
    "Dataset": "_components",
    "Metric": "_components",
    "MetricColumn": "_components",
    "Model": "_components",
    "Probe": "_components",
    "StageContext": "_components",
    "StageOutput": "_components",
    "Statistic": "_components",
    "collate_items": "_components",
    "console": "_console",
    "get_logger": "_console",
    "progress": "_console",
    "Placement": "_device",
    "resolve_placement": "_device",
    "available_cores": "_evaluation",
    "format_value": "_evaluation",
    "item_scorer": "_evaluation",
    "metric_columns": "_evaluation",
    "presentation": "_evaluation",
    "summarize": "_evaluation",
    "summary_markdown": "_evaluation",
    "CheckpointManager": "_io",
    "atomic_write": "_io",
    "cache_dir": "_io",
    "markdown_table": "_io",
    "read_csv": "_io",
    "read_json": "_io",
    "save_figure": "_io",
    "save_torch": "_io",
    "shared_data_dir": "_io",
    "write_csv": "_io",
    "write_json": "_io",
    "write_text": "_io",
    "LayerHooks": "_probing",
    "resolve_layers": "_probing",
    "SpecPath": "_spec",
    "TrainSpec": "_spec",
    "TrainingLoop": "_training",
    "deferred_interrupts": "_training",
}

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ below imports these
    from ._audio import AUDIO_SUFFIXES, audio_channels, peak_normalize, read_audio, resample, write_audio
    from ._components import (
        Dataset,
        DataSplits,
        Metric,
        MetricColumn,
        Model,
        Probe,
        StageContext,
        StageOutput,
        Statistic,
        collate_items,
    )
    from ._console import console, get_logger, progress
    from ._device import Placement, resolve_placement
    from ._evaluation import (
        available_cores,
        format_value,
        item_scorer,
        metric_columns,
        presentation,
        summarize,
        summary_markdown,
    )
    from ._io import (
        CheckpointManager,
        atomic_write,
        cache_dir,
        markdown_table,
        read_csv,
        read_json,
        save_figure,
        save_torch,
        shared_data_dir,
        write_csv,
        write_json,
        write_text,
    )
    from ._probing import LayerHooks, resolve_layers
    from ._spec import SpecPath, TrainSpec
    from ._training import TrainingLoop, deferred_interrupts

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioError",
    "CheckpointManager",
    "Command",
    "CommandContext",
    "Contribution",
    "DataSplits",
    "Dataset",
    "DeviceError",
    "ExtensionEntry",
    "ExtensionPoint",
    "LayerHooks",
    "LoadedModel",
    "Metric",
    "MetricColumn",
    "Model",
    "Params",
    "Placement",
    "PluginError",
    "Probe",
    "RunInterrupted",
    "SpecError",
    "SpecIssue",
    "SpecPath",
    "StageContext",
    "StageError",
    "StageOutput",
    "Statistic",
    "TrainSpec",
    "TrainingLoop",
    "WavelensError",
    "atomic_write",
    "audio_channels",
    "available_cores",
    "cache_dir",
    "collate_items",
    "console",
    "deferred_interrupts",
    "finite_float",
    "format_value",
    "get_logger",
    "hookimpl",
    "item_scorer",
    "int_between",
    "is_weights_folder",
    "load_run_model",
    "markdown_table",
    "metric_columns",
    "peak_normalize",
    "probability",
    "presentation",
    "progress",
    "read_audio",
    "read_csv",
    "read_json",
    "resample",
    "resolve_layers",
    "resolve_placement",
    "save_figure",
    "save_torch",
    "shared_data_dir",
    "shipped_weights",
    "summarize",
    "summary_markdown",
    "write_audio",
    "write_csv",
    "write_json",
    "write_text",
]


# The host API's names were exported here before wavelens.host existed; they still
# resolve, with a warning that says where they live now.
_MOVED_TO_HOST = {"KINDS", "ExperimentSpec", "Kind", "PluginRegistry", "ResolvedSpec", "Run",
                  "load_spec", "load_spec_text", "seed_everything"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if name in _MOVED_TO_HOST:
        from . import host

        _warnings.warn(f"wavelens.{name} is part of the host API: import it from wavelens.host",
                       DeprecationWarning, stacklevel=2)
        return getattr(host, name)
    raise AttributeError(f"module 'wavelens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
