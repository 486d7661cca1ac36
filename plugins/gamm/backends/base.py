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


SIMULATIONS = 10_000  # itsadug's default for sim.ci


def simultaneous_multiplier(x: np.ndarray, se: np.ndarray, draws: np.ndarray, level: float) -> float:
    """itsadug's ``sim.ci``: the ``level`` quantile (R's type 8) over posterior draws of
    the largest |x·draw| / se on the grid; the simultaneous band is ± this × se."""
    shown = se > 0
    deviations = np.abs(x[shown] @ draws.T) / se[shown, None]
    return float(np.quantile(deviations.max(axis=0), level, method="median_unbiased"))


def posterior_draws(cov: np.ndarray, seed: int = 0) -> np.ndarray:
    """``SIMULATIONS`` draws of N(0, cov), fixed by ``seed`` so reports repeat."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    return np.random.default_rng(seed).standard_normal((SIMULATIONS, len(cov))) @ root.T


def band_level(ci: float) -> float:
    """The coverage of a pointwise ± ci·se band (1.96 → 0.95), used for the
    simultaneous band too."""
    return float(2 * stats.norm.cdf(ci) - 1)


def _curves_from(design, coef: np.ndarray, cov: np.ndarray, prepared: Prepared, params: GammParams):
    """Curves and differences from ``design(level, grid)`` → rows of the fixed design,
    with each curve's simultaneous multiplier (``crit``) when ``params.simultaneous``."""
    grid = prepared.grid(params.grid_points)
    designs = {level: design(level, grid) for level in prepared.levels}
    draws = posterior_draws(cov) if params.simultaneous else None

    def se(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, cov, x), 0))

    def with_crit(frame: pd.DataFrame, x: np.ndarray) -> pd.DataFrame:
        if draws is not None:
            frame["crit"] = simultaneous_multiplier(x, frame["se"].to_numpy(), draws, band_level(params.ci))
        return frame

    curves = pd.concat(
        [
            with_crit(pd.DataFrame({"level": lv, "time": grid, "fit": x @ coef, "se": se(x)}), x)
            for lv, x in designs.items()
        ],
        ignore_index=True,
    )
    rows = [
        with_crit(
            pd.DataFrame(
                {
                    "a": a,
                    "b": b,
                    "time": grid,
                    "diff": (designs[a] - designs[b]) @ coef,
                    "se": se(designs[a] - designs[b]),
                }
            ),
            designs[a] - designs[b],
        )
        for a, b in prepared.pairs(params.pairs)
    ]
    differences = (
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["a", "b", "time", "diff", "se"])
    )
    return curves, differences
