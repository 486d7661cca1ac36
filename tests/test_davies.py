"""Davies' algorithm (``wavelens.plugins.gamm.backends.davies``) against R.

The expected values come from R 4.2.2 with mgcv 1.8-41, ``psum.chisq(q, lb, df, nc, sigz,
lower.tail, tol, nlim, trace = TRUE)`` (its value and ``attr(, "ifault")``) and
``mgcv:::liu2``, with the inputs below passed to R as 17-digit decimals.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import warnings
from typing import NamedTuple

import numpy as np
import pytest

from wavelens.plugins.gamm.backends.davies import davies, liu2, psum_chisq

# Relative 1e-9, or absolute 1e-12 for values below 1e-3.
REL, ABS = 1e-9, 1e-12


class Case(NamedTuple):
    label: str
    q: float
    lb: list[float]
    df: list[float]
    p: float  # psum.chisq's value
    nc: list[float] | None = None
    sigz: float = 0.0
    lower_tail: bool = False
    tol: float = 2e-5
    nlim: int = 100_000
    ifault: int = 0  # davies.c's fault code


def f_like(stat: float, k0: int) -> tuple[list[float], list[float]]:
    """mgcv's form for an F-like statistic: ``c(val, -d/k0)`` with ``df = c(1, ..., 1, k0)``."""
    val = np.array([1.0, 0.8, 0.55, 0.3, 0.12, 0.05])
    return np.r_[val, -stat * val.sum() / k0].tolist(), np.r_[np.ones(val.size), k0].tolist()


CASES = [
    Case("positive 2 terms", 3.0, [1, 2], [1, 1], p=0.3577698173198369),
    Case("positive 3 terms df", 10.0, [0.5, 1.5, 0.25], [3, 1, 7], p=0.044513544182746),
    Case("positive near median lower", 4.2, [0.5, 1.5, 0.25], [3, 1, 7],
         p=0.502450148682645, lower_tail=True),
    Case("positive upper 0.99", 0.35, [0.5, 1.5, 0.25], [3, 1, 7], p=0.999960766613597),
    Case("F-like stat=0.6 k0=100", 0.0, *f_like(0.6, 100), p=0.6613252792037256),
    Case("F-like stat=1.0 k0=100", 0.0, *f_like(1.0, 100), p=0.4007041220200329),
    Case("F-like stat=1.5 k0=100", 0.0, *f_like(1.5, 100), p=0.20173095653447604),
    Case("F-like stat=2.2 k0=100", 0.0, *f_like(2.2, 100), p=0.07498195829966225),
    Case("F-like stat=1.2 k0=1000", 0.0, *f_like(1.2, 1000), p=0.2989853485103018),
    Case("F-like stat=1.8 k0=1000", 0.0, *f_like(1.8, 1000), p=0.12439651569165955),
    Case("F-like stat=3.0 k0=1000", 0.0, *f_like(3.0, 1000), p=0.020350638340515426),
    Case("F-like stat=1.4 k0=20000", 0.0, *f_like(1.4, 20000), p=0.22347897394019767),
    Case("F-like stat=2.5 k0=20000", 0.0, *f_like(2.5, 20000), p=0.04280747971857657),
    Case("F-like stat=4.0 k0=20000", 0.0, *f_like(4.0, 20000), p=0.00433331736591247),
    Case("noncentral", 6.0, [1, 0.4], [2, 1], p=0.21579140824978982, nc=[1.5, 0.3]),
    Case("noncentral mixed sign lower", 1.0, [1, -0.7, 0.2], [1, 3, 2],
         p=0.4262030462572394, nc=[2, 0, 4], lower_tail=True),
    Case("sigma", 2.0, [1, 0.5], [1, 2], p=0.41514972391160243, sigz=0.8),
    Case("sigma mixed sign lower", -1.5, [1, -1.2], [2, 1], p=0.17245567508951698, sigz=1.3, lower_tail=True),
    Case("tiny p tol 1e-12", 44.0, [1, 0.5, 0.25], [1, 2, 3], p=1.0436529418456075e-10, tol=1e-12),
    Case("tiny p sigma tol 1e-13", 35.0, [1], [1], p=3.762727462941484e-09, sigz=1.0, tol=1e-13),
    Case("tiny lower tail tol 1e-11", 0.003, [1, 0.5, 0.25], [1, 2, 3],
         p=8.970357567861242e-09, lower_tail=True, tol=1e-11),
    Case("p 2e-9 tol 1e-9", 38.0, [1, 0.5, 0.25], [1, 2, 3], p=2.0306274439718663e-09, tol=1e-09),
    Case("auxiliary integrations", 0.4, [1, 0.001, 0.0001], [1, 1, 1], p=0.5276601286835072),
    # |lb| ties between weights of opposite sign: the value depends on how R's heapsort
    # orders the tied terms (a stable sort gives 0.96557136807...).
    Case("opposite-sign tie", 11.448335383707537, [-1.2, -0.8, 1.7, 0.8, -1.1, -1.7, 1.2, 1.1],
         [5, 3, 1, 3, 5, 3, 4, 5], p=0.9655713601019389, lower_tail=True),
    Case("fault 1 falls back on liu2", 3.0, [1, 0.5, 0.2], [1, 1, 1],
         p=0.1590026072065947, nlim=10, ifault=1),
    Case("fault 1 noncentral is nan", 3.0, [1, 0.5, 0.2], [1, 1, 1],
         p=math.nan, nc=[1, 0, 0], nlim=10, ifault=1),
    Case("fault 3 negative nc is nan", 3.0, [1, 0.5, 0.2], [1, 1, 1], p=math.nan, nc=[-1, 0, 0], ifault=3),
    Case("fault 2 round-off", 2.0, [1], [1], p=0.2103494528266474, sigz=1.0, tol=1e-20, ifault=2),
    Case("outside range upper is 0", 200.0, [1, 2], [1, 1], p=0.0),
    Case("outside range lower is 1", -5.0, [1, 2], [1, 1], p=1.0),
    Case("df rounded", 5.0, [1, 0.5], [1.4, 2.6], p=0.09619828088632754),
]


