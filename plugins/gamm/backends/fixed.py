"""The fixed part only: the ``pygam`` and ``statsmodels`` backends (no random
smooths, no AR1 correction; the statistic says so in the report)."""

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
    _fixed_terms,
    _missing_package,
    _parametric_names,
    _t_rows,
    _with_indicators,
)


class PygamBackend(GammBackend):
    """pyGAM's LinearGAM: the fixed part only (no random smooths, no AR1).

    By-smooths are smooths multiplied by 0/1 level indicators (pyGAM's ``by`` takes
    a numeric column). pyGAM's smooths are not centred, so its coefficients do not
    split into mgcv's parametric terms; the parametric rows are therefore the same
    estimands computed from the fit: the reference level's mean fitted value over its
    samples (the intercept) and each level's difference from it, which is what mgcv's
    coefficients are when its smooths are centred. One smoothing parameter shared by
    all smooths, chosen by GCV over a grid. Its bands and p-values ignore the
    correlation within tokens and are too narrow (pyGAM's own summary warns that its
    p-values are too small).
    """

    name = "pygam"
    random_smooth = False
    ar1 = False
    smooth_test = "naive"
    fixed_only = True

    def available(self) -> str | None:
        return _missing_package("pygam", "pip install pygam")

    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        import warnings

        from pygam import LinearGAM, s

        data = prepared.data.copy()
        terms = _fixed_terms(prepared, params)
        columns = ["time"] + [f"level_is_{level}" for level in prepared.levels]
        for level in prepared.levels:
            data[f"level_is_{level}"] = (data["level"] == level).astype(float)
        spec = None
        for _, _, level in terms:
            term = (
                s(0, n_splines=params.k)
                if level is None
                else s(0, n_splines=params.k, by=columns.index(f"level_is_{level}"))
            )
            spec = term if spec is None else spec + term
        x = data[columns].to_numpy()
        y = data["y"].to_numpy()
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gam = LinearGAM(spec).gridsearch(x, y, lam=np.logspace(-3, 4, 15), progress=False)
        fit_seconds = time.perf_counter() - started
        coef = np.asarray(gam.coef_)
        cov = np.asarray(gam.statistics_["cov"])

        def design(level: str, grid: np.ndarray) -> np.ndarray:
            frame = np.zeros((len(grid), len(columns)))
            frame[:, 0] = grid
            frame[:, columns.index(f"level_is_{level}")] = 1.0
            return np.asarray(gam._modelmat(frame).todense())

        curves, differences = _curves_from(design, coef, cov, prepared, params)
        residual_df = len(y) - float(gam.statistics_["edof"])
        parametric = self._parametric(gam, data, columns, prepared, coef, cov, residual_df)
        edof = np.asarray(gam.statistics_["edof_per_coef"])
        p_values = gam.statistics_["p_values"]
        smooths = []
        for index, (term, kind, _) in enumerate(terms):
            mask = gam.terms.get_coef_indices(index)
            smooths.append(
                {
                    "term": term,
                    "kind": kind,
                    "edf": float(edof[mask].sum()),
                    "ref_df": None,
                    "stat": None,
                    "stat_type": None,
                    "p": float(p_values[index]),
                    "p_method": "pygam (too small: ignores within-token correlation; pyGAM #163)",
                }
            )
        resid = y - gam.predict(x)
        fit_stats = {
            "scale": float(gam.statistics_["scale"]),
            "r_sq": float(gam.statistics_["pseudo_r2"]["explained_deviance"]),
            "dev_expl": float(gam.statistics_["pseudo_r2"]["explained_deviance"]),
            "reml": None,
            "n_coef": len(coef),
            "residual_df": residual_df,
            "acf1_raw": acf1(resid),
            "acf1_whitened": None,
            "gcv": float(gam.statistics_["GCV"]),
            "r_sq_adjusted": False,  # pyGAM's explained-deviance pseudo R²
            "criterion": "GCV",
            "criterion_value": float(gam.statistics_["GCV"]),
            "lam": float(np.ravel(gam.lam)[0]),
        }
        return BackendFit(
            parametric=parametric,
            smooths=smooths,
            fit_stats=fit_stats,
            curves=curves,
            differences=differences,
            version=importlib.metadata.version("pygam"),
            method="penalised least squares, one shared lambda by GCV",
            rho=0.0,
            fit_seconds=fit_seconds,
            warnings=sorted({str(w.message) for w in caught}),
        )

    @staticmethod
    def _parametric(gam, data, columns, prepared, coef, cov, residual_df) -> list[dict[str, Any]]:
        means = {}
        for level in prepared.levels:
            rows = data.loc[data["level"] == level, columns].to_numpy()
            means[level] = np.asarray(gam._modelmat(rows).mean(axis=0)).ravel()
        contrasts = [means[prepared.reference]] + [
            means[lv] - means[prepared.reference] for lv in prepared.levels[1:]
        ]
        matrix = np.vstack(contrasts)
        estimate = matrix @ coef
        se = np.sqrt(np.einsum("ij,jk,ik->i", matrix, cov, matrix))
        return _t_rows(prepared, _parametric_names(prepared), estimate, se, residual_df)


