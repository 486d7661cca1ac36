"""The native backend against mgcv: its pieces (R's generator, mgcv's compressed frame,
the thin-plate basis, the random-effect mixture), and whole fits against mgcv's
stored tables (fast) and against a live ``Rscript`` (slow)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from gamm_data import simulate
from gamm_reference import CASES, STORE, fit_case, relative_gap, summary
from scipy import linalg

from wavelens.plugins.gamm.backends import backend_named
from wavelens.plugins.gamm.backends.base import _curves_from, posterior_draws
from wavelens.plugins.gamm.backends.native import NativeModel, _mixture_weights
from wavelens.plugins.gamm.backends.native_basis import RRandom, padded_rows, thin_plate
from wavelens.plugins.gamm.model import BackendFit, GammParams, assemble, prepare


def test_the_r_generator_replays_set_seed_sample_and_runif():
    # R 4.2.2: set.seed(8547); sample(1:16, 16); sample(1:8, 8); runif(2)
    rng = RRandom(8547)
    assert [i + 1 for i in rng.permutation(16)] == [12, 1, 9, 10, 13, 3, 11, 4, 6, 14, 8, 2, 16, 15, 5, 7]
    assert [i + 1 for i in rng.permutation(8)] == [8, 3, 5, 6, 2, 1, 7, 4]
    assert rng.unif() == pytest.approx(0.461165060754865408, abs=1e-16)
    assert rng.unif() == pytest.approx(0.036762527888640761, abs=1e-16)


def test_the_padded_time_column_is_mgcvs_compressed_frame():
    # discrete.mf's frame for simulate(60, seed=1) with AR.start (R 4.2.2, mgcv 1.8-41):
    # how often each sample time 1 … 16 appears among its 960 rows
    table, _ = simulate(60, seed=1)
    data = prepare(table, GammParams(backend="native")).data
    columns = [("time", data["time"].to_numpy(float)), ("level", data["level"].to_numpy()),
               ("token", data["token"].to_numpy()), ("y", data["y"].to_numpy()),
               ("(AR.start)", data["start"].to_numpy())]
    padded = padded_rows(columns, "time")
    counts = np.bincount(padded.astype(int))[1:]
    assert counts.tolist() == [57, 73, 52, 63, 68, 65, 61, 68, 62, 59, 55, 62, 50, 57, 44, 64]


def test_the_thin_plate_basis_is_mgcvs_column_for_column():
    # smooth.construct(s(time, k = 10), data.frame(time = 1:16), NULL)$X[c(1, 5, 16), ]
    mgcv = np.array([
        -1.52003657563693, -0.776665074835031, -1.55459914136855, 1.63387115954466, 1.19796266498931,
        -0.787528804026116, -1.74299390064703, -0.594774683005593, -1.71061334713011, -1.9143560388345,
        -0.778262775334954, 1.04330394750113, -1.86450350329989, -0.285953985819875, -1.83180804974845,
        -2.02863668227708, -0.60781881156554, 1.15007614943906, -1.9221543264079, -0.404839073469196,
        -1.88934150292751, 2.08500584304558, 0.881793155391654, -1.20364953176574, 1, 1, 1,
        -1.62697843363992, -0.759256602365297, 1.62697843363992,
    ]).reshape(10, 3).T
    _, matrix = thin_plate(np.arange(1.0, 17.0), 10)
    # the same columns up to sign (an eigenvector's sign is arbitrary)
    np.testing.assert_allclose(np.abs(matrix[[0, 4, 15]]), np.abs(mgcv), rtol=1e-11)
    signs = np.sign(matrix[0] / mgcv[0])
    np.testing.assert_allclose(matrix[[0, 4, 15]] * signs, mgcv, rtol=1e-11)


def _dense_mixture_weights(xx, s_f, bx, a_inv, gamma):
    """The eigenvalues of M·Ve_ff/φ with every matrix formed in full."""
    tokens, q, _ = bx.shape
    b = bx.reshape(tokens * q, -1)
    penalty = np.kron(np.eye(tokens), s_f)
    m = linalg.block_diag(*xx) + penalty - b @ a_inv @ b.T
    ve = np.linalg.inv(m) @ (m - penalty - b @ gamma @ b.T) @ np.linalg.inv(m)  # Ve_ff/φ
    return np.sort(np.linalg.eigvals(m @ ve).real)


@pytest.mark.parametrize("shared", [True, False])
def test_the_grouped_mixture_weights_equal_the_dense_eigenproblem(shared):
    rng = np.random.default_rng(3)
    tokens, q, p = 40, 4, 6
    base = rng.normal(size=(8, q))
    xx = np.empty((tokens, q, q))
    for t in range(tokens):
        x = base if shared or t % 3 else base + rng.normal(scale=0.3, size=base.shape)
        xx[t] = x.T @ x
    s_f = np.diag([1.0, 2.0, 0.5, 0.0]) + 0.1
    bx = rng.normal(size=(tokens, q, p)) * 0.3
    a = np.eye(p) * 50 + 0.5
    a_inv = np.linalg.inv(a)
    gamma = a_inv @ np.diag(rng.uniform(0, 2, p)) @ a_inv
    values, counts = _mixture_weights(xx, s_f, bx, a_inv, gamma)
    grouped = np.sort(np.repeat(values, counts))
    np.testing.assert_allclose(grouped, _dense_mixture_weights(xx, s_f, bx, a_inv, gamma), atol=1e-10)


def _stored() -> dict:
    return json.loads(STORE.read_text())


TABLES = {
    "parametric": ("estimate", "se", "stat", "p"),
    "curves": ("fit", "se"),
    "differences": ("diff", "se"),
}


def _compare(name: str, mine: dict, reference: dict) -> dict[str, float]:
    """The largest relative gap per compared quantity."""
    gaps = {}
    for table, columns in TABLES.items():
        for column in columns:
            gaps[f"{table}_{column}"] = relative_gap(mine[table][column], reference[table][column])
    smooths_mine, smooths_ref = pd.DataFrame(mine["smooths"]), pd.DataFrame(reference["smooths"])
    assert smooths_mine["term"].tolist() == smooths_ref["term"].tolist()
    random = smooths_mine["term"].str.contains(",")
    for column in ("edf", "ref_df", "stat", "p"):
        for part, rows in (("smooth", ~random), ("random", random)):
            mine_, ref_ = smooths_mine.loc[rows, column], smooths_ref.loc[rows, column]
            gaps[f"{part}_{column}"] = relative_gap(mine_, ref_)
    for key in ("scale", "r_sq", "dev_expl", "reml", "residual_df", "rho"):
        gaps[f"fit_{key}"] = relative_gap([mine["fit"][key]], [reference["fit"][key]])
    return gaps


@pytest.mark.parametrize("name", list(CASES))
def test_the_native_backend_gives_mgcvs_tables(name):
    reference = _stored()["cases"][name]
    _, fit = fit_case(name, "native")
    gaps = _compare(name, summary(fit), reference)
    allowed = CASES[name].get("tolerance", {})
    too_far = {key: gap for key, gap in gaps.items() if gap > allowed.get(key, 1e-6)}
    assert not too_far, f"{name}: {too_far}"
    assert summary(fit)["warnings"] == reference["warnings"]


def test_word_rows_are_curve_means_over_mgcvs_compressed_frame_not_over_the_data():
    """Under discrete=TRUE mgcv centres each smooth over its compressed frame's time
    column, so intercept + word row = that word's curve averaged with the frame's
    weights; checked on mgcv's own stored output."""
    name = "ar1"
    reference = _stored()["cases"][name]
    prepared, fit = fit_case(name, "native")
    padded = NativeModel(prepared, GammParams(backend="native", **CASES[name]["params"]), True,
                         fit.rho).padded_time()
    weights = np.bincount(padded.astype(int))[1:] / len(padded)
    curves = pd.DataFrame(reference["curves"])
    parametric = dict(zip(reference["parametric"]["term"], reference["parametric"]["estimate"], strict=True))
    intercept = parametric["(Intercept)"]
    gaps_frame, gaps_data = [], []
    for level, rows in curves.groupby("level", sort=False):
        mean_frame = float(np.sum(weights * rows["fit"].to_numpy()))
        mean_data = float(np.mean(rows["fit"].to_numpy()))  # every token has each time once
        row = intercept + parametric.get(prepared.level_term(level), 0.0)
        gaps_frame.append(abs(row - mean_frame))
        gaps_data.append(abs(row - mean_data))
    assert max(gaps_frame) < 1e-9
    assert max(gaps_data) > 1e-4  # the plain level mean is another number


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs R with mgcv (make setup)")
@pytest.mark.parametrize("name", ["ar1", "noisy"])
def test_the_native_backend_gives_live_mgcvs_tables(name):
    _, reference = fit_case(name, "mgcv")
    _, fit = fit_case(name, "native")
    gaps = _compare(name, summary(fit), summary(reference))
    allowed = CASES[name].get("tolerance", {})
    too_far = {key: gap for key, gap in gaps.items() if gap > allowed.get(key, 1e-6)}
    assert not too_far, f"{name}: {too_far}"


