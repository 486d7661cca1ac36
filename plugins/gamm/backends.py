"""GAMM backends: each declares what it can fit and returns a :class:`BackendFit`.

Built in: ``mgcv`` (R, through ``Rscript``; the reference), ``mssm`` (Python, with
factor smooths, AR1 and REML), ``pygam`` and ``statsmodels`` (the fixed part only).
Another package can add a backend under the entry-point group
``wavelens.gamm_backends`` (a :class:`GammBackend` subclass); see docs/gamm.md.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from wavelens import StageError, write_csv

from .model import BACKEND_GROUP, BackendFit, GammParams, Prepared, acf1

R_INSTALL = "install R and mgcv: sudo apt-get install r-base-core r-cran-mgcv (or make setup)"


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


# -- mgcv ------------------------------------------------------------------------------


class MgcvBackend(GammBackend):
    """R's mgcv: ``bam(method='fREML', discrete=TRUE, rho=, AR.start=)`` in an
    ``Rscript`` subprocess (CSV in, CSV out); curves and differences as itsadug's
    ``get_difference`` computes them."""

    name = "mgcv"
    random_smooth = True
    ar1 = True
    smooth_test = "wood2013_re"
    script = Path(__file__).with_name("mgcv_fit.R")

    def available(self) -> str | None:
        if shutil.which("Rscript") is None:
            return f"Rscript is not on the PATH; {R_INSTALL}"
        check = subprocess.run(["Rscript", "-e", "library(mgcv)"], capture_output=True, text=True)
        if check.returncode != 0:
            return f"R cannot load mgcv ({check.stderr.strip().splitlines()[-1:]}); {R_INSTALL}"
        return None

    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        grid = prepared.grid(params.grid_points)
        pairs = prepared.pairs(params.pairs)
        with tempfile.TemporaryDirectory(prefix="wavelens-mgcv-") as folder:
            folder = Path(folder)
            prepared.data.assign(start=prepared.data["start"].map({True: "TRUE", False: "FALSE"})).to_csv(
                folder / "data.csv", index=False
            )
            config = {
                "data": folder / "data.csv",
                "out": folder,
                "levels": "\t".join(prepared.levels),
                "coding": "difference" if params.coding == "difference" else "per_level",
                "k": params.k,
                "random": "true" if random else "false",
                "random_k": params.random_k or 0,
                "rho_mode": "estimate" if rho == "estimate" else ("none" if rho == 0 else "fixed"),
                "rho": 0 if rho == "estimate" else rho,
                "grid": "\t".join(repr(float(g)) for g in grid),
                "pairs": "\t".join(f"{a};{b}" for a, b in pairs),
                "re_test": "true" if params.random_test else "false",
                "threads": params.threads,
            }
            write_csv(folder / "config.csv", [{"key": k, "value": str(v)} for k, v in config.items()])
            started = time.perf_counter()
            done = subprocess.run(
                ["Rscript", "--vanilla", str(self.script), str(folder / "config.csv")],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise StageError(f"mgcv failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
            log.info("mgcv: fitted in %.1f s", time.perf_counter() - started)
            return self._read(folder, prepared, params)

    def _read(self, folder: Path, prepared: Prepared, params: GammParams) -> BackendFit:
        fit_csv = pd.read_csv(folder / "fit.csv", dtype=str).set_index("key")["value"]

        def number(key: str) -> float | None:
            value = fit_csv.get(key)
            return None if value is None or value in ("NA", "") else float(value)

        parametric = pd.read_csv(folder / "parametric.csv")
        names = {"(Intercept)": "(Intercept)"} | {
            f"level{lv}": prepared.level_term(lv) for lv in prepared.levels
        }
        rows = [
            {
                "term": names.get(r.term, r.term),
                "estimate": r.estimate,
                "se": r.se,
                "stat": r.stat,
                "stat_type": "t",
                "df": r.df,
                "p": r.p,
            }
            for r in parametric.itertuples()
        ]
        smooth_names = {
            "s(time)": (prepared.smooth_term(), "main"),
            "s(time,token)": (prepared.random_term(), "random"),
        }
        kind = "difference" if params.coding == "difference" else "per_level"
        smooth_names |= {f"s(time):level{lv}": (prepared.smooth_term(lv), kind) for lv in prepared.levels}
        smooths = []
        for r in pd.read_csv(folder / "smooths.csv").itertuples():
            term, term_kind = smooth_names.get(r.term, (r.term, "other"))
            smooths.append(
                {
                    "term": term,
                    "kind": term_kind,
                    "edf": r.edf,
                    "ref_df": r.ref_df,
                    "stat": r.stat,
                    "stat_type": "F",
                    "p": r.p,
                    "p_method": ("wood2013_re" if pd.notna(r.p) else "not tested (random_test: false)")
                    if term_kind == "random" else "wood2013",
                }
            )
        curves = pd.read_csv(folder / "curves.csv", dtype={"level": str})
        differences = pd.read_csv(folder / "differences.csv", dtype={"a": str, "b": str})
        warnings_text = (folder / "warnings.txt").read_text().strip()
        fit_stats = {
            "scale": number("scale"),
            "r_sq": number("r_sq"),
            "dev_expl": number("dev_expl"),
            "reml": number("reml"),
            "n_coef": int(number("n_coef")),
            "residual_df": number("residual_df"),
            "acf1_raw": number("acf1_raw"),
            "acf1_whitened": number("acf1_whitened"),
            "summary_seconds": number("summary_seconds"),
        }
        return BackendFit(
            parametric=rows,
            smooths=smooths,
            fit_stats=fit_stats,
            curves=curves,
            differences=differences,
            version=f"{fit_csv['mgcv_version']}, {fit_csv['r_version']}",
            method="bam, fREML, discrete=TRUE",
            rho=float(number("rho")),
            rho_estimated=number("rho_estimated"),
            fit_seconds=float(number("fit_seconds")),
            warnings=warnings_text.splitlines() if warnings_text else [],
        )


# -- mssm ------------------------------------------------------------------------------


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
            "n_coef": len(coef),
            "residual_df": residual_df,
            "acf1_raw": acf1(resid),
            "acf1_whitened": acf1(whitened),
            "summary_seconds": p_seconds,
        }
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


def _with_indicators(frame: pd.DataFrame, prepared: Prepared) -> pd.DataFrame:
    """0/1 columns is_1 … is_{L−1}: the non-reference levels."""
    frame = frame.copy()
    for index, level in enumerate(prepared.levels[1:], start=1):
        frame[f"is_{index}"] = (frame["level"] == level).astype(float)
    return frame


def _reml(model, warnings_seen: list[str]) -> float | None:
    try:
        return float(model.get_reml())
    except ValueError as error:  # mssm cannot always evaluate it after the fit
        warnings_seen.append(f"mssm could not compute the REML score: {str(error)[:120]}")
        return None


BACKENDS: dict[str, type[GammBackend]] = {"mgcv": MgcvBackend, "mssm": MssmBackend}


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


# -- the fixed part only: pygam and statsmodels ------------------------------------------


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
        base = UnivariateBSplines(time_values, df=params.k, degree=3, constraints="center", variable_name="t")
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


BACKENDS.update({"pygam": PygamBackend, "statsmodels": StatsmodelsBackend})
