"""wavelens: a plugin-based toolkit for interpreting and enhancing speech CNNs.

This package is the core. Plugins (built-in or third-party) use only the names
exported here.
"""

from .audio import AUDIO_SUFFIXES, AudioError, peak_normalize, read_audio, resample, write_audio
from .components import (
    Dataset,
    DataSplits,
    Enhanced,
    Metric,
    Model,
    Probe,
    StageContext,
    StageOutput,
    Statistic,
    collate_items,
)
from .console import get_logger, progress
from .contributions import KINDS, Contribution, Kind, Params
from .device import Placement, resolve_placement
from .errors import (
    DeviceError,
    PluginError,
    RunInterrupted,
    SpecError,
    SpecIssue,
    StageError,
    WavelensError,
)
from .hookspecs import hookimpl
from .io import (
    CheckpointManager,
    atomic_write,
    cache_dir,
    read_csv,
    read_json,
    save_torch,
    shared_data_dir,
    write_csv,
    write_json,
    write_text,
)
from .plugins import PluginRegistry
from .probing import LayerHooks, resolve_layers
from .run import Run, seed_everything
from .spec import ExperimentSpec, ResolvedSpec, SpecPath, TrainSpec, load_spec, load_spec_text
from .training import TrainingLoop, deferred_interrupts

__all__ = [
    "AUDIO_SUFFIXES",
    "KINDS",
    "AudioError",
    "CheckpointManager",
    "Contribution",
    "DataSplits",
    "Dataset",
    "DeviceError",
    "Enhanced",
    "ExperimentSpec",
    "Kind",
    "LayerHooks",
    "Metric",
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
    "cache_dir",
    "collate_items",
    "deferred_interrupts",
    "get_logger",
    "hookimpl",
    "load_spec",
    "load_spec_text",
    "peak_normalize",
    "progress",
    "read_audio",
    "read_csv",
    "read_json",
    "resolve_layers",
    "resample",
    "resolve_placement",
    "save_torch",
    "seed_everything",
    "shared_data_dir",
    "write_audio",
    "write_csv",
    "write_json",
    "write_text",
]
