"""The distribution of a weighted sum of independent chi-squared variables, computed as
R's ``mgcv::psum.chisq`` computes it.

``Q = sum_j lb[j] * X_j + sigma * Z`` with ``X_j ~ chi2(df[j], nc[j])`` (``nc`` the
non-centrality) and ``Z ~ N(0, 1)``. :func:`davies` evaluates ``Pr(Q < c)`` by Davies'
(1973) numerical inversion of the characteristic function, with the truncation and
convergence-factor error bounds of Davies (1980, Applied Statistics algorithm AS 155):

- Davies, R. B. (1973). Numerical inversion of a characteristic function.
  Biometrika 60, 415-417.
- Davies, R. B. (1980). The distribution of a linear combination of chi-squared random
  variables. Journal of the Royal Statistical Society C 29, 323-333.

This is an independent implementation written to reproduce mgcv 1.8-41's ``davies.c``
(R 4.2) to rounding: every step follows the same order, and the sums over terms and
over integration points are accumulated in the same sequence as the C loops (the
arithmetic is vectorised over terms or points, the additions stay sequential). The
behaviours of that C code that matter for an exact match:

- the tail bound and the integrand add up the terms from last to first, the truncation
  bound, mean and variance from first to last;
- ``lmin``/``lmax`` start at 0, so they are ``min(0, min lb)`` and ``max(0, max lb)``;
- the terms are ranked by ``|lb|`` with R's heapsort ``revsort``, whose order of tied
  values matters when a weight and its negative are both present;
- the two convergence-factor coefficients of an auxiliary integration share one failure
  flag; the compiled mgcv calls the one at ``c - x`` first, so the flag kept is ``c + x``'s;
- ``log(1 + x) - x`` is computed as R's ``log1pmx`` computes it (series for small x).

Where mgcv's code has no answer this module departs from it, on purpose:

- AS 155 stops a search for the integration parameters after too many evaluations
  (ifault 4); mgcv dropped that check, so R can loop for ever. Here the search stops
  after ``_SEARCH_CALL_LIMIT`` bound evaluations with ifault 4.
- When an auxiliary integration would need more than ``lim`` points, mgcv returns
  ``c = -1`` with ifault 0, so ``psum.chisq`` reports a probability of 2 (upper tail)
  or -1. Here that is ifault 4 and :func:`psum_chisq` falls back as for other faults.
- ``psum.chisq`` always takes the upper tail of its Liu et al. fallback, even when
  asked for the lower tail; :func:`psum_chisq` takes the tail it was asked for.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["davies", "liu2", "psum_chisq"]

_LN2_OVER_8 = math.log(2.0) / 8.0
# mgcv has no cap on the number of bound evaluations while it looks for the integration
# parameters; a search this long means the C code would never finish.
_SEARCH_CALL_LIMIT = 100_000
# Largest number of (term, point) pairs held in memory at once during an integration.
_BLOCK_ELEMENTS = 1 << 20
# R's log1pmx: below this, and above 1, log(1 + x) - x has no cancellation to avoid.
_LOG1PMX_SERIES_LOW = -0.79149064
# Series terms for sum_k y^k / (2k + 3); y <= 0.426 on the series range, 0.426^60 ~ 1e-22.
_LOG1PMX_SERIES_TERMS = 60


class _SearchTooLong(Exception):
    """The search for integration parameters evaluated its bounds too many times."""


def _running_sum(start: float, increments: np.ndarray) -> float:
    """``start + increments[0] + increments[1] + ...`` added strictly left to right, as a
    C loop adds them (``np.sum`` would add pairwise and round differently)."""
    if increments.size == 0:
        return float(start)
    return float(np.add.accumulate(np.concatenate(([start], increments)))[-1])


def _quotient(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with IEEE results (inf, nan) where Python would raise."""
    return float(np.divide(numerator, denominator))


def _round_half_down(x: float) -> int | None:
    """The nearest integer to ``x`` >= 0, halves rounded down; None when ``x`` is not finite."""
    if not math.isfinite(x):
        return None
    whole = math.floor(x)
    return whole + 1 if x - whole > 0.5 else whole


