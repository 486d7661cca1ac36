"""The ``native`` backend: mgcv's ``bam(method="fREML", discrete=TRUE)`` fit and
``summary`` for the probe model, in numpy and scipy, without R.

It builds the bases as mgcv does (``native_basis``), fits through the model's
block-arrowhead structure (``native_fit``) and computes the summary as mgcv's
``summary.gam`` does: t tests of the parametric terms, edf, Ref.df, F and p of the
smooths by Wood (2013) (``testStat``), and the random-effect test of the factor
smooth (``reTest``), whose reference distribution is a mixture of χ² variables with
one weight per coefficient of the factor smooth. Tokens that share their sample
times share their blocks, so those weights come in large groups of equal values,
and the mixture's eigenproblem shrinks to (basis size × fixed coefficients)
dimensions. The p-values come from Davies' algorithm (``davies``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, special

from ..model import BackendFit, GammParams, Prepared, acf1
from .base import GammBackend, _curves_from, _parametric_names, _smooth_names, _t_rows
from .davies import psum_chisq
from .native_basis import centred, discretised, factor_smooth_base, padded_rows, thin_plate
from .native_fit import Penalty, Problem, _sym, fit_like_bam, log_det_penalty, stacked_cross

MGCV_VERSION = "1.8-41"  # the mgcv whose sources this follows and whose tables the tests hold


class NativeBackend(GammBackend):
    """mgcv's ``bam(fREML, discrete=TRUE, rho=, AR.start=)`` and its summary, in
    Python: the same bases, smoothing parameters, tables and tests, checked against
    mgcv (docs/gamm.md)."""

    name = "native"
    random_smooth = True
    ar1 = True
    smooth_test = "wood2013_re"

    def available(self) -> str | None:
        return None

    def fit(
        self, prepared: Prepared, params: GammParams, rho: float | str, random: bool, log: Any
    ) -> BackendFit:
        started = time.perf_counter()
        rho_estimated = None
        if rho == "estimate":
            first = NativeModel(prepared, params, random, 0.0)
            first.fit()
            rho_estimated = acf1(first.residuals())
            rho = rho_estimated
        model = NativeModel(prepared, params, random, float(rho))
        model.fit()
        fit_seconds = time.perf_counter() - started
        summary_started = time.perf_counter()
        parametric, smooths = model.summary(random_test=params.random_test)
        summary_seconds = time.perf_counter() - summary_started
        curves, differences = _curves_from(model.design, model.beta_p, model.vp, prepared, params)
        resid = model.residuals()
        fit_stats = {
            "scale": model.scale,
            "r_sq": model.r_sq(),
            "dev_expl": model.dev_expl(),
            "reml": model.freml(),
            "r_sq_adjusted": True,
            "criterion": "fREML",
            "n_coef": model.n_coef,
            "residual_df": model.residual_df,
            "acf1_raw": acf1(resid),
            "acf1_whitened": acf1(model.whitened_residuals()),
            "summary_seconds": summary_seconds,
            "iterations": model.iterations,
        }
        fit_stats["criterion_value"] = fit_stats["reml"]
        return BackendFit(
            parametric=parametric,
            smooths=smooths,
            fit_stats=fit_stats,
            curves=curves,
            differences=differences,
            version=_version(),
            method="fREML (as mgcv's bam, discrete=TRUE), block-arrowhead Newton",
            rho=float(rho),
            rho_estimated=rho_estimated,
            fit_seconds=fit_seconds,
            warnings=model.warnings,
        )


def _version() -> str:
    import importlib.metadata

    return f"wavelens {importlib.metadata.version('wavelens')}, after mgcv {MGCV_VERSION}"


class NativeModel:
    """One fit of ``y ~ level + s(time) + s(time, by=level) + s(time, token, bs="fs",
    m=1)`` (or the per-level coding) with AR(1) errors restarting at each token."""

    def __init__(self, prepared: Prepared, params: GammParams, random: bool, rho: float) -> None:
        self.prepared, self.params, self.random, self.rho = prepared, params, random, rho
        data = prepared.data
        self.y = data["y"].to_numpy(float)
        self.time = discretised(data["time"].to_numpy(float))
        self.level = data["level"].to_numpy()
        self.start = data["start"].to_numpy(bool)
        self.token_codes, self.token_rows = _token_rows(data["token"].to_numpy())
        self.warnings: list[str] = []
        if params.coding == "difference" and random:
            # gam.side: s(time) and the fs term (whose dim mgcv leaves at 1) share "time"
            self.warnings.append("model has repeated 1-d smooths of same variable.")
        self._build()

    # --- the model ---------------------------------------------------------------
    def padded_time(self) -> np.ndarray:
        """The time column of mgcv's compressed frame for this model (discrete.mf)."""
        columns = [("time", self.time), ("level", self.level)]
        if self.params.coding != "difference":
            columns.reverse()  # s(time, by=level) meets its by variable first
        if self.random:
            columns.append(("token", self.token_codes))
        columns.append(("y", self.y))
        if self.rho != 0:
            columns.append(("(AR.start)", self.start))
        return padded_rows(columns, "time")

    def _build(self) -> None:
        prepared, params = self.prepared, self.params
        padded = self.padded_time()
        base, at_padded = thin_plate(padded, params.k)
        self.smooth, _ = centred(base, at_padded)
        levels = prepared.levels
        indicators = np.stack([(self.level == lv).astype(float) for lv in levels], axis=1)
        self.parametric_names = _parametric_names(prepared)
        columns = [np.ones(len(self.y))] + [indicators[:, j] for j in range(1, len(levels))]
        basis = self.smooth.at(self.time)
        width = basis.shape[1]
        position = len(columns)
        terms = _smooth_names(prepared, params)
        if params.coding == "difference":
            multipliers = [None, *range(1, len(levels))]
        else:
            multipliers = list(range(len(levels)))
        self.fixed_terms = []
        for (term, kind), which in zip(terms, multipliers, strict=True):
            part = basis if which is None else basis * indicators[:, [which]]
            columns.extend(part.T)
            self.fixed_terms.append((term, kind, which, slice(position, position + width)))
            position += width
        xp = np.stack(columns, axis=1)
        penalties = [Penalty(term, self.smooth.penalties[0], width - 1, block)
                     for term, _, _, block in self.fixed_terms]
        self.n_parametric = len(self.parametric_names)
        w = self._whiten
        xp_w = w(xp)
        y_w = w(self.y[:, None])[:, 0]
        self.xp = xp
        if self.random:
            # mgcv's default tp size is M + 8, and M = 1 for m = 1
            self.fs = factor_smooth_base(padded, params.random_k or 9)
            xf = self.fs.at(self.time)
            xf_w = w(xf)
            q = xf.shape[1]
            tokens = len(self.token_rows)
            xx_fp = np.empty((tokens, q, xp.shape[1]))
            xx_ff = np.empty((tokens, q, q))
            xy_f = np.empty((tokens, q))
            for t, rows in enumerate(self.token_rows):
                f = xf_w[rows]
                xx_fp[t] = f.T @ xp_w[rows]
                xx_ff[t] = f.T @ f
                xy_f[t] = f.T @ y_w[rows]
            penalties += [
                Penalty(prepared.random_term() + "1", self.fs.penalties[0], q - 1),
                Penalty(prepared.random_term() + "2", self.fs.penalties[1], 1),
            ]
            self.xf = xf
        else:
            q = 0
            xx_fp = np.zeros((0, 0, xp.shape[1]))
            xx_ff = np.zeros((0, 0, 0))
            xy_f = np.zeros((0, 0))
        self.problem = Problem(xp_w.T @ xp_w, xx_fp, xx_ff, xp_w.T @ y_w, xy_f, float(y_w @ y_w),
                               len(self.y), penalties)
        self.n_coef = xp.shape[1] + (len(self.token_rows) * q if self.random else 0)

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        """Rows of x with the AR(1) correction: each row after a token's first is
        (x_t − ρ x_{t−1}) / √(1 − ρ²); a token's first row is left as it is."""
        if self.rho == 0:
            return x
        scale = 1 / math.sqrt(1 - self.rho**2)
        out = x * scale
        out[1:] -= self.rho * scale * x[:-1]
        out[self.start] = x[self.start]
        return out

    # --- fitting -------------------------------------------------------------------
    def fit(self) -> None:
        y_var = float(np.var(self.y, ddof=1))
        log_lambda, log_phi, sol, iterations, converged = fit_like_bam(self.problem, y_var)
        if not converged:
            self.warnings.append("algorithm did not converge")
        self.log_lambda, self.iterations, self.solution = log_lambda, iterations, sol
        self.scale = math.exp(log_phi)
        self.beta_p = sol.beta_p
        self.beta_f = sol.beta_f
        self.vp = sol.schur_inv * self.scale
        self._edf()

    def _edf(self) -> None:
        sol, problem = self.solution, self.problem
        si = sol.schur_inv
        m_f = stacked_cross(sol.e, sol.s_f @ sol.e) if problem.tokens else 0
        self.term_edf, self.term_edf1 = {}, {}
        hs_p = si @ sol.s_p
        second = si @ sol.s_p @ si + (si @ m_f @ si if problem.tokens else 0)
        for term, _, _, block in self.fixed_terms:
            size = block.stop - block.start
            self.term_edf[term] = size - np.trace(hs_p[block, block])
            self.term_edf1[term] = size - np.trace(second[block, block] @ sol.s_p[block, block])
        total = self.n_parametric + sum(self.term_edf.values())
        if problem.tokens:
            f_trace = np.einsum("tqr,rq->", sol.d_inv, sol.s_f) + np.sum(si * m_f)
            self.random_edf = problem.tokens * problem.q - f_trace
            total += self.random_edf
        self.edf_total = total
        self.residual_df = problem.n - total

    # --- predictions and residuals -----------------------------------------------
    def fitted(self) -> np.ndarray:
        out = self.xp @ self.beta_p
        if self.random:
            per_row = self.beta_f[self.token_codes]
            out = out + np.sum(self.xf * per_row, axis=1)
        return out

    def residuals(self) -> np.ndarray:
        return self.y - self.fitted()

    def whitened_residuals(self) -> np.ndarray:
        return self._whiten(self.residuals()[:, None])[:, 0]

    def design(self, level: str, grid: np.ndarray) -> np.ndarray:
        """Rows of the fixed part's model matrix for ``level`` at ``grid``."""
        levels = self.prepared.levels
        basis = self.smooth.at(grid)
        row = np.zeros((len(grid), self.xp.shape[1]))
        row[:, 0] = 1
        index = levels.index(level)
        if index > 0:
            row[:, index] = 1
        for _, _, which, block in self.fixed_terms:
            if which is None or which == index:
                row[:, block] = basis
        return row

    def r_sq(self) -> float:
        n = len(self.y)
        resid = self.residuals()
        return float(1 - np.var(resid, ddof=1) * (n - 1) / (np.var(self.y, ddof=1) * self.residual_df))

    def dev_expl(self) -> float:
        null = np.sum((self.y - self.y.mean()) ** 2)
        return float((null - np.sum(self.residuals() ** 2)) / null)

    def freml(self) -> float:
        """The fREML score as mgcv reports it. Its value depends on the bases'
        parametrisation, which is mgcv's (up to column signs)."""
        problem, sol = self.problem, self.solution
        n, mp = problem.n, problem.null_dim
        log_det_s = log_det_penalty(problem, np.exp(self.log_lambda))
        reml = (sol.rss_bsb / self.scale - log_det_s + sol.log_det_h
                + (n - mp) * math.log(2 * math.pi * self.scale)) / 2
        if self.rho != 0:  # the whitening's Jacobian
            reml -= (n - int(np.sum(self.start))) * math.log(1 / math.sqrt(1 - self.rho**2))
        return float(reml)

    # --- the summary ---------------------------------------------------------------
    def summary(self, random_test: bool = True) -> tuple[list[dict], list[dict]]:
        k = self.n_parametric
        parametric = _t_rows(self.prepared, self.parametric_names, self.beta_p[:k],
                             np.sqrt(np.diag(self.vp))[:k], self.residual_df)
        smooths = []
        for term, kind, _, block in self.fixed_terms:
            xx = self.problem.xx_pp[block, block]
            r = np.linalg.cholesky(_sym(xx)).T
            rank = min(block.stop - block.start, self.term_edf1[term])
            stat, pval, ref_df = test_stat(self.beta_p[block], r, self.vp[block, block], rank,
                                           self.residual_df)
            smooths.append({"term": term, "kind": kind, "edf": float(self.term_edf[term]),
                            "ref_df": float(ref_df), "stat": float(stat / ref_df), "stat_type": "F",
                            "p": float(pval), "p_method": "wood2013 (as mgcv's testStat)"})
        if self.random:
            row = {"term": self.prepared.random_term(), "kind": "random", "edf": float(self.random_edf),
                   "ref_df": None, "stat": None, "stat_type": None, "p": None,
                   "p_method": "not tested (random_test: false)"}
            if random_test:
                stat, pval, rank = self.random_effect_test()
                row.update(ref_df=float(rank), stat=float(stat / rank), stat_type="F", p=float(pval),
                           p_method="wood2013 random effect (as mgcv's reTest)")
            smooths.append(row)
        return parametric, smooths

    def random_effect_test(self) -> tuple[float, float, int]:
        """mgcv's ``reTest`` of the factor smooth: the statistic b'Mb/φ (M the Schur
        complement of the penalised Hessian for the fs block) against a mixture of χ²₁
        with the eigenvalues of M·Ve_ff/φ as weights."""
        problem, sol = self.problem, self.solution
        a = problem.xx_pp + sol.s_p
        a_inv = linalg.inv(_sym(a))
        b_f = self.beta_f
        bx = problem.xx_fp  # B per token (q, p)
        d = problem.xx_ff + sol.s_f
        mb = np.einsum("tqr,tr->tq", d, b_f) - bx @ (a_inv @ np.einsum("tqp,tq->p", bx, b_f))
        stat = float(np.sum(b_f * mb)) / self.scale
        gamma = a_inv @ sol.s_p @ a_inv
        ev, counts = _mixture_weights(problem.xx_ff, sol.s_f, bx, a_inv, gamma)
        ev[ev < 0] = 0
        rank = int(np.sum(counts[ev > ev.max() * np.finfo(float).eps ** 0.8]))
        k = max(1, round(self.residual_df))
        pval = psum_chisq(0.0, np.r_[ev, -stat / k], df=np.r_[counts, k])
        return stat, pval, rank