class StatsmodelsBackend(GammBackend):
    """statsmodels' GLMGam (Gaussian): the fixed part only. Treatment-coded level
    terms, centred cubic B-splines of time (``UnivariateBSplines``, constraints
    'center'), by-smooths as the basis times 0/1 level indicators, second-derivative
    penalties; one penalty weight, scaled by the share of rows each smooth sees,
    chosen by GCV over a grid.
    Smooth tests are full-rank Wald tests. No random smooths, no AR1: its bands are
    too narrow when tokens are correlated."""

    name = "statsmodels"
    random_smooth = False
    ar1 = False
    smooth_test = "wald_fullrank"
    fixed_only = True

    def available(self) -> str | None:
        return _missing_package("statsmodels", "pip install statsmodels")

    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        import warnings

        from statsmodels.gam.api import GLMGam
        from statsmodels.gam.smooth_basis import (
            GenericSmoothers,
            UnivariateBSplines,
            UnivariateGenericSmoother,
        )

        data = _with_indicators(prepared.data, prepared)
        time_values = data["time"].to_numpy()
        # include_intercept: without it the first B-spline is dropped and every smooth is
        # pinned at the first sample (a curve that starts high or low cannot be fitted)
        base = UnivariateBSplines(time_values, df=params.k, degree=3, include_intercept=True,
                                  constraints="center", variable_name="t")
        terms = _fixed_terms(prepared, params)

        def indicator(level: str | None, frame: pd.DataFrame) -> np.ndarray:
            return np.ones(len(frame)) if level is None else (frame["level"] == level).to_numpy(float)

        smoothers = []
        for index, (_, _, level) in enumerate(terms):
            weight = indicator(level, data)[:, None]
            smoothers.append(
                UnivariateGenericSmoother(
                    time_values,
                    base.basis * weight,
                    base.der_basis * weight,
                    base.der2_basis * weight,
                    base.cov_der2,
                    variable_name=f"s{index}",
                )
            )
        smoother = GenericSmoothers(np.column_stack([time_values] * len(terms)), smoothers)
        exog = np.column_stack(
            [np.ones(len(data))] + [data[f"is_{i}"].to_numpy() for i in range(1, len(prepared.levels))]
        )
        y = data["y"].to_numpy()
        started = time.perf_counter()
        best = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # One weight for all smooths, scaled by the share of rows each smooth sees
            # (a by-smooth sees one level's rows), so that all are smoothed alike.
            shares = [float(indicator(level, data).mean()) for _, _, level in terms]
            for alpha in np.logspace(-4, 4, 33):
                weights = [alpha * share for share in shares]
                result = GLMGam(y, exog=exog, smoother=smoother, alpha=weights).fit()
                if best is None or result.gcv < best[1].gcv:
                    best = (alpha, result)
        fit_seconds = time.perf_counter() - started
        alpha, result = best
        coef = np.asarray(result.params)
        cov = np.asarray(result.cov_params())
        n_parametric = exog.shape[1]

        def design(level: str, grid: np.ndarray) -> np.ndarray:
            frame = pd.DataFrame({"level": [level] * len(grid)})
            basis = base.transform(grid)
            parametric = np.column_stack(
                [np.ones(len(grid))] + [(frame["level"] == lv).to_numpy(float) for lv in prepared.levels[1:]]
            )
            return np.column_stack(
                [parametric] + [basis * indicator(lv, frame)[:, None] for _, _, lv in terms]
            )

        curves, differences = _curves_from(design, coef, cov, prepared, params)
        edf = np.asarray(result.edf)
        residual_df = len(y) - float(edf.sum())
        parametric = _t_rows(
            prepared,
            _parametric_names(prepared),
            coef[:n_parametric],
            np.sqrt(np.diag(cov)[:n_parametric]),
            residual_df,
        )
        smooths = []
        for index, (term, kind, _) in enumerate(terms):
            test = result.test_significance(index)
            statistic = float(np.squeeze(test.statistic))
            smooths.append(
                {
                    "term": term,
                    "kind": kind,
                    "edf": float(edf[smoother.mask[index].nonzero()[0] + n_parametric].sum()),
                    "ref_df": None,
                    "stat": statistic,
                    "stat_type": "chi2",
                    "p": float(test.pvalue),
                    "p_method": "Wald, full rank (statsmodels)",
                }
            )
        resid = y - result.fittedvalues
        fit_stats = {
            "scale": float(result.scale),
            "r_sq": 1 - np.var(resid) / np.var(y),
            "dev_expl": 1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2),
            "reml": None,
            "n_coef": len(coef),
            "residual_df": residual_df,
            "acf1_raw": acf1(resid),
            "acf1_whitened": None,
            "gcv": float(result.gcv),
            "r_sq_adjusted": False,
            "criterion": "GCV",
            "criterion_value": float(result.gcv),
            "alpha": float(alpha),
        }
        return BackendFit(
            parametric=parametric,
            smooths=smooths,
            fit_stats=fit_stats,
            curves=curves,
            differences=differences,
            version=importlib.metadata.version("statsmodels"),
            method="GLMGam (Gaussian), one shared penalty weight by GCV",
            rho=0.0,
            fit_seconds=fit_seconds,
            warnings=sorted({str(w.message) for w in caught}),
        )
