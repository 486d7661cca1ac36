"""The native backend's numerics: mgcv's ``bam(method="fREML", discrete=TRUE, rho=,
AR.start=)`` for the probe model, solved through the model's block-arrowhead
structure.

The random smooths give every token a block of its own: with the AR(1) correction
restarting at each token, the penalised normal equations

    H = X'X + S_λ = | A   Bᵀ |      A: the fixed part (parametric and smooths, ~80)
                    | B   D  |      D: one q×q block per token (the fs coefficients)

have a dense corner ``A``, a block-diagonal ``D`` and a border ``B``. Solves,
log-determinants and the traces REML needs all go through the Schur complement
``A − Bᵀ D⁻¹ B``, at O(tokens · q² · p) instead of a dense factorisation of H.

The smoothing parameters and the scale come from mgcv's own iteration, replayed
step for step (:func:`fit_like_bam`): Newton's method on (log λ, log φ) with exact
first and second derivatives of the restricted likelihood, mgcv's start, step
control and stopping rule. Where the criterion is flat (a smooth penalised to a
straight line) the stopping point depends on the path; following mgcv's path gives
mgcv's numbers there too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg


@dataclass
class Penalty:
    """One smoothing parameter's penalty: on a slice of the fixed coefficients
    (``block``), or on every token's fs block (``block`` is None)."""

    name: str
    matrix: np.ndarray
    rank: int
    block: slice | None = None


@dataclass
class Problem:
    """The whitened model in block-arrowhead form."""

    xx_pp: np.ndarray  # (p, p)
    xx_fp: np.ndarray  # (tokens, q, p)
    xx_ff: np.ndarray  # (tokens, q, q)
    xy_p: np.ndarray  # (p,)
    xy_f: np.ndarray  # (tokens, q)
    yy: float
    n: int
    penalties: list[Penalty]

    @property
    def p(self) -> int:
        return self.xx_pp.shape[0]

    @property
    def q(self) -> int:
        return self.xx_ff.shape[1] if self.xx_ff.size else 0

    @property
    def tokens(self) -> int:
        return self.xx_ff.shape[0]

    @property
    def null_dim(self) -> int:
        """Mp: coefficients no penalty reaches."""
        return self.p + self.tokens * self.q - sum(
            pen.rank * (1 if pen.block is not None else self.tokens) for pen in self.penalties
        )


@dataclass
class Solution:
    """H factorised at one set of smoothing parameters, and what follows from it."""

    s_p: np.ndarray  # the fixed part's total penalty
    s_f: np.ndarray  # each token's fs penalty (q, q)
    d_inv: np.ndarray  # (tokens, q, q)
    e: np.ndarray  # D⁻¹B per token (tokens, q, p)
    schur_inv: np.ndarray  # (p, p)
    beta_p: np.ndarray
    beta_f: np.ndarray
    log_det_h: float
    rss_bsb: float


def _sym(a: np.ndarray) -> np.ndarray:
    return (a + np.swapaxes(a, -1, -2)) / 2


def solve(problem: Problem, lam: np.ndarray) -> Solution:
    """β̂, H⁻¹'s blocks and log|H| at smoothing parameters ``lam``."""
    p, q = problem.p, problem.q
    s_p = np.zeros((p, p))
    s_f = np.zeros((q, q))
    for value, pen in zip(lam, problem.penalties, strict=True):
        if pen.block is None:
            s_f += value * pen.matrix
        else:
            s_p[pen.block, pen.block] += value * pen.matrix
    a = problem.xx_pp + s_p
    if problem.tokens:
        d = problem.xx_ff + s_f
        chol = np.linalg.cholesky(d)
        log_det_d = 2 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)))
        eye = np.broadcast_to(np.eye(q), d.shape)
        chol_inv = np.linalg.solve(chol, eye)
        d_inv = np.swapaxes(chol_inv, 1, 2) @ chol_inv
        e = d_inv @ problem.xx_fp
        schur = a - np.einsum("tqp,tqr->pr", problem.xx_fp, e)
        rhs = problem.xy_p - np.einsum("tqp,tq->p", e, problem.xy_f)
    else:
        d_inv = np.zeros((0, q, q))
        e = np.zeros((0, q, p))
        log_det_d = 0.0
        schur = a
        rhs = problem.xy_p
    schur = _sym(schur)
    factor = linalg.cho_factor(schur)
    schur_inv = linalg.cho_solve(factor, np.eye(p))
    beta_p = linalg.cho_solve(factor, rhs)
    if problem.tokens:
        beta_f = np.einsum("tqr,tr->tq", d_inv, problem.xy_f - problem.xx_fp @ beta_p)
    else:
        beta_f = np.zeros((0, q))
    log_det_h = log_det_d + 2 * np.sum(np.log(np.diag(factor[0])))
    rss_bsb = problem.yy - beta_p @ problem.xy_p - np.sum(beta_f * problem.xy_f)
    return Solution(s_p, s_f, d_inv, e, _sym(schur_inv), beta_p, beta_f, log_det_h, rss_bsb)


