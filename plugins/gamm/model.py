"""What every GAMM backend shares: the settings, the checked and sorted data, and the
one result schema (tables, fit statistics, curves, differences, significant intervals).

The model is Beguš & Zhou's::

    response ~ factor + s(time) + s(time, by = factor) + s(time, token, bs = "fs", m = 1)

with an AR(1) correction that restarts at each token. With the default ``coding:
difference`` the factor is ordered and treatment-coded: ``s(time)`` is the reference
level's curve and each ``s(time):factor=X`` is the difference between X's curve and
the reference's. ``coding: per_level`` gives each level its own smooth instead (and
drops ``s(time)``, which would make the model rank-deficient).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from wavelens import ExtensionPoint, Params, StageError

# The GAMM backends: the built-ins, one module each under backends/, and any another
# package registers under the entry-point group. Names are checked here, at
# `wavelens validate`, without importing any backend; `wavelens plugins` lists them.
BACKEND_GROUP = "wavelens.gamm_backends"
BACKENDS_POINT = ExtensionPoint(
    "gamm_backend", BACKEND_GROUP,
    {"mgcv": "wavelens.plugins.gamm.backends.mgcv:MgcvBackend",
     "mssm": "wavelens.plugins.gamm.backends.mssm:MssmBackend",
     "native": "wavelens.plugins.gamm.backends.native:NativeBackend",
     "pygam": "wavelens.plugins.gamm.backends.fixed:PygamBackend",
     "statsmodels": "wavelens.plugins.gamm.backends.fixed:StatsmodelsBackend"},
    help="how the gamm statistic fits (a GammBackend subclass; docs/gamm.md)", label="GAMM backend",
)
BUILTIN_BACKENDS = tuple(BACKENDS_POINT.builtins)
AUTO_BACKEND = "auto"  # mgcv where it can run, else the native backend (its equal without R)


def known_backends() -> list[str]:
    """The built-in backends' names, then those of the installed entry points."""
    return BACKENDS_POINT.names()


class GammParams(Params):
    backend: str = Field(
        "auto",
        description="auto (mgcv where R and mgcv are installed, else native) | mgcv | native | mssm | "
        "pygam | statsmodels (or a registered one)",
    )
    response: str = Field("value", description="the column fitted")
    factor: str = Field("word", description="the factor column (parametric term and by-smooths)")
    reference: str | None = Field(
        None, description="the factor's reference level (default: the first, sorted)"
    )
    levels: list[str] | None = Field(None, description="fit only these levels of the factor")
    coding: Literal["difference", "per_level"] = Field(
        "difference",
        description="difference smooths of an ordered treatment-coded factor, or one smooth per level",
    )
    time: str = Field("sample", description="the time column (the smooths' variable)")
    token: str = Field("token", description="the column naming each token (random smooths, AR1 restarts)")
    layer_column: str = Field("layer", description="the column naming the layer, when the table has several")
    layers: list[str] | None = Field(None, description="fit these layers (default: every layer in the table)")
    k: int = Field(10, ge=3, description="basis size of s(time) and the by-smooths (mgcv's k)")
    random_smooths: bool = Field(True, description="include by-token random smooths (bs='fs', m=1)")
    random_k: int | None = Field(
        None, ge=3, description="basis size of the random smooths (default: the backend's)"
    )
    rho: float | Literal["estimate"] = Field(
        "estimate",
        description="AR1 coefficient, or 'estimate' (lag-1 ACF of a fit without AR1); 0 turns AR1 off",
    )
    pairs: list[tuple[str, str]] | Literal["reference"] = Field(
        "reference",
        description="difference curves a − b to compute; 'reference': every level − the reference",
    )
    grid_points: int = Field(100, ge=2, description="points of the time grid for curves and differences")
    ci: float = Field(1.96, gt=0, description="band half-width in standard errors (1.96: pointwise 95 %)")
    simultaneous: bool = Field(
        False,
        description="also simultaneous bands (itsadug's sim.ci): the multiplier of the se that the "
        "largest |deviation|/se over the grid stays under in that share of 10,000 posterior draws",
    )
    random_test: bool = Field(True, description="mgcv and native: test the random smooth (reTest); slow in R")
    accept_approximation: bool = Field(
        False,
        description="let a backend drop what it cannot fit (random smooths, AR1); the result is flagged",
    )
    threads: int = Field(1, ge=1, description="threads for the backend (mgcv's nthreads)")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value == AUTO_BACKEND:
            return value
        known = known_backends()
        if value not in known:
            close = difflib.get_close_matches(value, known, n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"no GAMM backend {value!r}{hint} (known: {', '.join(known)}; others register "
                             f"under the entry-point group {BACKEND_GROUP})")
        return value

    @field_validator("rho")
    @classmethod
    def _rho_in_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not -1 < value < 1:
            raise ValueError("rho must be between -1 and 1 (exclusive), or 'estimate'")
        return value


