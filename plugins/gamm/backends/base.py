"""What every GAMM backend shares: the :class:`GammBackend` interface and the code
for the fixed part of the model (its terms, the t rows of the parametric table, the
curves and their bands from coefficients and their covariance), used by the backends
that fit it themselves (mssm, pygam, statsmodels)."""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from ..model import BackendFit, GammParams, Prepared


class GammBackend(ABC):
    """A way to fit the GAMM. Subclasses declare their capabilities:

    - ``random_smooth``: by-token random smooths (``bs='fs'``);
    - ``ar1``: an AR(1) residual correction restarting at each token;
    - ``smooth_test``: how smooth terms are tested (``wood2013``, ``wood2013_re``,
      ``wald_fullrank``, ``naive`` or ``none``);
    - ``fixed_only``: fits the fixed part only (its bands ignore token correlation).
    """

    name: ClassVar[str]
    random_smooth: ClassVar[bool]
    ar1: ClassVar[bool]
    smooth_test: ClassVar[str]
    fixed_only: ClassVar[bool] = False

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {
            "backend": cls.name,
            "random_smooth": cls.random_smooth,
            "ar1": cls.ar1,
            "smooth_test": cls.smooth_test,
            "fixed_only": cls.fixed_only,
        }

    @abstractmethod
    def available(self) -> str | None:
        """None when the backend can run here, else what to install."""

    @abstractmethod
    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        """Fit; ``rho`` is a number (0: no AR1) or ``"estimate"``; ``random`` says
        whether to include the random smooths (False only for fixed-part backends)."""


def _missing_package(name: str, install: str) -> str | None:
    """None when ``name`` is installed, else how to install it."""
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return f"{name} is not installed: {install}"
    return None


def _t_rows(
    prepared: Prepared, names: list[str], estimate: np.ndarray, se: np.ndarray, df: float
) -> list[dict[str, Any]]:
    stat = estimate / se
    p = 2 * stats.t.sf(np.abs(stat), df)
    return [
        {
            "term": name,
            "estimate": float(e),
            "se": float(s),
            "stat": float(t),
            "stat_type": "t",
            "df": float(df),
            "p": float(q),
        }
        for name, e, s, t, q in zip(names, estimate, se, stat, p, strict=True)
    ]


def _parametric_names(prepared: Prepared) -> list[str]:
    return ["(Intercept)"] + [prepared.level_term(level) for level in prepared.levels[1:]]


def _smooth_names(prepared: Prepared, params: GammParams) -> list[tuple[str, str]]:
    """(term, kind) of the fixed smooths, in model order."""
    if params.coding == "difference":
        return [(prepared.smooth_term(), "main")] + [
            (prepared.smooth_term(level), "difference") for level in prepared.levels[1:]
        ]
    return [(prepared.smooth_term(level), "per_level") for level in prepared.levels]


def _with_indicators(frame: pd.DataFrame, prepared: Prepared) -> pd.DataFrame:
    """0/1 columns is_1 … is_{L−1}: the non-reference levels."""
    frame = frame.copy()
    for index, level in enumerate(prepared.levels[1:], start=1):
        frame[f"is_{index}"] = (frame["level"] == level).astype(float)
    return frame


def _fixed_terms(prepared: Prepared, params: GammParams) -> list[tuple[str, str, str | None]]:
    """(term, kind, level the smooth is multiplied by or None) in model order."""
    names = _smooth_names(prepared, params)
    if params.coding == "difference":
        return [(names[0][0], names[0][1], None)] + [
            (term, kind, level) for (term, kind), level in zip(names[1:], prepared.levels[1:], strict=True)
        ]
    return [(term, kind, level) for (term, kind), level in zip(names, prepared.levels, strict=True)]


def _curves_from(design, coef: np.ndarray, cov: np.ndarray, prepared: Prepared, params: GammParams):
    """Curves and differences from ``design(level, grid)`` → rows of the fixed design."""
    grid = prepared.grid(params.grid_points)
    designs = {level: design(level, grid) for level in prepared.levels}

    def se(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, cov, x), 0))

    curves = pd.concat(
        [
            pd.DataFrame({"level": lv, "time": grid, "fit": x @ coef, "se": se(x)})
            for lv, x in designs.items()
        ],
        ignore_index=True,
    )
    rows = [
        pd.DataFrame(
            {
                "a": a,
                "b": b,
                "time": grid,
                "diff": (designs[a] - designs[b]) @ coef,
                "se": se(designs[a] - designs[b]),
            }
        )
        for a, b in prepared.pairs(params.pairs)
    ]
    differences = (
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["a", "b", "time", "diff", "se"])
    )
    return curves, differences
