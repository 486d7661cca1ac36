"""GAMM fit time and peak memory per backend at the paper's size: 1,067 tokens × 16
samples, 8 words, random smooths per token and AR1 (the fixed-part backends fit
without them, as they must); the native backend also at the fiwGAN size (391 tokens)
and on the fricative analysis' shape (time-normalised intervals of varying length,
4 layers), with the random-effect test, and against mgcv at 200 tokens (the largest
difference per table).

Run on demand: ``pytest tests/benchmarks/test_bench_gamm.py --benchmark-only``.
Each fit runs in a fresh process, whose peak resident memory is recorded in
``extra_info`` (for mgcv, the R child's). mgcv at this size needs about 20 GB and
20 minutes on the 2-core machine: it is marked ``slow`` as well.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = """
import json, logging, resource, sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from gamm_data import simulate
from wavelens.plugins.gamm.backends import backend_named
from wavelens.plugins.gamm.model import GammParams, prepare
backend = backend_named({backend!r})
reason = backend.available()
if reason:
    print(json.dumps({{"skip": reason}})); sys.exit(0)
fixed = backend.fixed_only
params = GammParams(backend={backend!r}, reference="ask", rho=0 if fixed else 0.6,
                    random_smooths=not fixed, random_test={backend!r} == "native")
table, _ = simulate({tokens}, seed=0)
prepared = prepare(table, params)
started = time.perf_counter()
fit = backend.fit(prepared, params, params.rho, params.random_smooths, logging.getLogger())
wall = time.perf_counter() - started
usage = resource.getrusage
peak = max(usage(resource.RUSAGE_SELF).ru_maxrss, usage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({{"wall_s": wall, "fit_s": fit.fit_seconds, "peak_gib": peak / 2**20,
                  "summary_s": fit.fit_stats.get("summary_seconds"), "n_coef": fit.fit_stats["n_coef"]}}))
"""


def _fit(backend: str, tokens: int = 1067) -> dict:
    script = SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), backend=backend, tokens=tokens)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("mgcv", marks=pytest.mark.slow),
        "native",
        "mssm",
        "pygam",
        "statsmodels",
    ],
)
def test_bench_gamm_paper_size(benchmark, backend):
    outcome = {}

    def run():
        outcome.update(_fit(backend))

    benchmark.pedantic(run, rounds=1, iterations=1)
    if "skip" in outcome:
        pytest.skip(outcome["skip"])
    benchmark.extra_info.update(outcome)


@pytest.mark.parametrize("tokens", [391])
def test_bench_gamm_native_fiwgan_size(benchmark, tokens):
    outcome = {}
    benchmark.pedantic(lambda: outcome.update(_fit("native", tokens)), rounds=1, iterations=1)
    benchmark.extra_info.update(outcome)


FRICATIVES = """
import json, logging, resource, sys, time
import numpy as np, pandas as pd
sys.path[:0] = [{repo!r}]
from wavelens.plugins.gamm.backends import backend_named
from wavelens.plugins.gamm.model import GammParams, prepare
rng = np.random.default_rng(0)
rows = []
for t in range(400):  # [s] and [ʃ] intervals of 8-40 frames, time normalised to 0-1
    phone, n = ("s", "sh")[t % 2], int(rng.integers(8, 41))
    x = np.arange(n) / (n - 1)
    for layer in range(4):
        y = np.sin(3 * x + 0.4 * (phone == "s") * layer) + rng.normal(0, 0.3, n) + rng.normal(0, 0.2)
        rows += [{{"layer": f"conv{{layer + 1}}", "token": f"t{{t:03d}}", "phone": phone,
                   "time": a, "value": b}} for a, b in zip(x, y)]
table = pd.DataFrame(rows)
backend = backend_named("native")
started = time.perf_counter()
for layer, part in table.groupby("layer"):
    params = GammParams(backend="native", factor="phone", time="time", reference="s", rho="estimate")
    prepared = prepare(part.drop(columns="layer"), params)
    backend.fit(prepared, params, params.rho, True, logging.getLogger())
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({{"wall_s": wall, "peak_gib": peak, "rows": len(table), "layers": 4}}))
"""


def test_bench_gamm_native_fricative_shape(benchmark):
    outcome = {}

    def run():
        script = FRICATIVES.format(repo=str(REPO))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        outcome.update(json.loads(done.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(outcome)


COMPARE = """
import json, logging, sys, time
import numpy as np, pandas as pd
sys.path[:0] = [{repo!r}, {tests!r}]
from gamm_data import simulate
from gamm_reference import relative_gap
from wavelens.plugins.gamm.backends import backend_named
from wavelens.plugins.gamm.model import GammParams, prepare
table, _ = simulate(200, seed=0)
out = {{}}
fits = {{}}
for name in ("mgcv", "native"):
    params = GammParams(backend=name, reference="ask", rho=0.6)
    prepared = prepare(table, params)
    started = time.perf_counter()
    fits[name] = backend_named(name).fit(prepared, params, params.rho, True, logging.getLogger())
    out[name + "_s"] = time.perf_counter() - started
a, b = fits["native"], fits["mgcv"]
gap = lambda x, y: relative_gap(np.asarray(x, float), np.asarray(y, float))
rows = lambda fit, part, k: [r[k] for r in getattr(fit, part)]
out["parametric"] = max(gap(rows(a, "parametric", k), rows(b, "parametric", k))
                        for k in ("estimate", "se", "p"))
out["smooths"] = max(gap(rows(a, "smooths", k)[:-1], rows(b, "smooths", k)[:-1])
                     for k in ("edf", "ref_df", "stat", "p"))
out["random_smooth"] = max(gap([a.smooths[-1][k]], [b.smooths[-1][k]]) for k in ("edf", "ref_df", "stat"))
out["curves"] = max(gap(a.curves[k], b.curves[k]) for k in ("fit", "se"))
out["differences"] = max(gap(a.differences[k], b.differences[k]) for k in ("diff", "se"))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_bench_gamm_native_against_mgcv_at_200_tokens(benchmark):
    if shutil.which("Rscript") is None:
        pytest.skip("needs R with mgcv")
    outcome = {}

    def run():
        script = COMPARE.format(repo=str(REPO), tests=str(REPO / "tests"))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        outcome.update(json.loads(done.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(outcome)