@dataclass
class Prepared:
    """The checked table, sorted by token then time, with standard column names
    (``y, level, time, token, start``) and what was done to it."""

    data: pd.DataFrame
    levels: list[str]  # the reference first
    factor: str
    time: str
    token: str
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.levels[0]

    def grid(self, points: int) -> np.ndarray:
        return np.linspace(self.data["time"].min(), self.data["time"].max(), points)

    def pairs(self, requested: list[tuple[str, str]] | str) -> list[tuple[str, str]]:
        if requested == "reference":
            return [(level, self.reference) for level in self.levels[1:]]
        for a, b in requested:
            for level in (a, b):
                if level not in self.levels:
                    raise StageError(
                        f"the pair ({a}, {b}) names {level!r}, which is not a level of "
                        f"{self.factor}: {', '.join(self.levels)}"
                    )
        return list(requested)

    # Term names, the same for every backend (the paper's Table 1 layout).
    def level_term(self, level: str) -> str:
        return f"{self.factor}={level}"

    def smooth_term(self, level: str | None = None) -> str:
        return f"s({self.time})" if level is None else f"s({self.time}):{self.factor}={level}"

    def random_term(self) -> str:
        return f"s({self.time},{self.token})"


def prepare(table: pd.DataFrame, params: GammParams) -> Prepared:
    """Check and sort a tidy table for fitting; every problem is a clear error."""
    columns = [params.response, params.factor, params.time, params.token]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise StageError(
            f"the table has no column {', '.join(map(repr, missing))}; it has "
            f"{', '.join(map(str, table.columns))} (set response/factor/time/token)"
        )
    data = table[columns].copy()
    data.columns = ["y", "level", "time", "token"]
    bad = data.isna().any(axis=1) | ~np.isfinite(pd.to_numeric(data["y"], errors="coerce").fillna(np.nan))
    if bad.any():
        rows = ", ".join(str(i) for i in data.index[bad][:5])
        raise StageError(
            f"{int(bad.sum())} rows have a missing or non-finite value (first rows: {rows}); "
            "remove them before fitting"
        )
    data["y"] = data["y"].astype(float)
    data["time"] = pd.to_numeric(data["time"], errors="raise").astype(float)
    data["level"] = data["level"].astype(str)
    data["token"] = data["token"].astype(str)
    notes: list[str] = []
    if params.levels is not None:
        unknown = sorted(set(params.levels) - set(data["level"]))
        if unknown:
            raise StageError(f"levels {unknown} are not in {params.factor}: {sorted(data['level'].unique())}")
        data = data[data["level"].isin(params.levels)]
    levels = sorted(data["level"].unique())
    if len(levels) < 2:
        raise StageError(
            f"{params.factor} has {len(levels)} level(s) ({', '.join(levels)}); a GAMM "
            "comparing levels needs at least 2"
        )
    reference = params.reference or levels[0]
    if reference not in levels:
        raise StageError(f"reference {reference!r} is not a level of {params.factor}: {', '.join(levels)}")
    levels = [reference] + [level for level in levels if level != reference]
    mixed = data.groupby("token")["level"].nunique()
    if (mixed > 1).any():
        raise StageError(
            f"tokens {list(mixed.index[mixed > 1][:5])} have more than one {params.factor}; "
            "each token must belong to one level"
        )
    if data.duplicated(["token", "time"]).any():
        raise StageError(
            f"some tokens have two rows at the same {params.time}; is the table one layer? "
            f"(set layers, or check {params.token})"
        )
    sizes = data.groupby("token")["time"].transform("size")
    if (sizes < 2).any():
        dropped = sorted(data.loc[sizes < 2, "token"].unique())
        notes.append(
            f"dropped {len(dropped)} token(s) with a single sample (no curve to fit): "
            f"{', '.join(dropped[:5])}{' …' if len(dropped) > 5 else ''}"
        )
        data = data[sizes >= 2]
    order = data.sort_values(["token", "time"], kind="stable").index
    if not data.index.equals(order):
        notes.append(
            f"the table was not sorted by {params.token} then {params.time}; it was sorted "
            "(AR1 needs each token's rows in time order)"
        )
        data = data.loc[order]
    data = data.reset_index(drop=True)
    data["start"] = ~data["token"].duplicated()
    return Prepared(data, levels, params.factor, params.time, params.token, notes)


def acf1(values: np.ndarray) -> float:
    """The lag-1 autocorrelation as R's ``acf`` computes it (over the whole series)."""
    x = np.asarray(values, dtype=float) - np.mean(values)
    return float(np.sum(x[1:] * x[:-1]) / np.sum(x * x))