def eigen_f_like(stat: float) -> tuple[np.ndarray, np.ndarray]:
    """800 distinct eigenvalues in (0, 1] with multiplicities summing to 9,599, and
    ``-stat * mean / k`` with k = 17,000 degrees of freedom: a large smooth's test."""
    i = np.arange(800)
    ev = ((800 - i) / 800.0) ** 3
    mult = 1 + (i * 7919) % 23
    k = 17_000
    return np.r_[ev, -stat * np.sum(ev * mult) / k], np.r_[mult, k].astype(float)


def one_big_many_small() -> tuple[np.ndarray, np.ndarray]:
    """One unit weight beside 999 weights near 1e-4: an auxiliary integration of 950
    points and a main one of 1,207 over 1,000 terms, the latter split into blocks."""
    i = np.arange(999)
    return np.r_[1.0, 1e-4 * (0.5 + i / 998.0)], np.ones(1000)


GENERATED = [
    ("eigen_f_like(1.0)", 0.0, *eigen_f_like(1.0), 0.49757512656943137),
    ("eigen_f_like(1.05)", 0.0, *eigen_f_like(1.05), 0.022031038419367821),
    ("eigen_f_like(1.1)", 0.0, *eigen_f_like(1.1), 4.1363662240945231e-05),
    ("one_big_many_small()", 0.3, *one_big_many_small(), 0.65466670725973053),
]

LIU2 = [  # x, lambda, h, mgcv:::liu2(x, lambda, h)
    (3.0, [1, 0.5, 0.2], [1, 1, 1], 0.1590026072065947),
    (0.4, [1, 0.001, 0.0001], [1, 1, 1], 0.5276578791185643),
    (25.0, [2.0, 0.3, 0.3], [2, 5, 1], 0.003021802019947541),
    (0.001, [1.0], [4], 0.9999998750416589),
    (-1.0, [1.0, 2.0], [1, 1], 1.0),
    (2.0, [1.0, -1.0], [1, 1], 1.0),
]


