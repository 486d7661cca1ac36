"""GAMM backends: each declares what it can fit and returns a :class:`BackendFit`.

Built in: ``mgcv`` (R, through ``Rscript``; the reference), ``mssm`` (Python, with
factor smooths, AR1 and REML), ``pygam`` and ``statsmodels`` (the fixed part only).
Another package can add a backend under the entry-point group
``wavelens.gamm_backends`` (a :class:`GammBackend` subclass); see docs/gamm.md.
"""

from __future__ import annotations

from wavelens import StageError, WavelensError

from ..model import BACKENDS_POINT
from .base import GammBackend
from .fixed import PygamBackend, StatsmodelsBackend
from .mgcv import R_INSTALL, MgcvBackend
from .mssm import MssmBackend
from .native import NativeBackend

__all__ = ["BACKENDS", "GammBackend", "MgcvBackend", "MssmBackend", "NativeBackend", "PygamBackend",
           "R_INSTALL", "StatsmodelsBackend", "able", "backend_named"]

# The built-in backends, one module each; backend_named loads them (and those other
# packages register) through model.BACKENDS_POINT, which the tests check against this.
BACKENDS: dict[str, type[GammBackend]] = {"mgcv": MgcvBackend, "mssm": MssmBackend, "native": NativeBackend,
                                          "pygam": PygamBackend, "statsmodels": StatsmodelsBackend}


def backend_named(name: str) -> GammBackend:
    """The backend called ``name``: a built-in or one registered under the
    ``wavelens.gamm_backends`` entry points."""
    try:
        return BACKENDS_POINT.load(name)()
    except WavelensError as exc:
        raise StageError(str(exc)) from exc


def able(feature: str) -> list[str]:
    """The built-in backends that can fit ``feature`` (``random_smooth`` or ``ar1``)."""
    return [name for name, cls in BACKENDS.items() if getattr(cls, feature)]
