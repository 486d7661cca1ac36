"""mgcv's own tables for simulated probe tables, kept small, to check the native
backend against without R.

Each case is a table from :func:`gamm_data.simulate` (fixed by its seed) and the
gamm settings; the stored result is what the ``mgcv`` backend (R's mgcv through
``Rscript``) gave: the parametric and smooth tables, curves and differences on a
coarse grid, and the fit's statistics.

    python tests/gamm_reference.py            # refit every case with R, rewrite the file
    python tests/gamm_reference.py ar1 noisy  # only these cases

The file records R's and mgcv's versions; tests compare against it with the
tolerances each case declares (docs/gamm.md, "The native backend", says why some
are wider than 1e-6).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from gamm_data import simulate  # noqa: E402

STORE = Path(__file__).parent / "gamm_reference" / "mgcv.json"
GRID_POINTS = 16  # the sample times 1 … 16 themselves

# Ref.df of the fs term counts the mixture weights above eps^0.8 of the largest. Where
# X'X is singular (16 samples per token), one weight per word is zero in exact
# arithmetic, and rounding lifts some of them over that line, more of them in mgcv's
# computation than in ours: the counts differ by up to 6 in 540 here, and F =
# statistic / Ref.df by as much; the statistic itself and p agree.
RANK_NOISE = {"random_ref_df": 1.5e-2, "random_stat": 1.5e-2}

# name: simulate() arguments, gamm settings, and the tolerances (relative, with an
# absolute floor of 1e-9) per quantity where the default 1e-6 does not hold.
CASES: dict[str, dict[str, Any]] = {
    "ar1": {"data": {"n_tokens": 60, "seed": 1}, "params": {"rho": 0.5}},
    "estimate": {
        "data": {"n_tokens": 60, "seed": 2},
        "params": {"rho": "estimate"},
        # Ref.df of the fs term counts mixture weights above eps^0.8 of the largest; a
        # few are zero in exact arithmetic, and mgcv's rounding lifts some above it.
        "tolerance": RANK_NOISE,
    },
    "no_ar": {"data": {"n_tokens": 60, "seed": 3}, "params": {"rho": 0.0}},
    "per_level": {
        "data": {"n_tokens": 60, "seed": 4},
        "params": {"rho": 0.4, "coding": "per_level"},
        "tolerance": RANK_NOISE,
    },
    "random_k": {"data": {"n_tokens": 80, "seed": 6}, "params": {"rho": 0.5, "random_k": 6}},
    "noisy": {
        "data": {"n_tokens": 100, "seed": 7, "noise_sd": 0.6},
        "params": {"rho": "estimate"},
        # X'X is singular (16 samples cannot separate every fs and by-smooth column);
        # mgcv's smooth tests use its pivoted Cholesky factor, whose unfactored
        # trailing block differs from X'X by ~1e-5 relative.
        "tolerance": {"smooth_stat": 5e-4, "smooth_p": 5e-4} | RANK_NOISE,
    },
    "weak_random": {  # no token effects: the fs test's p is away from 0
        "data": {"n_tokens": 80, "seed": 9, "noise_sd": 0.3, "intercept_sd": 0.0, "slope_sd": 0.0},
        "params": {"rho": 0.3},
        "tolerance": RANK_NOISE,
    },
    "no_random": {  # without the fs term X'X has full rank
        "data": {"n_tokens": 60, "seed": 1},
        "params": {"rho": 0.5, "random_smooths": False},
    },
    "tokens_200": {"data": {"n_tokens": 200, "seed": 8}, "params": {"rho": 0.6}},
}


def params_for(case: dict[str, Any], backend: str):
    from wavelens.plugins.gamm.model import GammParams

    return GammParams(backend=backend, grid_points=GRID_POINTS, **case["params"])


def fit_case(name: str, backend: str):
    """(prepared, BackendFit) of one case with one backend."""
    from wavelens.plugins.gamm.backends import backend_named
    from wavelens.plugins.gamm.model import prepare

    case = CASES[name]
    table, _ = simulate(**case["data"])
    params = params_for(case, backend)
    prepared = prepare(table, params)
    fit = backend_named(backend).fit(prepared, params, params.rho, params.random_smooths,
                                     logging.getLogger("gamm_reference"))
    return prepared, fit


def summary(fit) -> dict[str, Any]:
    """The parts of a fit that are compared, as plain lists."""
    return {
        "parametric": {k: [row[k] for row in fit.parametric]
                       for k in ("term", "estimate", "se", "stat", "p")},
        "smooths": {k: [row[k] for row in fit.smooths] for k in ("term", "edf", "ref_df", "stat", "p")},
        "curves": {k: fit.curves[k].tolist() for k in ("level", "time", "fit", "se")},
        "differences": {k: fit.differences[k].tolist() for k in ("a", "b", "diff", "se")},
        "fit": {k: fit.fit_stats[k] for k in ("scale", "r_sq", "dev_expl", "reml", "residual_df")}
        | {"rho": fit.rho},
        "warnings": list(fit.warnings),
    }


def main(names: list[str]) -> None:
    stored = json.loads(STORE.read_text()) if STORE.exists() else {"cases": {}}
    for name in names or list(CASES):
        print(f"fitting {name} with mgcv …", flush=True)
        _, fit = fit_case(name, "mgcv")
        stored["cases"][name] = summary(fit)
        stored["mgcv"] = fit.version
    STORE.parent.mkdir(exist_ok=True)
    STORE.write_text(json.dumps(stored, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {STORE} ({STORE.stat().st_size / 1e3:.0f} kB)")


def relative_gap(a, b, floor: float = 1e-9) -> float:
    """max |a − b| / max(|b|, floor) over paired values; NaN pairs count as equal."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = np.isnan(a) & np.isnan(b)
    gap = np.abs(a - b) / np.maximum(np.abs(b), floor)
    return float(np.max(np.where(both, 0.0, gap), initial=0.0))


if __name__ == "__main__":
    main(sys.argv[1:])
