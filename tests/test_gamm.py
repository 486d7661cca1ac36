"""The GAMM statistic: data checks, the shared result schema, and the backends
against each other and against the truth of simulated data (tests/gamm_data.py)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from gamm_data import simulate

from wavelens import StageError
from wavelens.plugins.gamm.backends import (
    MgcvBackend,
    MssmBackend,
    PygamBackend,
    StatsmodelsBackend,
    backend_named,
)
from wavelens.plugins.gamm.model import GammParams, prepare, significant_intervals
from wavelens.plugins.gamm.statistic import Gamm, GammStatisticParams

LOG = logging.getLogger("test-gamm")
# One ρ for every AR1 backend, as the comparison needs (docs/gamm.md).
SETTINGS = {
    "reference": "ask",
    "rho": 0.6,
    "response": "value",
    "factor": "word",
    "time": "sample",
    "token": "token",
}


def _skip_unless(backend) -> None:
    reason = backend.available()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def simulated():
    return simulate(200, seed=0)


def _fit(backend, table):
    params = GammParams(backend=backend.name, **SETTINGS)
    prepared = prepare(table, params)
    return prepared, backend.fit(prepared, params, params.rho, True, LOG)


@pytest.fixture(scope="module")
def mssm_fit(simulated):
    backend = MssmBackend()
    _skip_unless(backend)
    return _fit(backend, simulated[0])


@pytest.fixture(scope="module")
def mgcv_fit(simulated):
    backend = MgcvBackend()
    _skip_unless(backend)
    return _fit(backend, simulated[0])


# -- the data -------------------------------------------------------------------------


def _table():
    return pd.DataFrame(
        {
            "token": ["a1"] * 3 + ["b1"] * 3,
            "word": ["a"] * 3 + ["b"] * 3,
            "sample": [1, 2, 3] * 2,
            "value": np.arange(6.0),
        }
    )


def test_missing_columns_are_named_with_what_the_table_has():
    with pytest.raises(StageError, match=r"no column 'value'.*it has token, word, sample, y"):
        prepare(_table().rename(columns={"value": "y"}), GammParams())


def test_a_single_level_is_an_error():
    with pytest.raises(StageError, match="1 level"):
        prepare(_table().assign(word="a"), GammParams())


def test_nan_values_are_an_error_that_names_rows():
    table = _table()
    table.loc[4, "value"] = np.nan
    with pytest.raises(StageError, match="1 rows have a missing or non-finite value .first rows: 4"):
        prepare(table, GammParams())


def test_single_sample_tokens_are_dropped_and_unsorted_tables_sorted_with_notes():
    lone = pd.DataFrame({"token": ["c1"], "word": ["b"], "sample": [1], "value": [0.0]})
    table = pd.concat([_table(), lone])
    prepared = prepare(table.iloc[::-1], GammParams())
    assert prepared.data["token"].tolist() == ["a1"] * 3 + ["b1"] * 3
    assert prepared.data["time"].tolist() == [1.0, 2.0, 3.0] * 2
    assert prepared.data["start"].tolist() == [True, False, False] * 2
    assert any("single sample" in note for note in prepared.notes)
    assert any("not sorted" in note for note in prepared.notes)


def test_a_token_in_two_levels_and_duplicate_times_are_errors():
    with pytest.raises(StageError, match="more than one word"):
        prepare(_table().assign(token="a1"), GammParams())
    doubled = pd.concat([_table(), _table()])
    with pytest.raises(StageError, match="two rows at the same sample"):
        prepare(doubled, GammParams())


def test_significant_points_merge_into_intervals():
    time = np.arange(8.0)
    flags = np.array([0, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
    assert significant_intervals(time, flags) == [[1.0, 2.0], [5.0, 7.0]]
    assert significant_intervals(time, np.zeros(8, dtype=bool)) == []


def test_unknown_backends_and_uncapable_backends_fail_with_the_alternatives():
    with pytest.raises(StageError, match="no GAMM backend 'nope'; known: .*mgcv.*mssm"):
        backend_named("nope")
    statistic = Gamm(GammStatisticParams(backend="pygam"))
    with pytest.raises(StageError, match="pygam backend cannot fit random smooths; use backend mgcv or mssm"):
        statistic._plan(PygamBackend())
    statistic = Gamm(GammStatisticParams(backend="statsmodels", random_smooths=False))
    with pytest.raises(StageError, match="cannot fit an AR1 correction; use backend mgcv or mssm"):
        statistic._plan(StatsmodelsBackend())
    accepting = Gamm(GammStatisticParams(backend="pygam", accept_approximation=True))
    random, rho, flags = accepting._plan(PygamBackend())
    assert (random, rho) == (False, 0)
    assert len(flags) == 3 and "anti-conservative" in flags[-1]


# -- fits -------------------------------------------------------------------------------


def _coverage(prepared, fit, truth) -> float:
    curves = fit.curves
    inside = []
    for word, rows in curves.groupby("level"):
        true = truth[truth["word"] == word].set_index("sample")["value"]
        at = np.interp(rows["time"], true.index.to_numpy(dtype=float), true.to_numpy())
        inside += list((at >= rows["fit"] - 1.96 * rows["se"]) & (at <= rows["fit"] + 1.96 * rows["se"]))
    return float(np.mean(inside))


def test_mssm_bands_cover_the_true_word_curves(mssm_fit, simulated):
    prepared, fit = mssm_fit
    assert _coverage(prepared, fit, simulated[1]) >= 0.9


def test_mgcv_bands_cover_the_true_word_curves(mgcv_fit, simulated):
    prepared, fit = mgcv_fit
    assert _coverage(prepared, fit, simulated[1]) >= 0.9


def _level_contrasts(fit) -> np.ndarray:
    """Each level's mean over the time grid minus the reference level's."""
    means = fit.curves.groupby("level", sort=False)["fit"].mean().to_numpy()
    return means[1:] - means[0]


def test_mgcv_and_mssm_agree_on_curves_estimates_and_differences(mgcv_fit, mssm_fit):
    (_, mgcv), (_, mssm) = mgcv_fit, mssm_fit
    rmse = np.sqrt(np.mean((mgcv.curves["fit"].to_numpy() - mssm.curves["fit"].to_numpy()) ** 2))
    assert rmse <= 0.01
    assert [r["term"] for r in mgcv.parametric] == [r["term"] for r in mssm.parametric]
    # Level terms are compared as level means: mgcv's word rows are curve means over its
    # compressed frame, not over the data (docs/gamm.md, "What the word rows mean").
    assert np.max(np.abs(_level_contrasts(mgcv) - _level_contrasts(mssm))) <= 0.02

    def significant(fit):
        d = fit.differences
        return ((d["diff"] - 1.96 * d["se"] > 0) | (d["diff"] + 1.96 * d["se"] < 0)).to_numpy()

    assert np.mean(significant(mgcv) == significant(mssm)) >= 0.9


@pytest.mark.parametrize("backend", [PygamBackend(), StatsmodelsBackend()], ids=lambda b: b.name)
def test_fixed_part_backends_give_mgcvs_curves_with_narrower_bands(backend, mgcv_fit, simulated):
    _skip_unless(backend)
    params = GammParams(backend=backend.name, **{**SETTINGS, "rho": 0})
    prepared = prepare(simulated[0], params)
    fit = backend.fit(prepared, params, 0, False, LOG)
    reference = mgcv_fit[1].curves
    assert np.sqrt(np.mean((fit.curves["fit"].to_numpy() - reference["fit"].to_numpy()) ** 2)) <= 0.02
    assert np.max(np.abs(_level_contrasts(fit) - _level_contrasts(mgcv_fit[1]))) <= 0.02
    # Without random smooths and AR1 the bands ignore the token correlation: too narrow.
    assert np.median(fit.curves["se"].to_numpy() / reference["se"].to_numpy()) < 0.9


def test_mgcv_reports_ref_df_and_tests_the_random_smooth(mgcv_fit):
    _, fit = mgcv_fit
    rows = {r["term"]: r for r in fit.smooths}
    assert list(rows) == [
        "s(sample)",
        *[f"s(sample):word={w}" for w in ["carry", "dark", "greasy", "suit", "wash", "water", "year"]],
        "s(sample,token)",
    ]
    assert all(r["ref_df"] is not None and r["p"] is not None for r in rows.values())
    random = rows["s(sample,token)"]
    assert random["kind"] == "random" and random["p_method"] == "wood2013_re"
    assert fit.rho == pytest.approx(0.6)
    stats = fit.fit_stats  # what summary.gam prints under the tables
    assert stats["r_sq_adjusted"] and stats["criterion"] == "fREML"
    assert stats["criterion_value"] == stats["reml"]
    assert 0 < stats["r_sq"] < 1 and 0 < stats["dev_expl"] < 1 and stats["scale"] > 0


def test_without_the_random_test_mgcv_keeps_the_random_smooth_row_untested():
    backend = MgcvBackend()
    _skip_unless(backend)
    table, _ = simulate(30, seed=4, words=["ask", "wash", "dark"])
    params = GammParams(backend="mgcv", **{**SETTINGS, "rho": 0.3}, random_test=False, k=6)
    prepared = prepare(table, params)
    fit = backend.fit(prepared, params, params.rho, True, LOG)
    rows = {r["term"]: r for r in fit.smooths}
    assert list(rows) == ["s(sample)", "s(sample):word=dark", "s(sample):word=wash", "s(sample,token)"]
    random = rows["s(sample,token)"]
    assert random["kind"] == "random" and 1 < random["edf"] < 30 * 5
    assert pd.isna(random["p"]) and pd.isna(random["stat"])
    assert random["p_method"] == "not tested (random_test: false)"
    assert all(np.isfinite(rows[t]["p"]) for t in list(rows)[:3])


def test_the_statistic_writes_the_schema_tables_and_figures(tmp_path):
    backend = MssmBackend()
    _skip_unless(backend)
    table, _ = simulate(48, seed=1, words=["ask", "wash", "dark"])
    table["layer"] = "conv5"
    path = tmp_path / "feature_maps.csv"
    table.to_csv(path, index=False)
    from wavelens import StageContext, resolve_placement

    ctx = StageContext(
        stage="statistics.0",
        workdir=tmp_path / "out",
        placement=resolve_placement("cpu"),
        seed=0,
        log=LOG,
        spec_dir=tmp_path,
    )
    ctx.workdir.mkdir()
    Gamm(GammStatisticParams(backend="mssm", reference="ask", rho="estimate")).fit_table(path, ctx)
    folder = ctx.workdir / "conv5"
    result = json.loads((folder / "result.json").read_text())
    assert set(result) == {"meta", "parametric", "smooths", "fit_stats", "curves", "differences", "intervals"}
    meta = result["meta"]
    assert meta["rho_source"].startswith("estimated") and meta["rho"] == meta["rho_estimated"]
    assert meta["levels"] == ["ask", "dark", "wash"] and meta["capabilities"]["ar1"]
    assert [i["a"] for i in result["intervals"]] == ["dark", "wash"]
    assert len(result["curves"]["fit"]) == 3 * 100
    for name in (
        "parametric.csv",
        "smooths.csv",
        "curves.csv",
        "differences.csv",
        "intervals.csv",
        "table.txt",
        "raw.png",
        "curves.png",
        "differences.png",
    ):
        assert (folder / name).is_file(), name
    text = (folder / "table.txt").read_text()
    assert "A. parametric coefficients" in text and "word=wash" in text and "s(sample,token)" in text
    # mgcv's footer under the tables: R², deviance explained, the criterion, scale, n
    assert "R-sq. = " in text and "Deviance explained = " in text
    assert f"REML = {result['fit_stats']['reml']:.5g}" in text and f"n = {meta['n_obs']}" in text
    section = Gamm(GammStatisticParams(backend="mssm"))._section(
        {**result, "meta": {**meta, "warnings": ["repeated 1-d smooths of sample"]}}, "conv5", "", [])
    assert "- **mssm warned:** repeated 1-d smooths of sample" in section and "Scale est. = " in section
    report = (ctx.workdir / "report.md").read_text()
    assert "![curves.png](conv5/curves.png)" in report and "![raw.png](conv5/raw.png)" in report
    assert "48 tokens" in report and "Figure 3 (left)" in report  # captions say what was run
    assert not (ctx.workdir / "layers.csv").exists()  # one layer: no comparison across layers


def test_several_layers_get_level_and_shape_contrasts_side_by_side(tmp_path):
    backend = MssmBackend()
    _skip_unless(backend)
    one, _ = simulate(40, seed=2, words=["s", "sh"])
    # conv1: the words differ in shape and level (as simulated); conv2: no difference
    # at all (both words' values drawn around one curve)
    flat = one.copy()
    flat["value"] = one.groupby("sample")["value"].transform("mean") + (
        np.random.default_rng(0).normal(0, 0.05, len(one)))
    table = pd.concat([one.assign(layer="conv1"), flat.assign(layer="conv2")], ignore_index=True)
    table = table.rename(columns={"word": "phone"})
    path = tmp_path / "intervals.csv"
    table.to_csv(path, index=False)
    from wavelens import StageContext, resolve_placement

    ctx = StageContext(stage="statistics.0", workdir=tmp_path / "out", placement=resolve_placement("cpu"),
                       seed=0, log=LOG, spec_dir=tmp_path)
    ctx.workdir.mkdir()
    params = GammStatisticParams(backend="mssm", factor="phone", reference="s", rho=0.3, k=6)
    Gamm(params).fit_table(path, ctx)
    rows = pd.read_csv(ctx.workdir / "layers.csv")
    assert list(rows["layer"]) == ["conv1", "conv2"] and set(rows["contrast"]) == {"sh − s"}
    conv1, conv2 = rows.iloc[0], rows.iloc[1]
    assert conv1["level_p"] < 0.05 and conv1["shape_p"] < 0.05
    assert conv2["level_p"] > 0.05 and conv2["shape_p"] > 0.05
    assert conv2["significant_regions"] == "none"
    assert (ctx.workdir / "layers.png").is_file()
    report = (ctx.workdir / "report.md").read_text()
    assert report.index("### across layers") < report.index("### conv1")
    assert "| conv1 | sh − s |" in report and "Figure 3 (right)" in report


# -- in a run, and on the command line ---------------------------------------------------


def test_a_run_fits_the_probe_table_of_each_requested_layer(tmp_path):
    _skip_unless(MssmBackend())
    from test_timit import make_tree

    from wavelens.host import Run, load_spec_text

    root = make_tree(tmp_path / "timit", speakers=10)
    resolved = load_spec_text(
        "spec_version: 1\nname: gamm-run\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 2}}\n"
        "probe: [{plugin: feature_map_average, params: {layers: ['q_network.act5'], split: train, "
        "figures_per_word: 0}}]\n"
        "statistics: [{plugin: gamm, params: {backend: mssm, reference: ask, rho: 0.3, "
        "random_smooths: false, k: 6}}]\n",
        spec_dir=tmp_path,
    )
    directory = Run(resolved, runs_dir=tmp_path / "runs").execute()
    stage = directory / "stages" / "statistics.0"
    result = json.loads((stage / "q_network.act5" / "result.json").read_text())
    assert result["meta"]["layer"] == "q_network.act5" and result["meta"]["levels"] == ["ask", "wash"]
    assert [r["term"] for r in result["parametric"]] == ["(Intercept)", "word=wash"]
    assert all(np.isfinite(r["estimate"]) for r in result["parametric"])
    report = (directory / "report.md").read_text()
    assert "A. parametric coefficients" in report and "q_network.act5/curves.png" in report


def test_stats_fit_command_and_run_refusing_statistics_without_probes(tmp_path, capsys):
    _skip_unless(MssmBackend())
    from wavelens.cli import main

    table, _ = simulate(24, seed=2, words=["ask", "wash"])
    table.to_csv(tmp_path / "table.csv", index=False)
    spec = tmp_path / "gamm.yaml"
    spec.write_text(
        "spec_version: 1\nname: table\nstatistics:\n"
        "  - {plugin: gamm, params: {backend: mssm, rho: 0.5, random_smooths: false}}\n"
    )
    assert (
        main(
            ["stats", "fit", str(tmp_path / "table.csv"), "--spec", str(spec), "--out", str(tmp_path / "out")]
        )
        == 0
    )
    assert (tmp_path / "out" / "statistics.0" / "table.txt").is_file()
    assert main(["run", str(spec), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "wavelens stats fit TABLE --spec SPEC" in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.parametrize(
    "backend", [MssmBackend(), PygamBackend(), StatsmodelsBackend()], ids=lambda b: b.name
)
def test_per_level_coding_names_one_smooth_per_level_and_gives_the_same_curves(backend):
    # The two codings parametrise the same curves (up to how each smooth is penalised).
    _skip_unless(backend)
    table, _ = simulate(60, seed=3, words=["ask", "dark", "wash"])
    fits = {}
    for coding in ("difference", "per_level"):
        params = GammParams(
            backend=backend.name,
            reference="ask",
            rho=0,
            random_smooths=False,
            coding=coding,
            pairs=[("wash", "dark")],
        )
        fits[coding] = backend.fit(prepare(table, params), params, 0, False, LOG)
    terms = [r["term"] for r in fits["per_level"].smooths]
    assert terms == ["s(sample):word=ask", "s(sample):word=dark", "s(sample):word=wash"]
    assert {r["kind"] for r in fits["per_level"].smooths} == {"per_level"}
    a, b = fits["difference"].curves["fit"].to_numpy(), fits["per_level"].curves["fit"].to_numpy()
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.02
    pairs = fits["per_level"].differences[["a", "b"]].drop_duplicates().to_numpy().tolist()
    assert pairs == [["wash", "dark"]]


def test_a_package_adds_a_backend_through_an_entry_point(tmp_path, monkeypatch):
    import sys

    site = tmp_path / "site"
    (site / "ep_gamm_backend-1.0.dist-info").mkdir(parents=True)
    (site / "ep_gamm_backend.py").write_text(
        "from wavelens.plugins.gamm.backends import PygamBackend\n\n"
        "class Mine(PygamBackend):\n    name = 'mine'\n"
    )
    (site / "ep_gamm_backend-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ep_gamm_backend\nVersion: 1.0\n"
    )
    (site / "ep_gamm_backend-1.0.dist-info" / "entry_points.txt").write_text(
        "[wavelens.gamm_backends]\nmine = ep_gamm_backend:Mine\n"
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        assert GammStatisticParams(backend="mine").backend == "mine"  # its name validates
        backend = backend_named("mine")
        assert backend.name == "mine" and backend.capabilities()["fixed_only"]
        with pytest.raises(StageError, match="known: mgcv, mssm, native, pygam, statsmodels, mine"):
            backend_named("other")
        # `wavelens plugins` lists it at the gamm statistic's extension point.
        from wavelens.cli import plugins_document
        from wavelens.host import PluginRegistry

        (point,) = [p for p in plugins_document(PluginRegistry.discover())["extension_points"]
                    if p["name"] == "gamm_backend"]
        assert point["group"] == "wavelens.gamm_backends" and point["plugin"].endswith("gamm.statistic")
        assert [(e["name"], e["source"]) for e in point["entries"]] == [
            ("mgcv", "builtin"), ("mssm", "builtin"), ("native", "builtin"), ("pygam", "builtin"),
            ("statsmodels", "builtin"), ("mine", "entry point from ep_gamm_backend")]
    finally:
        sys.modules.pop("ep_gamm_backend", None)


def test_the_built_in_backend_names_are_the_backends_there_are():
    from wavelens.plugins.gamm.backends import BACKENDS
    from wavelens.plugins.gamm.model import BACKENDS_POINT

    assert {name: BACKENDS_POINT.load(name) for name in BACKENDS_POINT.builtins} == BACKENDS


def test_validate_refuses_a_misspelt_backend_with_the_line_and_a_suggestion(tmp_path, capsys):
    from wavelens.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "spec_version: 1\nname: gamm-typo\n"
        "data: {plugin: tones}\n"
        "model: {plugin: tiny_cnn}\n"
        "train: {epochs: 1}\n"
        "probe: [{plugin: feature_map_average, params: {layers: [conv1]}}]\n"
        "statistics:\n"
        "  - plugin: gamm\n"
        "    params:\n"
        "      backend: mgvc\n"
    )
    assert main(["validate", str(spec)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(spec) in err and "statistics.0.params.backend" in err and "line 10" in err
    assert "no GAMM backend 'mgvc'; did you mean 'mgcv'?" in err


def test_the_statsmodels_smooths_are_free_at_the_first_sample():
    """A word whose curve starts high and falls: without the spline basis's first
    function (statsmodels' default include_intercept=False) every smooth is pinned at
    the first sample, and the fitted curve there misses by about the start's height."""
    backend = StatsmodelsBackend()
    _skip_unless(backend)
    rng = np.random.default_rng(3)
    sample = np.arange(1, 17)
    truth = {"ask": np.zeros(16), "wash": 1.5 * np.exp(-(sample - 1) / 2.0)}
    rows = [{"token": f"{word}{t}", "word": word, "sample": s, "value": v + rng.normal(0, 0.05)}
            for word, curve in truth.items() for t in range(20) for s, v in zip(sample, curve, strict=True)]
    params = GammParams(backend="statsmodels", **{**SETTINGS, "rho": 0}, k=8)
    prepared = prepare(pd.DataFrame(rows), params)
    curves = backend.fit(prepared, params, 0, False, LOG).curves
    for word, curve in truth.items():
        fitted = curves[curves["level"] == word]
        at = np.interp(sample, fitted["time"].to_numpy(), fitted["fit"].to_numpy())
        assert abs(at[0] - curve[0]) < 0.1, word
        assert np.sqrt(np.mean((at - curve) ** 2)) < 0.05, word


def test_the_table_spec_fits_a_plain_mgcv_style_csv_without_workarounds(tmp_path, capsys):
    """Value, Sample, Word and UniqueWord, no layer column: what people keep for mgcv.
    specs/gamm_table.yaml (which names a probe layer) fits it whole, with notes."""
    _skip_unless(MssmBackend())
    from wavelens.cli import main

    from conftest import REPO

    table, _ = simulate(30, seed=5, words=["ask", "wash"])
    names = {"value": "Value", "sample": "Sample", "word": "Word", "token": "UniqueWord"}
    plain = table.rename(columns=names)
    path = tmp_path / "values.csv"
    plain.to_csv(path, index=False)
    code = main(["stats", "fit", str(path), "--spec", str(REPO / "specs" / "gamm_table.yaml"),
                 "--set", "statistics.0.params.backend=mssm", "--set", "statistics.0.params.k=6"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "values-stats" / "statistics.0"
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["levels"] == ["ask", "wash"] and result["meta"]["n_tokens"] == 30
    report = (out / "report.md").read_text()
    assert "'UniqueWord' is taken as 'token'" in report and "fitted whole" in report
