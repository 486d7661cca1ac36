"""The host API: for programs that run specs rather than plug into them.

The command line, a notebook, a script or a job scheduler loads a spec, runs it and
reads what it wrote; they use the names here. Plugins use the plugin API, the names
exported by ``wavelens`` itself (``Contribution``, ``Model``, ``hookimpl``, ...).
Every other module of the package is private (its name starts with ``_``) and may
change without notice::

    from wavelens.host import Run, load_spec

    resolved = load_spec("specs/demo.yaml", overrides=["train.steps=100"])
    run_dir = Run(resolved).execute()
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

from ._contributions import KINDS, Kind
from ._registry import PluginRegistry, disabled_from_env
from ._spec import ExperimentSpec, ResolvedSpec, load_spec, load_spec_text

# Running and reporting import torch and numpy: they load on first use (PEP 562), so
# that discovering plugins and validating specs stay light.
_LAZY = {
    "write_comparison": "_report",
    "write_report": "_report",
    "Run": "_run",
    "StagePlan": "_run",
    "default_runs_dir": "_run",
    "plan_stages": "_run",
    "seed_everything": "_run",
}

if TYPE_CHECKING:  # what static tools see
    from ._report import write_comparison, write_report
    from ._run import Run, StagePlan, default_runs_dir, plan_stages, seed_everything

__all__ = [
    "KINDS",
    "ExperimentSpec",
    "Kind",
    "PluginRegistry",
    "ResolvedSpec",
    "Run",
    "StagePlan",
    "default_runs_dir",
    "disabled_from_env",
    "load_spec",
    "load_spec_text",
    "plan_stages",
    "seed_everything",
    "write_comparison",
    "write_report",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wavelens.host' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __package__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