def _log1pmx(x: np.ndarray) -> np.ndarray:
    """``log(1 + x) - x`` for ``x > -1``, accurate where the two terms nearly cancel.

    On ``[-0.79149064, 1]`` it uses ``log(1+x) - x = r (2 y S(y) - x)`` with
    ``r = x / (2 + x)``, ``y = r^2`` and ``S(y) = sum_k y^k / (2k + 3)``: a four-term
    polynomial for ``|x| < 0.01`` (as R does) and the series to double precision above.
    """
    x = np.asarray(x, dtype=float)
    result = np.log1p(x) - x
    inner = (x <= 1.0) & (x >= _LOG1PMX_SERIES_LOW)
    if not inner.any():
        return result
    xi = x[inner]
    r = xi / (2.0 + xi)
    y = r * r
    small = np.abs(xi) < 1e-2
    series = np.where(small, (((2.0 / 9.0 * y + 2.0 / 7.0) * y + 2.0 / 5.0) * y + 2.0 / 3.0) * y, 0.0)
    large = ~small
    if large.any():
        yl = y[large]
        total = np.zeros_like(yl)
        for k in range(_LOG1PMX_SERIES_TERMS, -1, -1):
            total = total * yl + 1.0 / (2 * k + 3)
        series[large] = 2.0 * yl * total
    result[inner] = r * (series - xi)
    return result


