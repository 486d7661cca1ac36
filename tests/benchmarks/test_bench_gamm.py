"""GAMM fit time and peak memory per backend at the paper's size: 1,067 tokens × 16
samples, 8 words, random smooths per token and AR1 (the fixed-part backends fit
without them, as they must).

Run on demand: ``pytest tests/benchmarks/test_bench_gamm.py --benchmark-only``.
Each fit runs in a fresh process, whose peak resident memory is recorded in
``extra_info`` (for mgcv, the R child's). mgcv at this size needs about 20 GB and
20 minutes on the 2-core machine: it is marked ``slow`` as well.
"""

from __future__ import annotations

import json
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
                    random_smooths=not fixed, random_test=False)
table, _ = simulate(1067, seed=0)
prepared = prepare(table, params)
started = time.perf_counter()
fit = backend.fit(prepared, params, params.rho, params.random_smooths, logging.getLogger())
wall = time.perf_counter() - started
usage = resource.getrusage
peak = max(usage(resource.RUSAGE_SELF).ru_maxrss, usage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({{"wall_s": wall, "fit_s": fit.fit_seconds, "peak_gib": peak / 2**20,
                  "summary_s": fit.fit_stats.get("summary_seconds"), "n_coef": fit.fit_stats["n_coef"]}}))
"""


def _fit(backend: str) -> dict:
    script = SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), backend=backend)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("mgcv", marks=pytest.mark.slow),
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