def test_simultaneous_bands_hold_the_whole_curve_in_95_percent_of_posterior_draws():
    case = CASES["ar1"]
    table, _ = simulate(**case["data"])
    params = GammParams(backend="native", simultaneous=True, grid_points=40, **case["params"])
    prepared = prepare(table, params)
    model = NativeModel(prepared, params, True, params.rho)
    model.fit()
    curves, differences = _curves_from(model.design, model.beta_p, model.vp, prepared, params)
    fresh = posterior_draws(model.vp, seed=1)  # other draws than the band's
    for level in prepared.levels:
        rows = curves[curves["level"] == level]
        x = model.design(level, rows["time"].to_numpy())
        crit = rows["crit"].iloc[0]
        assert crit > params.ci  # wider than the pointwise band
        inside = np.all(np.abs(x @ fresh.T) <= crit * rows["se"].to_numpy()[:, None], axis=0)
        assert abs(inside.mean() - 0.95) < 0.01
    fit = BackendFit(parametric=[], smooths=[], fit_stats={}, curves=curves, differences=differences,
                     version="test", method="test", rho=0.5, fit_seconds=0.0)
    result = assemble(fit, prepared, params, {"backend": "native"}, [], None, 0.5)
    assert result["meta"]["band"].startswith("pointwise and simultaneous")
    assert all("sim_intervals" in item for item in result["intervals"])
    rows = pd.DataFrame(result["differences"])
    assert (rows["sim_upper"] - rows["sim_lower"] > rows["upper"] - rows["lower"]).all()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs R with mgcv (make setup)")