def _mixture_weights(xx, s_f, bx, a_inv, gamma):
    """The mixture weights of the fs test with their multiplicities: the eigenvalues
    of the pencil (M − S_f − B Γ Bᵀ, M), M = XX + S_f − B A⁻¹ Bᵀ, which are those of
    M·Ve_ff/φ. ``xx`` holds each token's X'X block.

    Tokens with equal blocks share the eigenvectors of their block pencil
    (X'X_t, X'X_t + S_f); the low-rank terms touch only the span of B's columns within
    each shared eigenvalue, so every other direction keeps the block eigenvalue, and
    what is left is a dense problem of (basis size × fixed coefficients) dimensions.
    The weights are formed from X'X, not as 1 − (penalty share), so that weights
    that are zero come out as zeros, not as rounding noise."""
    tokens, q, p = bx.shape
    keys = {}
    groups: list[list[int]] = []
    for t in range(tokens):
        key = xx[t].tobytes()
        if key not in keys:
            keys[key] = len(groups)
            groups.append([])
        groups[keys[key]].append(t)
    omega_parts, r_parts = [], []
    values_out, counts_out = [], []
    for members in groups:
        c = np.linalg.cholesky(xx[members[0]] + s_f)
        c_inv = linalg.solve_triangular(c, np.eye(q), lower=True)
        omega, v = np.linalg.eigh(_sym(c_inv @ xx[members[0]] @ c_inv.T))
        bhat = np.einsum("qi,tqp->tip", c_inv.T @ v, bx[members])  # (n_g, q, p): V'C⁻¹B_t
        n_g = len(members)
        r_dim = min(n_g, p)
        for i in range(q):
            _, r = np.linalg.qr(bhat[:, i, :], mode="reduced")
            omega_parts.append(np.full(r_dim, omega[i]))
            r_parts.append(r[:r_dim])
            if n_g > r_dim:
                values_out.append(omega[i])
                counts_out.append(n_g - r_dim)
    r_red = np.concatenate(r_parts, axis=0)
    left = np.diag(np.concatenate(omega_parts)) - r_red @ (a_inv + gamma) @ r_red.T
    right = np.eye(len(r_red)) - r_red @ a_inv @ r_red.T
    ev = linalg.eigh(_sym(left), _sym(right), eigvals_only=True)
    values = np.concatenate([ev, np.array(values_out)])
    counts = np.concatenate([np.ones(len(ev), dtype=int), np.array(counts_out, dtype=int)])
    return values, counts


