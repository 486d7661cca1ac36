"""``wavelens evaluate`` against the loop people run today, as whole processes.

The reference is CMGAN's ``src/tools/compute_metrics.py`` (the Python port of
``compute_metrics.m`` behind the published VoiceBank+DEMAND tables) called file by
file in one process, the way its evaluation script does: PESQ, CSIG, CBAK, COVL,
segSNR and STOI. It is not part of wavelens: get it with
``git clone https://github.com/ruizhecao96/CMGAN`` and give its path in
``$WAVELENS_CMGAN_METRICS`` (…/CMGAN/src/tools/compute_metrics.py); without it the
side-by-side benchmark is skipped.

Both sides score the same six metrics on the 25 real pairs of ``../shared/data`` and on
500 pairs (the 25 repeated under other names), interleaved round by round on the same
machine, so that the ratio of the medians holds whatever else the machine runs. Peak
memory is the largest resident set of any one process of each side's tree, as GNU
``time`` reports it (started from ``time``, not from this test's process, whose own
resident set a child would inherit in the figure).

Run on demand: ``make bench``, or ``pytest tests/benchmarks/test_bench_evaluate.py
--benchmark-only -s``. Goal: wavelens ≥ 4× faster on 2 cores, with memory flat from 25
to 500 pairs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA

VOICEBANK = SHARED_DATA / "voicebank_demand"
REFERENCE_SCRIPT = os.environ.get("WAVELENS_CMGAN_METRICS", "")
TIME = "/usr/bin/time"  # GNU time, for the peak resident set
ROUNDS = int(os.environ.get("WAVELENS_BENCH_ROUNDS", "3"))
GOAL = 4.0

pytestmark = [
    pytest.mark.skipif(not (VOICEBANK / "clean").is_dir(),
                       reason=f"the shared VoiceBank+DEMAND pairs are not at {VOICEBANK}"),
    pytest.mark.skipif(not Path(REFERENCE_SCRIPT).is_file(),
                       reason="set $WAVELENS_CMGAN_METRICS to CMGAN's src/tools/compute_metrics.py"),
    pytest.mark.skipif(not Path(TIME).is_file(), reason=f"GNU time is not at {TIME} (apt-get install time)"),
]

# The reference loop: read each pair with soundfile (floats, as CMGAN's evaluation
# feeds compute_metrics), score it, and average the six values.
LOOP = textwrap.dedent("""
    import importlib.util, sys
    from pathlib import Path
    import numpy as np, soundfile as sf
    spec = importlib.util.spec_from_file_location("compute_metrics", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clean, noisy = Path(sys.argv[2]), Path(sys.argv[3])
    values = []
    for path in sorted(clean.glob("*.wav")):
        ref, rate = sf.read(path)
        est, _ = sf.read(noisy / path.name)
        values.append(module.compute_metrics(ref, est, rate, 0))
    print(" ".join(f"{v:.4f}" for v in np.mean(values, axis=0)))
""")


def _folders(root: Path, copies: int) -> tuple[Path, Path]:
    """clean/ and noisy/ holding the 25 pairs ``copies`` times (links, other names)."""
    clean, noisy = root / f"x{copies}" / "clean", root / f"x{copies}" / "noisy"
    for folder in (clean, noisy):
        folder.mkdir(parents=True)
    for path in sorted((VOICEBANK / "clean").glob("*.wav")):
        for copy in range(copies):
            name = f"{copy:03d}_{path.name}"
            (clean / name).symlink_to(path)
            (noisy / name).symlink_to(VOICEBANK / "noisy" / path.name)
    return clean, noisy


def _timed(command: list[str], scratch: Path) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB (the tree's largest process) and stdout."""
    peak_file = scratch / "peak.txt"
    start = time.perf_counter()
    done = subprocess.run([TIME, "-f", "%M", "-o", str(peak_file), *command], capture_output=True, text=True,
                          cwd=REPO)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds, int(peak_file.read_text().split()[-1]) / 1024, done.stdout


def test_bench_evaluate_against_the_reference_loop(tmp_path, benchmark):
    """Run once under pytest-benchmark (the default test run skips it)."""
    benchmark.pedantic(_against_the_reference_loop, args=(tmp_path, benchmark.extra_info), rounds=1,
                       iterations=1)


def _against_the_reference_loop(tmp_path: Path, info: dict) -> None:
    sizes = {25: _folders(tmp_path, 1), 500: _folders(tmp_path, 20)}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    outputs: dict[tuple[str, int], str] = {}
    for round_ in range(ROUNDS):
        for n, (clean, noisy) in sizes.items():
            commands = {
                "reference loop": [sys.executable, "-c", LOOP, REFERENCE_SCRIPT, str(clean), str(noisy)],
                "wavelens evaluate": [sys.executable, "-m", "wavelens.cli", "evaluate", "--reference",
                                      str(clean), "--estimate", str(noisy), "--metrics", "composite,stoi",
                                      "--out", str(tmp_path / f"scores-{n}-{round_}")],
            }
            order = list(commands) if round_ % 2 == 0 else list(commands)[::-1]
            for side in order:
                seconds, peak, out = _timed(commands[side], tmp_path)
                results.setdefault((side, n), []).append((seconds, peak))
                outputs[(side, n)] = out
    lines = ["", f"{'side':<18} {'pairs':>5} {'median s':>9} {'per pair ms':>11} {'peak MB':>8}"]
    medians = {}
    for (side, n), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        median = statistics.median(s for s, _ in runs)
        medians[(side, n)] = median
        peak = max(p for _, p in runs)
        lines.append(f"{side:<18} {n:>5} {median:>9.2f} {1000 * median / n:>11.1f} {peak:>8.0f}")
    for n in sizes:
        ratio = medians[("reference loop", n)] / medians[("wavelens evaluate", n)]
        info[f"ratio_{n}"] = ratio
        lines.append(f"{n} pairs: wavelens is {ratio:.2f}x the reference loop's speed (goal {GOAL}x)")
    per_pair = (medians[("wavelens evaluate", 500)] - medians[("wavelens evaluate", 25)]) / 475
    estimate = medians[("wavelens evaluate", 25)] + 799 * per_pair
    lines.append(f"the 824-file VoiceBank test set, estimated: {estimate:.0f} s "
                 f"(reference loop: {824 * medians[('reference loop', 500)] / 500:.0f} s)")
    print("\n".join(lines))
    print("reference means (PESQ CSIG CBAK COVL SSNR STOI), 25 pairs:",
          outputs[("reference loop", 25)].strip())
