"""Property: ``enhance`` and ``evaluate`` account for every file of a folder of
arbitrary audio (any length from none to a second, rate, channels, sample format,
NaN/Inf samples, truncated files) with no traceback."""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wavelens.cli import main

from conftest import REPO

SHIPPED = REPO / "weights" / "csm_vanet_cpu"

audio_files = st.fixed_dictionaries({
    "length": st.one_of(st.integers(0, 3), st.integers(4, 500), st.integers(501, 16000)),
    "rate": st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    "channels": st.integers(1, 3),
    "format": st.sampled_from([("WAV", "PCM_16"), ("WAV", "PCM_U8"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
                               ("WAV", "PCM_24"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24")]),
    "level": st.sampled_from([0.0, 1e-4, 0.1, 1.0, 4.0]),  # silent, faint, normal, full scale, clipped
    "special": st.sampled_from([None, None, "nan", "inf", "truncate"]),
    "seed": st.integers(0, 2**16),
})


def _write(folder: Path, index: int, spec: dict) -> Path:
    container, subtype = spec["format"]
    path = folder / f"f{index:02d}.{container.lower()}"
    rng = np.random.default_rng(spec["seed"])
    data = np.clip(rng.standard_normal((spec["length"], spec["channels"])) * spec["level"], -1, 1)
    if spec["special"] in ("nan", "inf") and subtype in ("FLOAT", "DOUBLE") and spec["length"]:
        data[rng.integers(0, spec["length"]), 0] = np.nan if spec["special"] == "nan" else np.inf
    sf.write(path, data, spec["rate"], subtype=subtype, format=container)
    if spec["special"] == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(rng.integers(0, len(raw) + 1))])
    return path


@pytest.mark.skipif(not (SHIPPED / "model.pt").is_file(), reason="needs the shipped weights/csm_vanet_cpu")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(audio_files, min_size=1, max_size=4))
def test_enhance_and_evaluate_account_for_every_file(specs):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        folder.mkdir()
        paths = [_write(folder, i, spec) for i, spec in enumerate(specs)]
        started = time.perf_counter()
        code = main(["enhance", str(folder), "-o", str(Path(scratch) / "out"), "--checkpoint", str(SHIPPED),
                     "--device", "cpu"])
        rows = list(csv.DictReader((Path(scratch) / "out" / "enhance.csv").read_text().splitlines()))
        assert sorted(Path(r["file"]).name for r in rows) == sorted(p.name for p in paths)
        assert code == (0 if all(r["outcome"] == "enhanced" for r in rows) else 1)
        for row in rows:
            if row["outcome"] == "enhanced":
                written, rate = sf.read(row["output"], dtype="float32", always_2d=True)
                source = sf.info(row["file"])
                assert (rate, len(written)) == (source.samplerate, source.frames)
                assert np.all(np.isfinite(written))
            else:
                assert row["reason"]
        code = main(["evaluate", "--reference", str(folder), "--estimate", str(folder), "--metrics", "stoi",
                     "--workers", "1", "--out", str(Path(scratch) / "scores")])
        scored = list(csv.DictReader((Path(scratch) / "scores" / "scores.csv").read_text().splitlines()))
        assert sorted(r["file"] for r in scored) == sorted(p.name for p in paths)
        assert code == (0 if all(r["status"] == "ok" for r in scored) else 1)
        assert all(r["status"] == "ok" or r["reason"] for r in scored)
        assert time.perf_counter() - started < 120  # seconds at most for 4 files of at most 1 s
