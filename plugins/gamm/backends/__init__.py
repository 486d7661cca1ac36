"""GAMM backends: each declares what it can fit and returns a :class:`BackendFit`.

Built in: ``mgcv`` (R, through ``Rscript``; the reference), ``mssm`` (Python, with
factor smooths, AR1 and REML), ``pygam`` and ``statsmodels`` (the fixed part only).
Another package can add a backend under the entry-point group
``wavelens.gamm_backends`` (a :class:`GammBackend` subclass); see docs/gamm.md.
"""

from __future__ import annotations

import importlib.metadata

from wavelens import StageError

from ..model import BACKEND_GROUP
from .base import GammBackend
from .fixed import PygamBackend, StatsmodelsBackend
from .mgcv import R_INSTALL, MgcvBackend
from .mssm import MssmBackend

__all__ = ["BACKENDS", "GammBackend", "MgcvBackend", "MssmBackend", "PygamBackend", "R_INSTALL",
           "StatsmodelsBackend", "able", "backend_named"]

# The built-in backends, one module each; the names are checked against
# model.BUILTIN_BACKENDS by the tests.
BACKENDS: dict[str, type[GammBackend]] = {"mgcv": MgcvBackend, "mssm": MssmBackend, "pygam": PygamBackend,
                                          "statsmodels": StatsmodelsBackend}


def backend_named(name: str) -> GammBackend:
    """The backend called ``name``: a built-in or one from the ``wavelens.gamm_backends``
    entry points."""
    known = dict(BACKENDS)
    for entry in importlib.metadata.entry_points(group=BACKEND_GROUP):
        known.setdefault(entry.name, None)
        if entry.name == name and BACKENDS.get(name) is None:
            known[name] = entry.load()
    if name not in known:
        raise StageError(f"no GAMM backend {name!r}; known: {', '.join(sorted(known))}")
    return known[name]()


def able(feature: str) -> list[str]:
    """The built-in backends that can fit ``feature`` (``random_smooth`` or ``ar1``)."""
    return [name for name, cls in BACKENDS.items() if getattr(cls, feature)]