def matches_r(value: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(value)
    return value == pytest.approx(expected, rel=REL, abs=ABS)


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_psum_chisq_gives_mgcvs_value(case: Case):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = psum_chisq(case.q, case.lb, case.df, case.nc, case.sigz, lower_tail=case.lower_tail,
                           tol=case.tol, nlim=case.nlim)
    assert matches_r(value, case.p), (value, case.p)
    # R warns exactly when davies.c reports a fault.
    assert bool(caught) == (case.ifault != 0)
    assert all(issubclass(w.category, RuntimeWarning) for w in caught)


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_davies_gives_mgcvs_fault_code(case: Case):
    _, fault = davies(case.q, case.lb, np.round(case.df), case.nc, case.sigz, lim=case.nlim, acc=case.tol)
    assert fault == case.ifault


@pytest.mark.parametrize(("label", "q", "lb", "df", "expected"), GENERATED, ids=[g[0] for g in GENERATED])
def test_psum_chisq_gives_mgcvs_value_for_a_thousand_terms(label, q, lb, df, expected):
    assert matches_r(psum_chisq(q, lb, df), expected)


def test_a_large_smooths_test_takes_well_under_a_second():
    lb, df = eigen_f_like(1.08)
    start = time.perf_counter()
    psum_chisq(0.0, lb, df)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(("c", "lb", "mult", "nc"), [
    (3.0, [0.7, 0.2], [5, 3], [0.0, 0.0]),
    (0.0, [1.0, 0.5, -0.04], [1, 4, 40], [0.0, 0.0, 0.0]),
    (-2.0, [1.1, -0.6, 0.3], [2, 6, 9], [0.5, 0.0, 1.5]),
])
def test_a_term_of_multiplicity_m_equals_m_unit_terms(c, lb, mult, nc):
    grouped, grouped_fault = davies(c, lb, mult, nc)
    # chi2(m, nc) is chi2(1, nc) plus m - 1 central chi2(1): nc stays on the first copy.
    unit_nc = np.zeros(sum(mult))
    unit_nc[np.r_[0, np.cumsum(mult)[:-1]]] = nc
    spread, spread_fault = davies(c, np.repeat(lb, mult), 1, unit_nc)
    assert (grouped_fault, spread_fault) == (0, 0)
    assert spread == pytest.approx(grouped, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize(("x", "lam", "h", "expected"), LIU2)
def test_liu2_gives_mgcvs_value(x, lam, h, expected):
    assert matches_r(liu2(x, lam, h), expected)


def test_liu2_lower_tail_is_the_complement():
    assert liu2(25.0, [2.0, 0.3, 0.3], [2, 5, 1], lower_tail=True) == pytest.approx(1 - 0.003021802019947541)
    assert liu2(-1.0, [1.0, 2.0], [1, 1], lower_tail=True) == 0.0


def test_fallback_for_the_lower_tail_is_the_lower_tail():
    # mgcv returns liu2's upper tail, 0.1590026072065947, here; the complement is meant.
    with pytest.warns(RuntimeWarning, match="ifault 1"):
        value = psum_chisq(3.0, [1, 0.5, 0.2], nlim=10, lower_tail=True)
    assert value == pytest.approx(1 - 0.1590026072065947, rel=REL)


def test_auxiliary_integration_beyond_nlim_is_fault_4():
    # mgcv's psum.chisq returns 2 here (davies.c gives c = -1 without a fault code).
    assert davies(0.4, [1, 0.001, 0.0001], lim=500) == (pytest.approx(math.nan, nan_ok=True), 4)
    with pytest.warns(RuntimeWarning, match="ifault 4"):
        value = psum_chisq(0.4, [1, 0.001, 0.0001], nlim=500)
    assert matches_r(value, 0.5276578791185643)  # mgcv:::liu2(0.4, c(1, 0.001, 0.0001))


def test_davies_of_a_degenerate_sum_is_a_step_at_zero():
    assert davies(0.5, [1.0, 2.0], df=[0, 0]) == (1.0, 0)
    assert davies(-0.5, [1.0, 2.0], df=[0, 0]) == (0.0, 0)


def test_davies_reports_negative_degrees_of_freedom_as_fault_3():
    value, fault = davies(1.0, [1.0, 2.0], df=[1, -1])
    assert fault == 3 and math.isnan(value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lb": [1.0, 2.0], "df": [1, 0.4]}, "df must be positive integers"),
    ({"lb": [0.0, 0.0]}, "at least one element of lb must be non-zero"),
    ({"lb": [1.0, 2.0], "df": [1, 1, 1]}, "lengths of lb, df and nc must match"),
    ({"lb": [1.0, math.inf]}, "lb must be finite"),
])
def test_psum_chisq_rejects_what_mgcv_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        psum_chisq(1.0, **kwargs)


def test_psum_chisq_rejects_an_infinite_quantile():
    with pytest.raises(ValueError, match="finite"):
        psum_chisq(math.inf, [1.0, 2.0])


R_RANDOM_CASES = 50


def _random_cases(seed: int) -> list[dict]:
    """Mixtures like those mgcv tests smooths with, and a few others."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(R_RANDOM_CASES):
        kind = i % 5
        nc = None
        sigz = 0.0
        if kind == 0:  # positive weights
            r = int(rng.integers(1, 30))
            lb, df = rng.exponential(1.0, r), rng.integers(1, 5, r)
        elif kind == 1:  # mgcv's F-like form, evaluated at 0
            val = np.sort(rng.uniform(0, 1, int(rng.integers(2, 60))))[::-1]
            k0 = int(rng.integers(100, 20_000))
            lb = np.r_[val, -rng.uniform(0.5, 2.5) * val.sum() / k0]
            df = np.r_[np.ones(val.size), k0]
        elif kind == 2:  # non-central, either sign
            r = int(rng.integers(1, 10))
            lb, df, nc = rng.normal(0, 1, r), rng.integers(1, 4, r), rng.exponential(2.0, r)
        elif kind == 3:  # with a normal term
            r = int(rng.integers(1, 10))
            lb, df, sigz = rng.normal(0, 1, r), rng.integers(1, 4, r), float(rng.exponential(1.0))
        else:  # weights spread over decades
            r = int(rng.integers(2, 40))
            lb, df = np.exp(rng.uniform(-8, 2, r)), rng.integers(1, 3, r)
        ncv = np.zeros(lb.size) if nc is None else nc
        mean = float(np.sum(lb * (df + ncv)))
        sd = math.sqrt(float(np.sum(lb**2 * (2 * df + 4 * ncv))) + sigz**2)
        q = 0.0 if kind == 1 else mean + sd * float(rng.normal(0, 2))
        cases.append({"q": q, "lb": lb, "df": df.astype(float), "nc": ncv, "sigz": sigz,
                      "lower_tail": bool(rng.integers(0, 2))})
    return cases


def _r_vector(values) -> str:
    return "c(" + ",".join(f"{v:.17g}" for v in np.atleast_1d(values)) + ")"


@pytest.mark.slow
def test_psum_chisq_matches_r_on_random_mixtures(tmp_path):
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed")
    cases = _random_cases(seed=20240611)
    lines = ["suppressMessages(library(mgcv))", "options(warn = -1)"]
    for case in cases:
        lines.append(
            f"p <- psum.chisq({case['q']:.17g}, {_r_vector(case['lb'])}, df = {_r_vector(case['df'])}, "
            f"nc = {_r_vector(case['nc'])}, sigz = {case['sigz']:.17g}, "
            f"lower.tail = {'TRUE' if case['lower_tail'] else 'FALSE'}, trace = TRUE); "
            "cat(sprintf('%.17g %d\\n', p, attr(p, 'ifault')))"
        )
    script = tmp_path / "cases.R"
    script.write_text("\n".join(lines) + "\n")
    run = subprocess.run(["Rscript", str(script)], capture_output=True, text=True, timeout=120)
    if "there is no package called" in run.stderr:
        pytest.skip("the R package mgcv is not installed")
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.strip()]
    assert len(rows) == len(cases)
    compared = 0
    for case, (text, fault) in zip(cases, rows, strict=True):
        expected = math.nan if text == "NA" else float(text)
        # The two documented departures from mgcv: a probability of -1 or 2 when an
        # auxiliary integration exceeds nlim, and the upper tail for a lower-tail fallback.
        if not (0.0 <= expected <= 1.0 or math.isnan(expected)) or (fault != "0" and case["lower_tail"]):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = psum_chisq(case["q"], case["lb"], case["df"], case["nc"], case["sigz"],
                               lower_tail=case["lower_tail"])
        assert matches_r(value, expected), (case, value, expected)
        compared += 1
    assert compared >= R_RANDOM_CASES - 5, f"only {compared} cases were comparable"
