"""The smooth bases of the native backend, built as mgcv builds them for
``bam(..., discrete=TRUE)``.

Three facts of mgcv decide the fit, so they are reproduced here rather than
approximated:

- **the thin-plate regression spline** (``bs="tp"``): the radial basis at the unique
  covariate values, truncated to the ``k`` eigenvectors of largest magnitude, the
  polynomial null space absorbed by Householder rotations, columns scaled to unit
  root mean square (Wood 2003; mgcv's ``tprs_setup``);
- **the data it is built on**: with ``discrete=TRUE`` mgcv builds every smooth on a
  compressed frame in which each variable's unique values are shuffled and then
  padded, by sampling with replacement, to the length of the longest variable
  (``discrete.mf``, with R's generator seeded at 8547). The sum-to-zero constraint
  and the split of a factor smooth's penalty use those padded rows, not the data;
- **the factor smooth** (``bs="fs"``): its basis re-parameterised so that the
  wiggliness penalty is the identity and the null space has a penalty of its own.

R's Mersenne-Twister, its seeding and its ``sample`` (rejection sampling, R ≥ 3.6)
are reimplemented in :class:`RRandom` to find the padded rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# R's unif_rand scales a 32-bit draw by 2^-32 and keeps it inside (0, 1).
_R_UNIT = 2.3283064365386963e-10
_R_FIXUP = 2.328306437080797e-10


class RRandom:
    """R's default generator (Mersenne-Twister, ``sample.kind="Rejection"``) after
    ``set.seed(seed)``: enough of it to replay mgcv's ``discrete.mf``."""

    def __init__(self, seed: int) -> None:
        state = seed & 0xFFFFFFFF
        for _ in range(50):  # R's initial scrambling of the seed
            state = (69069 * state + 1) & 0xFFFFFFFF
        key = np.empty(625, dtype=np.uint32)
        for j in range(625):
            state = (69069 * state + 1) & 0xFFFFFFFF
            key[j] = state
        self._bits = np.random.MT19937()
        # key[0] is R's position slot; set.seed leaves the position at the end (624).
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key[1:], "pos": 624}}

    def unif(self) -> float:
        """One ``unif_rand()``."""
        value = float(self._bits.random_raw()) * _R_UNIT
        if value <= 0.0:
            return 0.5 * _R_FIXUP
        if 1.0 - value <= 0.0:
            return 1.0 - 0.5 * _R_FIXUP
        return value

    def index(self, n: int) -> int:
        """``R_unif_index(n)``: a uniform integer in [0, n), by rejection from the
        next power of two, 16 bits per draw."""
        if n <= 0:
            return 0
        bits = math.ceil(math.log2(n))  # 0 for n = 1, which still takes one draw
        while True:
            value = 0
            for _ in range(0, bits + 1, 16):
                value = 65536 * value + math.floor(self.unif() * 65536)
            value &= (1 << bits) - 1
            if value < n:
                return value

    def permutation(self, n: int) -> list[int]:
        """``sample(1:n, n)`` less one: 0-based."""
        pool = list(range(n))
        out = []
        for remaining in range(n, 0, -1):
            j = self.index(remaining)
            out.append(pool[j])
            pool[j] = pool[remaining - 1]
        return out

    def draws(self, n: int, size: int) -> np.ndarray:
        """``sample(n, size, replace=TRUE)`` less one: 0-based."""
        return np.array([self.index(n) for _ in range(size)], dtype=int)


DISCRETE_LIMIT = 1000  # compress.df's bins for one numeric variable


def discretised(values: np.ndarray) -> np.ndarray:
    """The covariate as ``discrete=TRUE`` fits it: unchanged with at most 1,000
    unique values, else rounded onto 1,000 equally spaced points of its range."""
    values = np.asarray(values, dtype=float)
    if len(np.unique(values)) <= DISCRETE_LIMIT:
        return values
    low, high = values.min(), values.max()
    grid = np.linspace(low, high, DISCRETE_LIMIT)
    step = grid[1] - grid[0]
    return grid[np.round((values - low) / step).astype(int)]