def test_mgcvs_simultaneous_multipliers_equal_the_native_ones_within_monte_carlo_error():
    table, _ = simulate(60, seed=1)
    params = GammParams(backend="mgcv", simultaneous=True, rho=0.5, grid_points=30)
    prepared = prepare(table, params)
    crits = {}
    for name in ("mgcv", "native"):
        fit = backend_named(name).fit(prepared, params, 0.5, True, logging.getLogger("test"))
        crits[name] = fit.curves.groupby("level")["crit"].first()
    np.testing.assert_allclose(crits["native"], crits["mgcv"], rtol=0.02)


def test_the_auto_backend_is_native_where_r_cannot_run(tmp_path, monkeypatch, capsys):
    from wavelens.cli import main
    from wavelens.plugins.gamm.backends.mgcv import MgcvBackend

    from conftest import REPO

    monkeypatch.setattr(MgcvBackend, "available", lambda self: "Rscript is not on the PATH")
    table, _ = simulate(20, seed=5, words=["ask", "wash"])
    path = tmp_path / "values.csv"
    table.to_csv(path, index=False)
    assert main(["stats", "fit", str(path), "--spec", str(REPO / "specs" / "gamm_table.yaml")]) == 0
    result = json.loads((tmp_path / "values-stats" / "statistics.0" / "result.json").read_text())
    assert result["meta"]["backend"] == "native" and result["meta"]["n_tokens"] == 20
    assert "backend auto → native" in capsys.readouterr().err
