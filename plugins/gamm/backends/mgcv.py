"""The ``mgcv`` backend: R's mgcv through ``Rscript`` (``mgcv_fit.R`` beside this
file), the reference the other backends are checked against."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from wavelens import StageError, write_csv

from ..model import BackendFit, GammParams, Prepared
from .base import GammBackend, band_level

R_INSTALL = "install R and mgcv: sudo apt-get install r-base-core r-cran-mgcv (or make setup)"


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
                "simultaneous": band_level(params.ci) if params.simultaneous else 0,
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
            "r_sq_adjusted": True,  # summary.gam's r.sq
            "criterion": "fREML",
            "criterion_value": number("reml"),
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