def padded_rows(columns: list[tuple[str, np.ndarray]], of: str) -> np.ndarray:
    """The values of variable ``of`` in mgcv's compressed frame: its unique values
    shuffled, then padded by sampling with replacement to the length of the longest.

    ``columns`` are the model's variables in the order ``discrete.mf`` meets them
    (the smooths' ``by`` variables before their covariates, then the parametric
    model frame, response first), each once. Numeric variables are compressed as
    mgcv compresses them (:func:`discretised`), the response included.
    """
    rng = RRandom(8547)
    shuffled: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for name, values in columns:
        if np.asarray(values).dtype.kind == "f":
            values = discretised(values)  # compress.df rounds a numeric variable too
        unique = np.unique(values)  # sorted, as uniquecombs(ordered=TRUE)
        counts[name] = len(unique)
        if len(unique) == len(values):
            shuffled[name] = np.asarray(values)  # all distinct: kept in data order, no draw
            continue
        order = rng.permutation(len(unique))
        placed = np.empty_like(unique)
        placed[np.asarray(order)] = unique
        shuffled[name] = placed
    longest = max(counts.values())
    for name, _ in columns:
        own = shuffled[name]
        extra = rng.draws(len(own), longest - len(own)) if len(own) < longest else np.zeros(0, int)
        if name == of:
            return np.concatenate([own, own[extra]])
    raise KeyError(of)


@dataclass
class Smooth:
    """One smooth's basis: ``at(x)`` evaluates its columns; ``penalties`` are its
    penalty matrices in the same coordinates."""

    knots: np.ndarray  # shifted unique covariate values
    shift: float
    order: int  # the penalty's order m
    weights: np.ndarray  # (len(knots) + M, columns before the transform)
    transform: np.ndarray  # applied after: constraint and re-parameterisation
    penalties: list[np.ndarray]

    @property
    def size(self) -> int:
        return self.transform.shape[1]

    def at(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float) - self.shift
        radial = _eta(np.abs(x[:, None] - self.knots[None, :]), self.order)
        raw = np.concatenate([radial, _powers(x, self.order)], axis=1) @ self.weights
        return raw @ self.transform


def _eta(r: np.ndarray, m: int) -> np.ndarray:
    """The 1-D thin-plate radial function of order m: c·r^(2m−1), c = Γ(½−m)/(4^m √π (m−1)!)."""
    constant = math.gamma(0.5 - m) / (4.0**m * math.sqrt(math.pi) * math.factorial(m - 1))
    return constant * r ** (2 * m - 1)


def _powers(x: np.ndarray, m: int) -> np.ndarray:
    return np.stack([x**p for p in range(m)], axis=1)


def thin_plate(padded: np.ndarray, k: int, m: int = 2) -> tuple[Smooth, np.ndarray]:
    """mgcv's 1-D ``tp`` basis of size ``k`` built on the rows ``padded``, before any
    constraint: the smooth and its model matrix at those rows."""
    shift = r_mean(np.asarray(padded, dtype=float))
    x = np.asarray(padded, dtype=float) - shift
    knots = np.unique(x)
    null_dim = m
    if len(knots) < k:
        raise ValueError(f"{len(knots)} unique covariate values are fewer than the basis size k={k}")
    e = _eta(np.abs(knots[:, None] - knots[None, :]), m)
    t = _powers(knots, m)
    if len(knots) == k:
        raise NotImplementedError("a tp basis with as many unique values as k (mgcv's pure-knot case)")
    v, u = _lanczos_largest(e, k)
    rotations = _null_rotations(t.T @ u)
    q = np.eye(k)
    for h in rotations:  # Q = H_0 H_1 … (mgcv's HQmult, post-multiplying)
        q = q - np.outer(q @ h, h)
    free = k - null_dim
    uz = u @ q[:, :free]
    weights = np.zeros((len(knots) + null_dim, k))
    weights[: len(knots), :free] = uz
    weights[len(knots):, free:] = np.eye(null_dim)
    s = np.zeros((k, k))
    s[:free, :free] = (q.T @ np.diag(v) @ q)[:free, :free]
    at_knots = np.concatenate([(u * v) @ q[:, :free], t], axis=1)
    index = np.searchsorted(knots, x)
    matrix = at_knots[index]
    # unit root mean square per column, summed in order as tprs_setup sums
    scale = np.sqrt(np.cumsum(matrix**2, axis=0)[-1] / len(matrix))
    matrix = matrix / scale
    weights = weights / scale
    s = s / np.outer(scale, scale)
    smooth = Smooth(knots, shift, m, weights, np.eye(k), [s])
    return smooth, matrix