@dataclass
class BackendFit:
    """What a backend returns; :func:`assemble` turns it into the result."""

    parametric: list[dict[str, Any]]  # term, estimate, se, stat, stat_type, df, p
    smooths: list[dict[str, Any]]  # term, kind, edf, ref_df, stat, stat_type, p, p_method
    fit_stats: dict[str, Any]
    curves: pd.DataFrame  # level, time, fit, se
    differences: pd.DataFrame  # a, b, time, diff, se
    version: str
    method: str
    rho: float
    fit_seconds: float
    rho_estimated: float | None = None
    warnings: list[str] = field(default_factory=list)


def significant_intervals(time: np.ndarray, significant: np.ndarray) -> list[list[float]]:
    """Runs of grid points where the band excludes zero, as [start, end] in time."""
    intervals, begin = [], None
    for index, flag in enumerate(significant):
        if flag and begin is None:
            begin = index
        if begin is not None and (not flag or index == len(significant) - 1):
            end = index if flag else index - 1
            intervals.append([float(time[begin]), float(time[end])])
            begin = None
    return intervals


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def assemble(
    fit: BackendFit,
    prepared: Prepared,
    params: GammParams,
    capabilities: dict[str, Any],
    approximations: list[str],
    layer: str | None,
    rho_requested: float | str,
) -> dict[str, Any]:
    """The result schema (see docs/gamm.md): JSON-ready. ``rho_requested`` is what
    the backend was asked for (a number, 0 for none, or ``"estimate"``)."""
    curves = fit.curves.copy()
    curves["lower"] = curves["fit"] - params.ci * curves["se"]
    curves["upper"] = curves["fit"] + params.ci * curves["se"]
    curves["random_excluded"] = True
    differences = fit.differences.copy()
    differences["lower"] = differences["diff"] - params.ci * differences["se"]
    differences["upper"] = differences["diff"] + params.ci * differences["se"]
    differences["sig"] = (differences["lower"] > 0) | (differences["upper"] < 0)
    simultaneous = "crit" in curves.columns
    for frame, centre in ((curves, "fit"), (differences, "diff")):
        if "crit" in frame.columns:
            frame["sim_lower"] = frame[centre] - frame["crit"] * frame["se"]
            frame["sim_upper"] = frame[centre] + frame["crit"] * frame["se"]
    if "crit" in differences.columns:
        differences["sim_sig"] = (differences["sim_lower"] > 0) | (differences["sim_upper"] < 0)
    intervals = []
    for (a, b), rows in differences.groupby(["a", "b"], sort=False):
        time_ = rows["time"].to_numpy()
        entry = {"a": a, "b": b, "intervals": significant_intervals(time_, rows["sig"].to_numpy())}
        if "sim_sig" in rows.columns:
            entry["sim_intervals"] = significant_intervals(time_, rows["sim_sig"].to_numpy())
        intervals.append(entry)
    data = prepared.data
    terms = [prepared.factor]
    if params.coding == "difference":
        terms += [f"s({prepared.time})", f"s({prepared.time}, by={prepared.factor})"]
    else:
        terms += [f"s({prepared.time}, by={prepared.factor})"]
    if capabilities.get("random_smooth_used"):
        terms.append(f"s({prepared.time}, {prepared.token}, bs='fs', m=1)")
    meta = {
        "backend": capabilities["backend"],
        "version": fit.version,
        "layer": layer,
        "response": params.response,
        "factor": prepared.factor,
        "time": prepared.time,
        "token": prepared.token,
        "formula": f"{params.response} ~ " + " + ".join(terms),
        "coding": params.coding,
        "reference": prepared.reference,
        "levels": prepared.levels,
        "method": fit.method,
        "rho": fit.rho,
        "rho_source": "estimated: lag-1 ACF of a fit without AR1"
        if rho_requested == "estimate"
        else ("none (no AR1 correction)" if rho_requested == 0 else "given"),
        "rho_estimated": fit.rho_estimated,
        "n_obs": int(len(data)),
        "n_tokens": int(data["token"].nunique()),
        "n_coef": fit.fit_stats.get("n_coef"),
        "fit_seconds": fit.fit_seconds,
        "ci": params.ci,
        "band": "pointwise and simultaneous (itsadug's sim.ci, 10,000 posterior draws)"
        if simultaneous else "pointwise",
        "warnings": fit.warnings,
        "notes": prepared.notes,
        "approximations": approximations,
        "capabilities": {k: v for k, v in capabilities.items() if k not in ("backend", "random_smooth_used")},
    }
    return {
        "meta": {k: _clean(v) for k, v in meta.items()},
        "parametric": [{k: _clean(v) for k, v in row.items()} for row in fit.parametric],
        "smooths": [{k: _clean(v) for k, v in row.items()} for row in fit.smooths],
        "fit_stats": {k: _clean(v) for k, v in fit.fit_stats.items()},
        "curves": curves.to_dict(orient="list"),
        "differences": differences.to_dict(orient="list"),
        "intervals": intervals,
    }