def apply_h_inv(sol: Solution, problem: Problem, g_p: np.ndarray, g_f: np.ndarray):
    """H⁻¹ [g_p; g_f] through the Schur complement."""
    if problem.tokens:
        z_p = sol.schur_inv @ (g_p - np.einsum("tqp,tq->p", sol.e, g_f))
        z_f = np.einsum("tqr,tr->tq", sol.d_inv, g_f) - sol.e @ z_p
    else:
        z_p, z_f = sol.schur_inv @ g_p, np.zeros_like(g_f)
    return z_p, z_f


def _penalty_times(pen: Penalty, value: float, beta_p: np.ndarray, beta_f: np.ndarray, p: int):
    g_p = np.zeros(p)
    g_f = np.zeros_like(beta_f)
    if pen.block is None:
        g_f = value * beta_f @ pen.matrix.T
    else:
        g_p[pen.block] = value * pen.matrix @ beta_p[pen.block]
    return g_p, g_f


def reml_derivatives(problem: Problem, rho: np.ndarray, log_phi: float):
    """What mgcv's ``Sl.fitChol`` computes at log λ = ``rho`` and log φ = ``log_phi``:
    the gradient and Hessian of the restricted likelihood with respect to
    (log λ, log φ), and the solution."""
    lam = np.exp(rho)
    sol = solve(problem, lam)
    phi = math.exp(log_phi)
    pens = problem.penalties
    m = len(pens)
    p = problem.p
    counts = np.array([pen.rank * (1 if pen.block is not None else problem.tokens) for pen in pens])
    # λ_j S_j β and H⁻¹ λ_j S_j β for each penalty
    g = [_penalty_times(pen, lam[j], sol.beta_p, sol.beta_f, p) for j, pen in enumerate(pens)]
    z = [apply_h_inv(sol, problem, gp, gf) for gp, gf in g]
    d1 = np.array([gp @ sol.beta_p + np.sum(gf * sol.beta_f) for gp, gf in g])  # λ_j β'S_jβ
    bsb2 = np.array([[g[j][0] @ z[k][0] + np.sum(g[j][1] * z[k][1]) for k in range(m)] for j in range(m)])
    scaled = []
    for j, pen in enumerate(pens):
        if pen.block is None:
            scaled.append(("f", lam[j] * pen.matrix))
        else:
            full = np.zeros((p, p))
            full[pen.block, pen.block] = lam[j] * pen.matrix
            scaled.append(("p", full))
    # per f-penalty: S_a E_t, and M_a = Σ_t E_tᵀ S_a E_t
    se, m_f = {}, {}
    for j, (kind, mat) in enumerate(scaled):
        if kind == "f":
            se[j] = mat @ sol.e
            m_f[j] = stacked_cross(sol.e, se[j])
    tr1 = np.empty(m)  # tr(H⁻¹ λ_j S_j)
    for j, (kind, mat) in enumerate(scaled):
        if kind == "p":
            tr1[j] = np.sum(sol.schur_inv * mat)
        else:
            tr1[j] = np.einsum("tqr,rq->", sol.d_inv, mat) + np.sum(sol.schur_inv * m_f[j])
    tr2 = np.empty((m, m))  # tr(H⁻¹ λ_j S_j H⁻¹ λ_k S_k)
    si = sol.schur_inv
    si_s = {j: si @ (mat if kind == "p" else m_f[j]) for j, (kind, mat) in enumerate(scaled)}
    for j, (kj, mj) in enumerate(scaled):
        for k in range(j, m):
            kk, mk = scaled[k]
            t = np.sum(si_s[j] * si_s[k].T)
            if kj == "f" and kk == "f":
                t += np.einsum("tab,tba->", sol.d_inv @ mj, sol.d_inv @ mk)
                t += 2 * np.sum(si * stacked_cross(se[j], sol.d_inv @ se[k]))
            tr2[j, k] = tr2[k, j] = t
    dev = sol.rss_bsb
    grad = np.empty(m + 1)
    grad[:m] = (tr1 - counts + d1 / phi) / 2
    grad[m] = (-dev / phi + problem.n - problem.null_dim) / 2
    hess = np.empty((m + 1, m + 1))
    hess[:m, :m] = (np.diag(tr1) - tr2 + (np.diag(d1) - 2 * bsb2) / phi) / 2
    hess[:m, m] = hess[m, :m] = -d1 / (2 * phi)
    hess[m, m] = dev / (2 * phi)
    return grad, hess, sol


def log_det_penalty(problem: Problem, lam: np.ndarray) -> float:
    """log|S_λ|₊, the penalties being on disjoint coefficients."""
    total = 0.0
    for value, pen in zip(lam, problem.penalties, strict=True):
        ev = np.linalg.eigvalsh(pen.matrix)
        ev = ev[ev > ev.max() * np.finfo(float).eps ** 0.8]
        copies = 1 if pen.block is not None else problem.tokens
        total += copies * (len(ev) * math.log(value) + float(np.sum(np.log(ev))))
    return total