def _lanczos_largest(a: np.ndarray, k: int, tol: float = np.finfo(float).eps ** 0.7):
    """The ``k`` eigenvalues of largest magnitude of symmetric ``a`` and their
    vectors, by mgcv's Lanczos iteration (``Rlanczos``: its fixed start vector, full
    re-orthogonalisation, and its stopping rule), ordered as it returns them (the
    positive ones descending, then the negative ones descending).

    Ritz vectors, not exact eigenvectors: where the knots are symmetric, a vector's
    sum is zero in exact arithmetic and its Lanczos value (~1e-10) decides the
    direction of the Householder rotation that absorbs the null space, so the basis
    matches mgcv's only if these are the same Ritz vectors.
    """
    n = a.shape[0]
    f_check = max(k // 2, 10)
    f_check = min(f_check, max(n // 10, 1))
    state, start = 1, np.empty(n)
    for i in range(n):
        state = (state * 106 + 1283) % 6075
        start[i] = state / 6075 - 0.5
    q = [start / np.sqrt(np.sum(start * start))]
    alpha, beta = [], []
    chosen = None
    for j in range(n):
        z = a @ q[j]
        alpha.append(float(q[j] @ z))
        z = z - alpha[j] * q[j] - (beta[j - 1] * q[j - 1] if j else 0.0)
        if j:
            basis = np.array(q)
            for _ in range(2):  # full re-orthogonalisation, twice
                z = z - basis.T @ (basis @ z)
        beta.append(float(np.sqrt(z @ z)))
        if j < n - 1:
            q.append(z / beta[j])
        if (j >= k and j % f_check == 0) or j == n - 1:
            t = np.diag(alpha) + np.diag(beta[:j], 1) + np.diag(beta[:j], -1)
            values, vectors = np.linalg.eigh(t)
            values, vectors = values[::-1], vectors[:, ::-1]  # descending, as mgcv's
            norm_t = max(abs(values[0]), abs(values[-1]))
            errors = np.abs(beta[j] * vectors[j, :])
            if j == n - 1:
                errors[:] = 0.0
            top = bottom = 0
            converged = True
            while top + bottom < k:
                if abs(values[top]) >= abs(values[j - bottom]):
                    if errors[top] > norm_t * tol:
                        converged = False
                        break
                    top += 1
                else:
                    if errors[bottom] > norm_t * tol:  # mgcv tests err[ni] here, not err[j-ni]
                        converged = False
                        break
                    bottom += 1
            if converged:
                chosen = (values, vectors, top, bottom, j)
                break
    values, vectors, top, bottom, j = chosen
    index = list(range(top)) + list(range(j + 1 - bottom, j + 1))
    ritz = np.array(q[: j + 1]).T @ vectors[:, index]
    return values[index], ritz


def _null_rotations(tu: np.ndarray) -> list[np.ndarray]:
    """Householder vectors h (H = I − hhᵀ) that rotate each row of TU into its last
    free element, in turn (mgcv's ``QT``): T'Uδ = 0 becomes the last M coefficients."""
    a = tu.copy()
    rows, cols = a.shape
    out = []
    for i in range(rows):
        width = cols - i
        p = a[i, :width].copy()
        top = np.max(np.abs(p))
        if top:
            p = p / top
        norm = np.sqrt(np.sum(p * p))
        if p[width - 1] < 0:
            norm = -norm
        p[width - 1] += norm
        g = 1.0 / (norm * p[width - 1]) if norm else 0.0
        for j in range(i + 1, rows):
            a[j, :width] -= g * (p @ a[j, :width]) * p
        h = np.zeros(cols)
        h[:width] = p * math.sqrt(g)
        out.append(h)
    return out


def r_mean(x: np.ndarray) -> float:
    """R's ``mean``: a long-double sum in order, divided, then corrected by a second
    pass over the residuals."""
    wide = x.astype(np.longdouble)
    mean = np.cumsum(wide)[-1] / len(x)
    mean += np.cumsum(wide - mean)[-1] / len(x)
    return float(mean)


def r_col_means(m: np.ndarray) -> np.ndarray:
    """R's ``colMeans``: long-double sums in order."""
    return (np.cumsum(m.astype(np.longdouble), axis=0)[-1] / len(m)).astype(float)


def centred(smooth: Smooth, matrix: np.ndarray) -> tuple[Smooth, np.ndarray]:
    """The smooth under mgcv's sum-to-zero constraint over ``matrix``'s rows
    (``smoothCon``): the column means as one constraint, absorbed by a Householder
    reflection (R's ``qr``) that drops the first rotated column. Columns whose mean
    is exactly zero (the centred linear term, often) are left out of the rotation and
    kept as they are, and the last rotated column is dropped instead, as mgcv does."""
    c = r_col_means(matrix)
    keep = np.flatnonzero(c != 0)
    w = c[keep].copy()
    w[0] += math.copysign(np.linalg.norm(w), w[0])
    reflection = np.eye(len(keep)) - 2.0 * np.outer(w, w) / (w @ w)
    k = len(c)
    z = np.zeros((k, k - 1))
    rotated = keep[:-1]  # these positions take the rotated columns 2 … nx, in order
    columns = [j for j in range(k) if j != keep[-1]]
    for position, j in enumerate(columns):
        if j in rotated:
            z[keep, position] = reflection[:, list(rotated).index(j) + 1]
        else:
            z[j, position] = 1.0
    constrained = Smooth(
        smooth.knots, smooth.shift, smooth.order, smooth.weights, smooth.transform @ z,
        [z.T @ s @ z for s in smooth.penalties],
    )
    return constrained, matrix @ z


def factor_smooth_base(padded: np.ndarray, k: int) -> Smooth:
    """The base of ``s(x, f, bs="fs", m=1)``: a ``tp`` smooth of order 1 re-parameterised
    (mgcv's ``nat.param``, type 1) so that its wiggliness penalty is the identity on
    the first k−1 coefficients and the last coefficient, the null space, has a penalty
    of its own. The split uses the padded rows' inner product."""
    smooth, matrix = thin_plate(padded, k, m=1)
    rank = k - 1
    q, r = np.linalg.qr(matrix)
    r_inv = np.linalg.inv(r)
    rsr = r_inv.T @ smooth.penalties[0] @ r_inv
    values, vectors = np.linalg.eigh((rsr + rsr.T) / 2)
    vectors = vectors[:, ::-1]
    values = values[::-1]
    p = r_inv @ vectors
    x = q @ vectors
    scale = np.ones(k)
    scale[:rank] = np.sqrt(values[:rank])
    p = p / scale
    x = x / scale
    unit = np.ones(k)
    unit[:rank] = 1.0 / np.sqrt(np.mean(x[:, :rank] ** 2))
    unit[rank:] = 1.0 / np.sqrt(np.mean(x[:, rank:] ** 2))
    p = p * unit
    wiggly = np.diag(np.r_[np.full(rank, unit[0] ** 2), 0.0])
    null = np.zeros((k, k))
    null[rank, rank] = 1.0
    return Smooth(smooth.knots, smooth.shift, 1, smooth.weights, smooth.transform @ p, [wiggly, null])
