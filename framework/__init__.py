"""wavelens: a plugin-based toolkit for interpreting and enhancing speech CNNs.

This package is the core. Plugins (built-in or third-party) use only the names
exported here.
"""

from .components import (
    Dataset,
    DataSplits,
    Metric,
    Model,
    Probe,
    StageContext,
    StageOutput,
    Statistic,
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
from .io import CheckpointManager, atomic_write, read_json, save_torch, write_json, write_text
from .plugins import PluginRegistry
from .run import Run, seed_everything
from .spec import ExperimentSpec, ResolvedSpec, SpecPath, TrainSpec, load_spec, load_spec_text

__all__ = [
    "KINDS",
    "CheckpointManager",
    "Contribution",
    "DataSplits",
    "Dataset",
    "DeviceError",
    "ExperimentSpec",
    "Kind",
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
    "WavelensError",
    "atomic_write",
    "get_logger",
    "hookimpl",
    "load_spec",
    "load_spec_text",
    "progress",
    "read_json",
    "resolve_placement",
    "save_torch",
    "seed_everything",
    "write_json",
    "write_text",
]