def newton_step(grad: np.ndarray, hess: np.ndarray, tol: float) -> np.ndarray:
    """``Sl.fitChol``'s step: parameters whose gradient and curvature are both below
    ``tol`` stay put; the others take a Newton step on the Hessian with its
    eigenvalues made positive, no component longer than 4."""
    moving = (np.abs(grad) > tol) | (np.abs(np.diag(hess)) > tol)
    step = np.zeros_like(grad)
    if not moving.any():
        return step
    h = hess[np.ix_(moving, moving)]
    values, vectors = np.linalg.eigh(h)
    values = np.abs(values)
    values = np.maximum(values, values.max() * np.finfo(float).eps ** 0.5)
    step[moving] = -vectors @ ((vectors.T @ grad[moving]) / values)
    largest = np.max(np.abs(step))
    if largest > 4:
        step *= 4 / largest
    return step


def stacked_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_t a_tᵀ b_t for stacks of (q, p) blocks."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def initial_log_lambda(problem: Problem) -> np.ndarray:
    """mgcv's ``initial.sp``: each λ so that its penalty's diagonal is as large as
    X'X's over the coefficients it penalises, then all scaled by powers of 10 until
    the penalised share is about 0.4."""
    diag_p = np.diag(problem.xx_pp)
    diag_f = np.diagonal(problem.xx_ff, axis1=1, axis2=2)
    start = []
    xx_list, ss_list = [], []
    for pen in problem.penalties:
        s_diag = np.diag(pen.matrix)
        on = s_diag > np.finfo(float).eps ** 0.8 * np.max(np.abs(pen.matrix))
        if pen.block is None:
            xx = diag_f[:, on].ravel()
            ss = np.tile(s_diag[on], problem.tokens)
        else:
            xx = diag_p[pen.block][on]
            ss = s_diag[on]
        start.append(np.mean(xx) / np.mean(ss))
        xx_list.append(xx)
        ss_list.append(ss)
    lam = np.array(start)
    xx_all = np.concatenate(xx_list)
    ss_all = np.concatenate([lam[j] * ss for j, ss in enumerate(ss_list)])
    keep = (ss_all > 0) & (xx_all > 0)
    xx_all, ss_all = xx_all[keep], ss_all[keep]
    while np.mean(xx_all / (xx_all + ss_all)) > 0.4:
        lam, ss_all = lam * 10, ss_all * 10
    while np.mean(xx_all / (xx_all + ss_all)) < 0.4:
        lam, ss_all = lam / 10, ss_all / 10
    return np.log(lam)


def fit_like_bam(problem: Problem, y_var: float, max_iter: int = 200, epsilon: float = 1e-7):
    """mgcv's fREML iteration for an additive model (``bgam.fitd``), step for step:
    Newton on (log λ, log φ) from ``initial.sp`` and log φ = log(0.05 · var(y)),
    a step halved while the gradient at its end still points along it, and stopped
    when the penalised deviance changes by less than ``epsilon`` relative and log φ's
    step is small. Following the iteration rather than optimising to the end is what
    makes the smoothing parameters, and so every table, equal to mgcv's where the
    criterion is flat (a smooth penalised to a line)."""
    m = len(problem.penalties)
    lsp0 = np.r_[initial_log_lambda(problem), math.log(y_var * 0.05)]
    nstep = np.zeros(m + 1)
    reml = 0.0  # mgcv's first deviance: the response fitted by itself
    dev = devold = 0.0
    coef_dev = None
    iterations = 0
    converged = False
    for iterations in range(1, max_iter + 1):
        devold = dev
        dev = 0.0 if coef_dev is None else coef_dev
        if iterations > 2 and abs(dev - devold) / (0.1 + abs(dev)) < epsilon and (
            abs(nstep[m]) < epsilon * (abs(lsp0[m]) + 1)
        ):
            converged = True
            break
        tol = abs(reml) * np.finfo(float).eps ** 0.5
        while True:
            lsp = lsp0 + nstep
            grad, hess, sol = reml_derivatives(problem, lsp[:m], lsp[m])
            if np.max(nstep) == 0:  # mgcv's test, max not max |.|
                nstep = newton_step(grad, hess, tol)
                lsp0 = lsp
                break
            if np.sum(grad * nstep) > dev * 1e-7:
                nstep = nstep / 2
            else:
                nstep = newton_step(grad, hess, tol)
                lsp0 = lsp
                break
        log_phi = lsp[m]
        coef_dev = problem.yy - sol.beta_p @ problem.xy_p - np.sum(sol.beta_f * problem.xy_f)
        reml = (dev / math.exp(log_phi) - log_det_penalty(problem, np.exp(lsp[:m])) + sol.log_det_h) / 2
    return lsp0[:m], lsp0[m], sol, iterations, converged