def test_stat(beta: np.ndarray, r: np.ndarray, v: np.ndarray, rank: float, res_df: float):
    """mgcv's ``testStat`` (type 0, scale estimated): Wood's (2013) statistic with a
    rank-``rank`` pseudo-inverse whose fractional part is split over two eigen
    directions, and its p-value; returns (statistic, p, rank)."""
    rv = _sym(r @ v @ r.T)
    values, vectors = np.linalg.eigh(rv)
    values, vectors = values[::-1], vectors[:, ::-1]
    signs = np.sign(vectors[0])
    signs[signs == 0] = 1
    vectors = vectors * signs
    k = max(0, math.floor(rank))
    nu = abs(rank - k)
    k1 = k + 1 if nu > 0 else k
    r_est = int(np.sum(values > values.max() * np.finfo(float).eps ** 0.9))
    if r_est < k1:
        k1 = k = r_est
        nu = 0
        rank = r_est
    vec = vectors[:, :k1].copy()
    if nu > 0 and k > 0:
        if k > 1:
            vec[:, : k - 1] = vec[:, : k - 1] / np.sqrt(values[: k - 1])
        b12 = math.sqrt(max(0.5 * nu * (1 - nu), 0))
        b = np.array([[1, b12], [b12, nu]])
        ev = np.diag(values[k - 1 : k1] ** -0.5)
        b = ev @ b @ ev
        eb_values, eb_vectors = np.linalg.eigh(b)
        rb = eb_vectors @ np.diag(np.sqrt(eb_values)) @ eb_vectors.T
        vec1 = vec.copy()
        vec1[:, k - 1 : k1] = (rb @ np.diag([-1, 1]) @ vec[:, k - 1 : k1].T).T
        vec[:, k - 1 : k1] = (rb @ vec[:, k - 1 : k1].T).T
    else:
        vec = vec * np.sqrt(1 / values[0]) if k == 0 else vec / np.sqrt(values[:k])
        vec1 = vec
        if k == 1:
            rank = 1
    rp = r @ beta
    d = float(np.sum((vec.T @ rp) ** 2))
    d1 = float(np.sum((vec1.T @ rp) ** 2))
    rank1 = rank
    if nu > 0:
        if k1 == 1:
            rank1 = 1
            val = np.ones(1)
        else:
            val = np.ones(k1)
            rp_ = nu + 1
            val[k - 1] = (rp_ + math.sqrt(rp_ * (2 - rp_))) / 2
            val[k1 - 1] = rp_ - val[k - 1]
        k0 = max(1, round(res_df))
        df = np.r_[np.ones(len(val)), k0]
        pval = (psum_chisq(0.0, np.r_[val, -d / k0], df=df)
                + psum_chisq(0.0, np.r_[val, -d1 / k0], df=df)) / 2
    else:
        pval = 2.0
    if pval > 1:
        pval = (special.fdtrc(rank1, res_df, d / rank1) + special.fdtrc(rank1, res_df, d1 / rank1)) / 2
    return d, min(1.0, pval), rank


def _token_rows(tokens: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes 0… per token in order of first appearance, and each token's rows."""
    codes, first = pd.factorize(tokens)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(first) + 1))
    return codes, [order[bounds[i] : bounds[i + 1]] for i in range(len(first))]
