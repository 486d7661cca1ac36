"""wavelens: a plugin-based toolkit for interpreting and enhancing speech CNNs.

This package is the core. Plugins (built-in or third-party) use only the names
exported here.
"""

from .audio import (
    AUDIO_SUFFIXES,
    audio_channels,
    peak_normalize,
    read_audio,
    resample,
    write_audio,
)
from .commands import (
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
from .components import (
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
from .console import console, get_logger, progress
from .contributions import KINDS, Contribution, Kind, Params
from .device import Placement, resolve_placement
from .errors import (
    AudioError,
    DeviceError,
    PluginError,
    RunInterrupted,
    SpecError,
    SpecIssue,
    StageError,
    WavelensError,
)
from .evaluation import item_scorer, metric_columns, presentation, summarize, summary_markdown
from .extensions import ExtensionEntry, ExtensionPoint
from .hookspecs import hookimpl
from .io import (
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
from .probing import LayerHooks, resolve_layers
from .registry import PluginRegistry
from .run import Run, seed_everything
from .spec import ExperimentSpec, ResolvedSpec, SpecPath, TrainSpec, load_spec, load_spec_text
from .training import TrainingLoop, deferred_interrupts

__all__ = [
    "AUDIO_SUFFIXES",
    "KINDS",
    "AudioError",
    "CheckpointManager",
    "Command",
    "CommandContext",
    "Contribution",
    "DataSplits",
    "Dataset",
    "DeviceError",
    "ExperimentSpec",
    "ExtensionEntry",
    "ExtensionPoint",
    "Kind",
    "LayerHooks",
    "LoadedModel",
    "Metric",
    "MetricColumn",
    "Model",
    "Params",
    "Placement",
    "PluginError",
    "PluginRegistry",
    "Probe",
    "ResolvedSpec",
    "Run",
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
    "cache_dir",
    "collate_items",
    "console",
    "deferred_interrupts",
    "finite_float",
    "get_logger",
    "hookimpl",
    "item_scorer",
    "int_between",
    "is_weights_folder",
    "load_run_model",
    "load_spec",
    "load_spec_text",
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
    "seed_everything",
    "shared_data_dir",
    "shipped_weights",
    "summarize",
    "summary_markdown",
    "write_audio",
    "write_csv",
    "write_json",
    "write_text",
]