def _descending_order(values: np.ndarray) -> np.ndarray:
    """Indices that put ``values`` in decreasing order, tied values in the order R's
    ``revsort`` (a heapsort) leaves them, which is what the C code ranks terms with."""
    if np.unique(values).size == values.size:
        return np.argsort(-values, kind="stable")
    keys = [float(v) for v in values]
    index = list(range(len(keys)))

    def sink(key: float, item: int, slot: int, size: int) -> None:
        # A min-heap: the root holds the smallest key. Move (key, item) down from slot
        # while a child is strictly smaller, preferring the left child on ties.
        child = 2 * slot + 1
        while child < size:
            if child + 1 < size and keys[child] > keys[child + 1]:
                child += 1
            if not key > keys[child]:
                break
            keys[slot], index[slot] = keys[child], index[child]
            slot, child = child, 2 * child + 1
        keys[slot], index[slot] = key, item

    size = len(keys)
    for slot in range(size // 2 - 1, -1, -1):
        sink(keys[slot], index[slot], slot, size)
    for last in range(size - 1, 0, -1):
        key, item = keys[last], index[last]
        keys[last], index[last] = keys[0], index[0]
        sink(key, item, 0, last)
    return np.array(index, dtype=np.intp)


class _Mixture:
    """The terms of Q, held in the orders in which AS 155 visits them, with the bounds
    and integrals of the algorithm as methods."""

    def __init__(self, lb: np.ndarray, df: np.ndarray, nc: np.ndarray):
        self.size = lb.size
        self.lb, self.df, self.nc = lb, df, nc
        self.lb_back, self.df_back, self.nc_back = lb[::-1].copy(), df[::-1].copy(), nc[::-1].copy()
        self.noncentral = bool(np.any(nc != 0.0))
        # The convergence-factor coefficient walks the terms from the smallest |lb| up.
        rising = _descending_order(np.abs(lb))[::-1]
        self.rising_lb = lb[rising]
        self.rising_mass = df[rising] + nc[rising]
        self.calls = 0

    def _count_call(self) -> None:
        self.calls += 1
        if self.calls > _SEARCH_CALL_LIMIT:
            raise _SearchTooLong

    def tail_bound(self, u: float, sigsq: float) -> tuple[float, float]:
        """A Chernoff bound on a tail of Q, and the point it bounds the tail beyond, for
        the exponential-tilting parameter ``u`` (``u > 0``: upper tail, ``u < 0``: lower)."""
        self._count_call()
        cutoff_start = u * sigsq
        exponent_start = u * cutoff_start
        u = 2.0 * u
        x = u * self.lb_back
        y = 1.0 - x
        cutoff = _running_sum(cutoff_start, self.lb_back * (self.nc_back / y + self.df_back) / y)
        xy = x / y
        # Each term adds two pieces, one after the other.
        pieces = np.empty(2 * self.size)
        pieces[0::2] = self.nc_back * xy * xy
        pieces[1::2] = self.df_back * (x * xy + _log1pmx(-x))
        exponent = _running_sum(exponent_start, pieces)
        return math.exp(-0.5 * exponent), cutoff

    def cutoff(self, accuracy: float, u: float, mean: float, lmin: float, lmax: float,
               sigsq: float) -> tuple[float, float]:
        """A point beyond which the tail of Q (upper for ``u > 0``, lower for ``u < 0``)
        has probability at most ``accuracy``, found from ``u`` by doubling then bisection;
        returns the point and the tilting parameter that gave it."""
        u_far, u_near, cut_near = u, 0.0, mean
        reach = 2.0 * lmax if u_far > 0 else 2.0 * lmin
        while True:
            bound, cut_far = self.tail_bound(u_far / (1.0 + u_far * reach), sigsq)
            if bound <= accuracy:
                break
            u_near, cut_near = u_far, cut_far
            u_far = 2.0 * u_far
        while not _quotient(cut_near - mean, cut_far - mean) >= 0.9:
            u_mid = (u_near + u_far) * 0.5
            bound, cut_mid = self.tail_bound(u_mid / (1.0 + u_mid * reach), sigsq)
            if bound > accuracy:
                u_near, cut_near = u_mid, cut_mid
            else:
                u_far, cut_far = u_mid, cut_mid
        return cut_far, u_far

    def truncation_error(self, u: float, tausq: float, sigsq: float) -> float:
        """A bound on the error of stopping the integral at ``u``, with a convergence
        factor ``exp(-tausq u^2 / 2)`` on top of the normal part's variance ``sigsq``."""
        self._count_call()
        quadratic = (sigsq + tausq) * u * u
        u = 2.0 * u
        x = u * self.lb
        x = x * x
        shift = _running_sum(0.0, self.nc * x / (1.0 + x))
        wide = x > 1.0
        narrow_logs = _running_sum(2.0 * quadratic, self.df[~wide] * np.log1p(x[~wide]))
        wide_logs = _running_sum(0.0, self.df[wide] * np.log(x[wide])) + narrow_logs
        wide_log1ps = _running_sum(0.0, self.df[wide] * np.log1p(x[wide])) + narrow_logs
        wide_df = float(self.df[wide].sum())
        shift = shift * 0.5
        first = math.exp(-shift - 0.25 * wide_logs) / math.pi
        second = math.exp(-shift - 0.25 * wide_log1ps) / math.pi
        bound = 1.0 if wide_df == 0 else 2.0 * first / wide_df
        other = 2.5 * second if wide_log1ps > 1.0 else 1.0
        if other < bound:
            bound = other
        half_quadratic = 0.5 * quadratic
        other = 1.0 if half_quadratic <= second else second / half_quadratic
        return bound if bound < other else other

    def truncation_point(self, start: float, accuracy: float, sigsq: float) -> float:
        """A point ``u`` at which the truncation error is at most ``accuracy``: searched
        from ``start`` in factors of 4, then lowered by factors 2, 1.4, 1.2 and 1.1 while
        the error stays within ``accuracy``."""
        upper = start
        trial = upper * 0.25
        if self.truncation_error(trial, 0.0, sigsq) > accuracy:
            while self.truncation_error(upper, 0.0, sigsq) > accuracy:
                upper = upper * 4.0
        else:
            upper = trial
            trial = trial / 4.0
            while self.truncation_error(trial, 0.0, sigsq) <= accuracy:
                upper = trial
                trial = trial / 4.0
        for divisor in (2.0, 1.4, 1.2, 1.1):
            trial = upper / divisor
            if self.truncation_error(trial, 0.0, sigsq) <= accuracy:
                upper = trial
        return upper

    def factor_coefficient(self, c: float) -> tuple[float, bool]:
        """The coefficient of ``tausq`` in the error that a convergence factor
        ``exp(-tausq u^2 / 2)`` adds to ``Pr(Q < c)``; True with it when no useful
        coefficient exists (the value is then 1)."""
        self._count_call()
        reach = abs(c)
        sign = -1.0 if c < 0 else 1.0
        same_side = self.rising_lb * sign > 0.0
        lj = np.abs(self.rising_lb[same_side])
        mass = self.rising_mass[same_side]
        # reach after each same-side term in turn takes its mean lj * (df + nc) away
        steps = np.subtract.accumulate(np.concatenate(([reach], lj * mass)))
        floors = lj / _LN2_OVER_8
        stops = np.flatnonzero(~(steps[1:] > floors))
        excess = 0.0
        if stops.size:
            stop = stops[0]
            reach = float(floors[stop] if steps[stop] > floors[stop] else steps[stop])
            excess = float((reach - steps[stop + 1]) / lj[stop])
            # every term after the stopping one, on either side, counts in full
            later = np.flatnonzero(same_side)[stop] + 1
            excess = _running_sum(excess, self.rising_mass[later:])
        else:
            reach = float(steps[-1])
        if excess > 100.0:
            return 1.0, True
        return _quotient(math.pow(2.0, excess * 0.25), math.pi * reach * reach), False

    def integrate(self, last: int, step: float, tausq: float, main: bool, c: float, sigsq: float,
                  integral: float, error_sum: float) -> tuple[float, float]:
        """Add the inversion integral's terms at ``u = (k + 1/2) step``, ``k = last .. 0``,
        to ``integral``, and their absolute values (the round-off scale) to ``error_sum``;
        an auxiliary integration (not ``main``) weights them by ``1 - exp(-tausq u^2 / 2)``."""
        scale = step / math.pi
        points = np.arange(last, -1, -1, dtype=float)
        block = max(1, _BLOCK_ELEMENTS // self.size)
        twice_lb = (2.0 * self.lb_back)[:, None]
        quarter_df = (0.25 * self.df_back)[:, None]
        df = self.df_back[:, None]
        nc = self.nc_back[:, None]
        for first in range(0, points.size, block):
            u = (points[first:first + block] + 0.5) * step
            phase = -2.0 * u * c
            spread = np.abs(phase)
            log_modulus = -0.5 * sigsq * u * u
            x = twice_lb * u
            xsq = x * x
            damping = quarter_df * np.log1p(xsq)
            turn = df * np.arctan(x)
            if self.noncentral:
                shift = nc * x / (1.0 + xsq)
                turn = turn + shift
                pull = -0.5 * x * shift
            size = np.abs(turn)
            for j in range(self.size):
                log_modulus -= damping[j]
                phase += turn[j]
                spread += size[j]
                if self.noncentral:
                    log_modulus += pull[j]
            weight = scale * np.exp(log_modulus) / u
            if not main:
                weight = weight * (1.0 - np.exp(-0.5 * tausq * u * u))
            integral = _running_sum(integral, np.sin(0.5 * phase) * weight)
            error_sum = _running_sum(error_sum, 0.5 * spread * weight)
        return integral, error_sum


def _as_terms(lb: ArrayLike, df: ArrayLike | None, nc: ArrayLike | None) -> tuple[np.ndarray, ...]:
    """``lb``, ``df`` and ``nc`` as float arrays of one length (a single df or nc applies
    to every term; missing df are 1, missing nc are 0)."""
    lb = np.atleast_1d(np.asarray(lb, dtype=float))
    if lb.ndim != 1 or lb.size == 0:
        raise ValueError(f"lb must be a non-empty vector of weights, got shape {lb.shape}")
    df = np.ones(lb.size) if df is None else np.atleast_1d(np.asarray(df, dtype=float))
    nc = np.zeros(lb.size) if nc is None else np.atleast_1d(np.asarray(nc, dtype=float))
    if df.size == 1:
        df = np.full(lb.size, df[0])
    if nc.size == 1:
        nc = np.full(lb.size, nc[0])
    if df.shape != lb.shape or nc.shape != lb.shape:
        raise ValueError(f"lengths of lb, df and nc must match (got {lb.size}, {df.size} and {nc.size})")
    for name, values in (("lb", lb), ("df", df), ("nc", nc)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be finite, got {values[~np.isfinite(values)][:3]}")
    return lb, df, nc


def davies(c: float, lb: ArrayLike, df: ArrayLike | None = None, nc: ArrayLike | None = None,
           sigma: float = 0.0, lim: int = 100_000, acc: float = 2e-5) -> tuple[float, int]:
    """``Pr(Q < c)`` for ``Q = sum_j lb[j] chi2(df[j], nc[j]) + sigma N(0, 1)`` by
    Davies' algorithm AS 155, with its fault indicator, as mgcv's ``davies.c`` gives them.

    ``df`` are whole numbers of degrees of freedom (default 1), ``nc`` non-centralities
    (default 0); a single value applies to all terms. ``lim`` bounds the number of
    integration points, ``acc`` is the error bound sought.

    The fault indicator is 0 (fine), 1 (the main integration would need more than
    ``lim`` points; the probability is nan), 2 (round-off may be significant; the
    probability is computed anyway), 3 (a negative df or nc, or all weights and
    ``sigma`` zero; nan) or 4 (the integration parameters could not be found within the
    search limits or ``lim``; nan). Code 5 (out of memory) of the original never occurs.
    """
    lb, df, nc = _as_terms(lb, df, nc)
    if np.any(df != np.round(df)):
        raise ValueError(f"df must be whole numbers, got {df[df != np.round(df)][:3]}")
    if not acc > 0:
        raise ValueError(f"acc must be positive, got {acc}")
    c, sigma = float(c), float(sigma)
    if not (math.isfinite(c) and math.isfinite(sigma)):
        raise ValueError(f"c and sigma must be finite numbers (as in R), got c={c}, sigma={sigma}")
    if np.any(df < 0) or np.any(nc < 0):
        return math.nan, 3
    sigsq = sigma * sigma
    sd = _running_sum(sigsq, lb * lb * (2.0 * df + 4.0 * nc))
    mean = _running_sum(0.0, lb * (df + nc))
    lmax = max(0.0, float(lb.max()))
    lmin = min(0.0, float(lb.min()))
    if sd == 0.0:
        return (1.0 if c > 0.0 else 0.0), 0
    if lmin == 0.0 and lmax == 0.0 and sigma == 0.0:
        return math.nan, 3
    mixture = _Mixture(lb, df, nc)
    with np.errstate(all="ignore"):
        try:
            return _invert(mixture, c, sigsq, math.sqrt(sd), mean, lmin, lmax, int(lim), float(acc))
        except _SearchTooLong:
            return math.nan, 4


def _invert(mix: _Mixture, c: float, sigsq: float, sd: float, mean: float, lmin: float, lmax: float,
            lim: int, acc: float) -> tuple[float, int]:
    """The body of AS 155 once the terms are checked: choose the truncation point,
    convergence factors and integration step, integrate, and check round-off."""
    largest = -lmin if lmax < -lmin else lmax
    accuracy = acc
    u_upper = 4.5 / sd
    u_lower = -u_upper
    u_stop = mix.truncation_point(16.0 / sd, 0.5 * accuracy, sigsq)

    # A convergence factor exp(-tausq u^2 / 2) may allow stopping the integral sooner.
    if c != 0.0 and largest > 0.07 * sd:
        coefficient, failed = mix.factor_coefficient(c)
        tausq = _quotient(0.25 * accuracy, coefficient)
        if not failed and mix.truncation_error(u_stop, tausq, sigsq) < 0.2 * accuracy:
            sigsq = sigsq + tausq
            u_stop = mix.truncation_point(u_stop, 0.25 * accuracy, sigsq)
    accuracy = 0.5 * accuracy

    integral = error_sum = 0.0
    while True:
        upper_cut, u_upper = mix.cutoff(accuracy, u_upper, mean, lmin, lmax, sigsq)
        above = upper_cut - c
        if above < 0.0:
            return 1.0, 0
        lower_cut, u_lower = mix.cutoff(accuracy, u_lower, mean, lmin, lmax, sigsq)
        below = c - lower_cut
        if below < 0.0:
            return 0.0, 0
        step = _quotient(2.0 * math.pi, above if above > below else below)
        points = _round_half_down(_quotient(u_stop, step))
        aux_points = _round_half_down(3.0 / math.sqrt(accuracy))
        if points is None or aux_points is None:
            return math.nan, 1
        if not points > aux_points * 1.5:
            break
        # Too many points: integrate part of the way with a coarser auxiliary integral
        # whose convergence factor narrows what is left for the main one.
        aux_step = u_stop / aux_points
        reach = 2.0 * math.pi / aux_step
        if reach <= abs(c):
            break
        low_coefficient, _ = mix.factor_coefficient(c - reach)
        high_coefficient, failed = mix.factor_coefficient(c + reach)
        tausq = _quotient(0.33 * accuracy, 1.1 * (low_coefficient + high_coefficient))
        if failed:
            break
        accuracy = accuracy * 0.67
        if aux_points > lim:
            return math.nan, 4
        integral, error_sum = mix.integrate(aux_points, aux_step, tausq, False, c, sigsq, integral, error_sum)
        lim = lim - aux_points
        sigsq = sigsq + tausq
        u_stop = mix.truncation_point(u_stop, 0.25 * accuracy, sigsq)
        accuracy = 0.75 * accuracy

    if points > lim:
        return math.nan, 1
    integral, error_sum = mix.integrate(points, step, 0.0, True, c, sigsq, integral, error_sum)
    probability = 0.5 - integral
    # Round-off matters when a tenth of the accuracy is lost beside the sum of magnitudes.
    fault = 2 if error_sum + acc / 10.0 == error_sum else 0
    return probability, fault


def liu2(x: float, lb: ArrayLike, h: ArrayLike | None = None, lower_tail: bool = False) -> float:
    """The Liu, Tang and Zhang (2009) approximation to ``Pr(Q > x)`` (or ``Pr(Q <= x)``
    when ``lower_tail``) for ``Q = sum_j lb[j] chi2(h[j])``, as mgcv's ``liu2`` computes it:
    a (non-central) chi-squared matched to the first four cumulants of Q.

    As in mgcv, ``x <= 0``, all-zero weights and a zero third cumulant give the upper
    tail 1; with ``lower_tail`` this module returns 0 there.
    """
    lam = np.atleast_1d(np.asarray(lb, dtype=float))
    h = np.ones(lam.size) if h is None else np.atleast_1d(np.asarray(h, dtype=float))
    if h.shape != lam.shape:
        raise ValueError(f"lb and h should have the same length (got {lam.size} and {h.size})")
    x = float(x)
    degenerate = 0.0 if lower_tail else 1.0
    # R's sum() accumulates in extended precision; fsum is the closest double sum.
    weighted = lam * h
    mean_q = math.fsum(weighted)
    weighted = weighted * lam
    c2 = math.fsum(weighted)
    weighted = weighted * lam
    c3 = math.fsum(weighted)
    if not x > 0 or c2 <= 0:
        return degenerate
    s1 = c3 / c2**1.5
    s2 = math.fsum(weighted * lam) / (c2 * c2)
    t = (x - mean_q) / math.sqrt(2.0 * c2)
    if s1 * s1 > s2:
        a = 1.0 / (s1 - math.sqrt(s1 * s1 - s2))
        delta = s1 * a**3 - a * a
        dof = a * a - 2.0 * delta
    else:
        if c3 == 0:
            return degenerate
        a = 1.0 / s1
        delta = 0.0
        dof = c2**3 / (c3 * c3)
    point = t * (math.sqrt(2.0) * a) + dof + delta
    if delta == 0.0:
        tail = stats.chi2.cdf if lower_tail else stats.chi2.sf
        return float(tail(point, dof))
    tail = stats.ncx2.cdf if lower_tail else stats.ncx2.sf
    return float(tail(point, dof, delta))


def psum_chisq(q: float, lb: ArrayLike, df: ArrayLike | None = None, nc: ArrayLike | None = None,
               sigz: float = 0.0, lower_tail: bool = False, tol: float = 2e-5,
               nlim: int = 100_000) -> float:
    """``Pr(Q > q)`` (or ``Pr(Q < q)`` when ``lower_tail``) for
    ``Q = sum_j lb[j] chi2(df[j], nc[j]) + sigz N(0, 1)``, as ``mgcv::psum.chisq`` gives it.

    ``df`` are rounded to whole numbers and must then be at least 1; a single ``df`` or
    ``nc`` applies to every term; a negative ``sigz`` counts as 0; at least one weight
    must be non-zero. Davies' algorithm (:func:`davies`, error bound ``tol``, at most
    ``nlim`` integration points) gives the value. When it reports possible round-off
    (ifault 2) the value is used with a ``RuntimeWarning``; on any other fault the value
    falls back, with a ``RuntimeWarning``, to :func:`liu2` when every ``nc`` is 0, else nan.
    """
    lb, df, nc = _as_terms(lb, df, nc)
    df = np.round(df)
    if np.any(df < 1):
        raise ValueError(f"df must be positive integers, got {df[df < 1][:3]}")
    if np.all(lb == 0):
        raise ValueError("at least one element of lb must be non-zero")
    sigz = max(float(sigz), 0.0)
    probability, fault = davies(q, lb, df, nc, sigz, lim=nlim, acc=tol)
    if fault in (0, 2):
        if fault == 2:
            warnings.warn(f"psum_chisq({q}): danger of round-off error in Davies' method",
                          RuntimeWarning, stacklevel=2)
        return probability if lower_tail else 1.0 - probability
    central = bool(np.all(nc == 0))
    fallback = "the Liu et al. approximation" if central else "nan (Liu et al. needs central terms)"
    warnings.warn(f"psum_chisq({q}): failure of Davies' method (ifault {fault}), falling back on {fallback}",
                  RuntimeWarning, stacklevel=2)
    return liu2(q, lb, df, lower_tail=lower_tail) if central else math.nan
