"""The ``mssm`` backend: Python, with factor smooths, AR1 and REML (a dependency
under the GPL-3, never vendored)."""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import numpy as np
import pandas as pd

from ..model import BackendFit, GammParams, Prepared, acf1
from .base import (
    GammBackend,
    _curves_from,
    _missing_package,
    _parametric_names,
    _smooth_names,
    _t_rows,
    _with_indicators,
)


class MssmBackend(GammBackend):
    """mssm (Krause; GPL-3, an optional dependency): B-spline smooths, binary
    difference smooths, factor smooths (``fs``, m=1), AR1 restarting per token, REML
    by extended Fellner–Schall. Tables are built here from the coefficients and their
    covariance; smooth p-values by Wood (2013) as mssm approximates them. mssm gives no
    Ref.df and no test of the random smooth."""

    name = "mssm"
    random_smooth = True
    ar1 = True
    smooth_test = "wood2013"

    def available(self) -> str | None:
        return _missing_package("mssm", "pip install 'wavelens[gamm]' (or pip install mssm)")

    def _formula(self, data: pd.DataFrame, prepared: Prepared, params: GammParams, random: bool):
        _quiet_mssm_import()
        from mssm.src.python.formula import Formula, lhs
        from mssm.src.python.terms import f, fs, i, l

        nk = params.k - 1  # mgcv's k counts the coefficient the centring constraint removes
        terms = [i(), l(["level"])]
        if params.coding == "difference":
            # Difference smooths as mgcv builds them for an ordered factor: a centred
            # smooth times a 0/1 indicator of the level (mssm's binary= smooths are not
            # centred, and would be confounded with the level's parametric term).
            terms += [f(["time"], nk=nk)] + [
                f(["time"], by_cont=f"is_{index}", nk=nk) for index in range(1, len(prepared.levels))
            ]
        else:
            terms += [f(["time"], by="level", nk=nk)]
        if random:
            terms.append(fs(["time"], rf="token", nk=(params.random_k or 10) - 1, m=1))
        codebook = {"level": {lv: index for index, lv in enumerate(prepared.levels)}}
        frame = _with_indicators(data, prepared).astype({"level": object, "token": object})
        return Formula(
            lhs("y"), terms, data=frame, series_id="token", codebook=codebook, print_warn=False
        ), terms

    def _fit_once(self, prepared: Prepared, params: GammParams, random: bool, rho: float):
        import warnings

        from mssm.models import GAMM, Gaussian

        formula, terms = self._formula(
            prepared.data[["y", "level", "time", "token"]], prepared, params, random
        )
        model = GAMM(formula, Gaussian())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(method="Chol", progress_bar=False, rho=rho if rho != 0 else None)
        return model, terms, [str(w.message) for w in caught]

    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        _quiet_mssm_import()
        from mssm.src.python.utils import approx_smooth_p_values

        started = time.perf_counter()
        rho_estimated = None
        if rho == "estimate":
            first, _, _ = self._fit_once(prepared, params, random, 0)
            rho_estimated = acf1(np.asarray(first.get_resid()).ravel())
            rho = rho_estimated
        model, terms, caught = self._fit_once(prepared, params, random, rho)
        fit_seconds = time.perf_counter() - started
        coef = np.asarray(model.coef).ravel()
        # Vp = scale · L⁻ᵀL⁻¹, needed only for the fixed coefficients (they come first; the
        # random smooth's thousands are last): a small block of a large sparse product.
        n_fixed = len(coef) - (model.formulas[0].coef_per_term[-1] if random else 0)
        lvi = model.lvi[:, :n_fixed]
        vp = np.asarray((lvi.T @ lvi).toarray() if hasattr(lvi, "toarray") else lvi.T @ lvi) * model.scale
        n = len(prepared.data)
        residual_df = n - float(model.edf)
        n_parametric = len(prepared.levels)
        parametric = _t_rows(
            prepared,
            _parametric_names(prepared),
            coef[:n_parametric],
            np.sqrt(np.diag(vp)[:n_parametric]),
            residual_df,
        )
        p_started = time.perf_counter()
        p_values, statistics = approx_smooth_p_values(model)
        p_seconds = time.perf_counter() - p_started
        # term_edf, p-values and statistics list the smooths in model order: the fixed
        # ones (by-smooths one per level), then the random smooth.
        smooths = [
            {
                "term": term,
                "kind": kind,
                "edf": model.term_edf[index],
                "ref_df": None,
                "stat": statistics[index],
                "stat_type": "Tr",
                "p": p_values[index],
                "p_method": "wood2013 (mssm, Davies)",
            }
            for index, (term, kind) in enumerate(_smooth_names(prepared, params))
        ]
        if random:
            smooths.append(
                {
                    "term": prepared.random_term(),
                    "kind": "random",
                    "edf": model.term_edf[-1],
                    "ref_df": None,
                    "stat": None,
                    "stat_type": None,
                    "p": None,
                    "p_method": "none",
                }
            )
        fixed_terms = list(range(len(terms) - (1 if random else 0)))
        curves, differences = _curves_from(
            lambda level, grid: self._design(model, n_fixed, fixed_terms, prepared, level, grid),
            coef[:n_fixed],
            vp,
            prepared,
            params,
        )
        resid = np.asarray(model.get_resid()).ravel()
        whitened = np.asarray(model.get_resid(type="ar1")).ravel() if rho != 0 else resid
        y = prepared.data["y"].to_numpy()
        fit_stats = {
            "scale": float(model.scale),
            "r_sq": 1 - np.var(resid) / np.var(y),
            "dev_expl": 1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2),
            "reml": _reml(model, caught),
            "r_sq_adjusted": False,
            "criterion": "REML",
            "n_coef": len(coef),
            "residual_df": residual_df,
            "acf1_raw": acf1(resid),
            "acf1_whitened": acf1(whitened),
            "summary_seconds": p_seconds,
        }
        fit_stats["criterion_value"] = fit_stats["reml"]
        return BackendFit(
            parametric=parametric,
            smooths=smooths,
            fit_stats=fit_stats,
            curves=curves,
            differences=differences,
            version=importlib.metadata.version("mssm"),
            method="REML (extended Fellner-Schall), Cholesky",
            rho=float(rho),
            rho_estimated=rho_estimated,
            fit_seconds=fit_seconds,
            warnings=caught,
        )

    @staticmethod
    def _design(model, n_fixed, fixed_terms, prepared: Prepared, level: str, grid: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(
            {
                "level": [level] * len(grid),
                "time": grid,
                "token": [prepared.data["token"].iloc[0]] * len(grid),
            }
        )
        frame = _with_indicators(frame, prepared).astype({"level": object, "token": object})
        _, matrix, _ = model.predict(fixed_terms, frame)
        matrix = matrix[:, :n_fixed]
        return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def _quiet_mssm_import() -> None:
    """Import mssm once without its warning that the optional multiprocess package
    (used only by its hidden semi-Markov models) is missing."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import mssm.models  # noqa: F401


def _reml(model, warnings_seen: list[str]) -> float | None:
    try:
        return float(model.get_reml())
    except ValueError as error:  # mssm cannot always evaluate it after the fit
        warnings_seen.append(f"mssm could not compute the REML score: {str(error)[:120]}")
        return None
