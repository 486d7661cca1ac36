"""Speech-quality measures: hand-derived values on constructed signals, and the
published convention on real VoiceBank+DEMAND pairs."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from wavelens.plugins.metrics.quality import (
    composite,
    frames,
    llr_frames,
    raw_pesq_from_nb,
    segsnr_frames,
    si_sdr,
    stoi_score,
    trimmed_mean,
    wss_frames,
)

from conftest import SHARED_DATA

RATE = 16000


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Coloured noise with a slow envelope: every frame has energy and an LPC shape."""
    rng = np.random.default_rng(seed)
    white = rng.normal(size=int(seconds * RATE))
    coloured = np.convolve(white, [1.0, 0.9, 0.5, 0.2], mode="same")
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * np.arange(len(white)) / RATE)
    return 0.1 * coloured * envelope


def test_framing_is_30_ms_frames_every_quarter_frame():
    x = np.ones(RATE)
    f = frames(x, RATE)
    assert f.shape == (math.floor(RATE / 120 - 480 / 120), 480)  # 129 frames of 480
    n = np.arange(1, 481)
    np.testing.assert_allclose(f[0], 0.5 * (1 - np.cos(2 * np.pi * n / 481)))


def test_identical_signals_have_zero_llr_and_wss_and_the_maximum_segsnr():
    x = _speechlike()
    np.testing.assert_allclose(llr_frames(x, x, RATE), 0.0, atol=1e-12)
    np.testing.assert_allclose(wss_frames(x, x, RATE), 0.0, atol=1e-12)
    assert np.all(segsnr_frames(x, x, RATE) == 35.0)


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_a_pure_scaling_leaves_llr_and_wss_at_zero_and_sets_segsnr(gain):
    # LPC coefficients and spectral slopes (dB differences) do not change with a gain;
    # the error is (1 − g)·x in every frame, so each frame's SNR is −20·log10|1 − g|.
    x = _speechlike(seed=1)
    np.testing.assert_allclose(llr_frames(x, gain * x, RATE), 0.0, atol=1e-9)
    np.testing.assert_allclose(wss_frames(x, gain * x, RATE, int16_scaling=False), 0.0, atol=1e-9)
    np.testing.assert_allclose(segsnr_frames(x, gain * x, RATE), -20 * np.log10(abs(1 - gain)), atol=1e-9)


def test_segsnr_is_clipped_to_minus_10_and_35_db():
    x = _speechlike(seed=2)
    assert np.all(segsnr_frames(x, x + 100 * x, RATE) == -10.0)  # −40 dB
    assert np.all(segsnr_frames(x, x * (1 + 10 ** (-40 / 20)), RATE) == 35.0)  # +40 dB


def test_llr_grows_when_the_spectral_shape_changes():
    x = _speechlike(seed=3)
    tilted = np.convolve(x, [1.0, -0.95], mode="same")  # a first-order high-pass
    assert trimmed_mean(llr_frames(x, tilted, RATE)) > 0.3


def test_the_trimmed_mean_keeps_the_lowest_95_percent():
    values = np.arange(1.0, 21.0)  # 20 values: the lowest round(19) = 19 are kept
    assert trimmed_mean(values) == pytest.approx(np.mean(np.arange(1.0, 20.0)))


def test_si_sdr_of_an_orthogonal_error_is_its_power_ratio():
    t = np.arange(RATE) / RATE
    reference = np.sin(2 * np.pi * 100 * t)
    error = 0.1 * np.cos(2 * np.pi * 100 * t)  # orthogonal over whole periods
    assert si_sdr(reference, 3.0 * (reference + error)) == pytest.approx(20.0, abs=1e-6)


def test_raw_pesq_inverts_the_p862_1_mapping():
    raw = 2.5
    mos = 0.999 + 4.0 / (1 + math.exp(-1.4945 * raw + 4.6607))
    assert raw_pesq_from_nb(mos) == pytest.approx(raw, abs=1e-9)


VOICEBANK = SHARED_DATA / "voicebank_demand"


@pytest.mark.skipif(
    not (VOICEBANK / "reference_noisy.json").is_file(),
    reason=f"the shared VoiceBank+DEMAND pairs are not at {VOICEBANK}",
)
def test_the_voicebank_convention_matches_the_published_reference_values():
    reference = json.loads((VOICEBANK / "reference_noisy.json").read_text())["files"]
    assert len(reference) == 14
    for name, expected in reference.items():
        clean, rate = sf.read(VOICEBANK / "clean" / name)
        noisy, _ = sf.read(VOICEBANK / "noisy" / name)
        measured = composite(clean, noisy, rate)
        measured["stoi_pystoi"] = stoi_score(clean, noisy, rate)
        for key, value in expected.items():
            # The reference values are rounded to 4 decimals; PESQ and STOI call the
            # same libraries, so they agree to that rounding.
            tolerance = 1e-4 if key in ("pesq", "stoi_pystoi") else 0.01
            assert measured[key] == pytest.approx(value, abs=tolerance), (name, key)


# -- metric plugins and the evaluation of folders ----------------------------------------

from wavelens import presentation, summarize, summary_markdown  # noqa: E402
from wavelens.plugins.metrics.folders import evaluate_folders  # noqa: E402
from wavelens.plugins.metrics.speech import (  # noqa: E402
    Composite,
    CompositeParams,
    Pesq,
    PesqParams,
    SiSdr,
    SpeechParams,
    Stoi,
    StoiParams,
    Vad,
    VadParams,
    roc_auc,
)


def _metrics() -> dict:
    return {
        "composite": Composite(CompositeParams()),
        "stoi": Stoi(StoiParams()),
        "si_sdr": SiSdr(SpeechParams()),
    }


@pytest.mark.skipif(
    not (VOICEBANK / "reference_noisy.json").is_file(),
    reason=f"the shared VoiceBank+DEMAND pairs are not at {VOICEBANK}",
)
def test_evaluating_folders_in_worker_processes_reproduces_the_reference_values(tmp_path):
    reference = json.loads((VOICEBANK / "reference_noisy.json").read_text())["files"]
    rows, notes = evaluate_folders(VOICEBANK / "clean", VOICEBANK / "noisy", _metrics(), workers=2)
    assert notes == [] and len(rows) == 25 and all(r["status"] == "ok" for r in rows)
    by_file = {r["file"]: r for r in rows}
    names = {"stoi_pystoi": "stoi"}
    for name, expected in reference.items():
        for key, value in expected.items():
            tolerance = 1e-4 if key in ("pesq", "stoi_pystoi") else 0.01
            assert by_file[name][names.get(key, key)] == pytest.approx(value, abs=tolerance), (name, key)


def _write(folder, name, samples, rate=RATE, subtype="PCM_16"):
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, samples, rate, subtype=subtype)


def test_bad_pairs_become_error_entries_and_the_rest_is_scored(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    x = _speechlike(2.0, seed=5)
    noise = 0.02 * np.random.default_rng(6).normal(size=len(x))
    _write(clean, "good.wav", x)
    _write(noisy, "good.wav", x + noise)
    _write(clean, "silent.wav", np.zeros(RATE))
    _write(noisy, "silent.wav", noise[:RATE])
    _write(clean, "short.wav", x[:1000])
    _write(noisy, "short.wav", x[:1000])
    _write(clean, "rates.wav", x)
    _write(noisy, "rates.wav", x[: len(x) // 2], rate=8000)
    _write(clean, "nan.wav", x)
    _write(noisy, "nan.wav", np.where(np.arange(len(x)) == 100, np.nan, x), subtype="FLOAT")
    _write(clean, "lonely.wav", x)
    _write(clean, "stereo.wav", x)
    _write(noisy, "stereo.wav", np.stack([x + noise, x - noise], axis=1))
    rows, notes = evaluate_folders(clean, noisy, _metrics(), workers=1)
    status = {r["file"]: (r["status"], r["reason"]) for r in rows}
    assert status["good.wav"] == ("ok", "")
    stereo = next(r for r in rows if r["file"] == "stereo.wav")
    assert stereo["status"] == "ok" and stereo["notes"] == "the estimate has 2 channels, mixed to mono"
    assert "the reference is silent" in status["silent.wav"][1]
    assert "shorter than 0.25 s" in status["short.wav"][1]
    assert "sample rates differ" in status["rates.wav"][1]
    assert "NaN" in status["nan.wav"][1] or "finite" in status["nan.wav"][1]
    assert notes == ["1 reference file(s) have no estimate: lonely.wav"]
    summary = summarize(rows)
    assert summary[0]["scored"] == 2 and summary[0]["files"] == 6
    scored = [r["pesq"] for r in rows if r["status"] == "ok"]
    assert summary[0]["pesq"] == pytest.approx(np.mean(scored))
    assert "2 of 6" in summary_markdown(summary)


def test_a_silent_estimate_is_scored_as_the_worst_case_in_every_mean(tmp_path):
    """A system that outputs silence on failure must not be flattered: the file stays
    in every mean, at the bottom of each scale that has no value for silence."""
    from wavelens.plugins.metrics.speech import (
        Composite,
        CompositeParams,
        SiSdr,
        SpeechParams,
        Stoi,
        StoiParams,
    )

    clean, system = tmp_path / "clean", tmp_path / "system"
    for index in range(3):
        x = _speechlike(1.5, seed=70 + index)
        _write(clean, f"u{index}.wav", x)
        _write(system, f"u{index}.wav", np.zeros(len(x)) if index == 1 else x + 0.01 * _speechlike(1.5, 9))
    _write(clean, "short.wav", _speechlike(1.5, seed=80))
    _write(system, "short.wav", np.zeros(RATE))  # silent and shorter: cut, eps added: still silent
    metrics = {"composite": Composite(CompositeParams()), "stoi": Stoi(StoiParams()),
               "si_sdr": SiSdr(SpeechParams())}
    rows, notes = evaluate_folders(clean, system, metrics, workers=1)
    silent = {r["file"]: r for r in rows if "silent" in r["notes"]}
    assert set(silent) == {"u1.wav", "short.wav"} and all(r["status"] == "ok" for r in rows)
    for row in silent.values():
        assert (row["pesq"], row["csig"], row["cbak"], row["covl"], row["ssnr"]) == (1, 1, 1, 1, -10)
        assert row["stoi"] == 0.0 and math.isnan(row["llr"])
    (summary,) = summarize(rows)
    assert summary["scored"] == 4 and summary["pesq"] == pytest.approx(np.mean([r["pesq"] for r in rows]))
    assert any(note.startswith("2 estimate(s) are silent") for note in notes)
    from wavelens.plugins.metrics.speech import Pesq, PesqParams

    nb = Pesq(PesqParams(mode="nb", sample_rate=8000))
    nb.update([np.zeros(8000)], [_speechlike(1.0)[:8000]])
    assert nb.compute() == {"pesq_nb": 1.0}


def test_a_metric_that_fails_on_one_file_makes_an_error_entry_with_its_reason(tmp_path, monkeypatch):
    # PESQ raises NoUtterancesError on references in which it finds no speech; an
    # all-zero reference is refused before that, so the failure is provoked here.
    import pesq

    from wavelens.plugins.metrics import quality

    def no_utterances(*args, **kwargs):
        raise pesq.NoUtterancesError("b'No utterances detected'")

    monkeypatch.setattr(quality, "pesq_score", no_utterances)
    x = _speechlike(1.0, seed=10)
    _write(tmp_path / "clean", "a.wav", x)
    _write(tmp_path / "noisy", "a.wav", x)
    rows, _ = evaluate_folders(tmp_path / "clean", tmp_path / "noisy", _metrics(), workers=1)
    assert rows[0]["status"] == "error"
    assert rows[0]["reason"] == "composite: NoUtterancesError: b'No utterances detected'"
    assert summarize(rows)[0]["scored"] == 0


def test_a_value_that_could_not_be_computed_is_counted_not_quietly_left_out_of_the_mean():
    nan = float("nan")
    rows = [{"file": f"{i}.wav", "status": "ok", "reason": "", "snr": snr, "pesq": 2.0 + i, "csig": csig}
            for i, (snr, csig) in enumerate([(0, 3.0), (0, nan), (5, 4.0), (5, 5.0)])]
    (overall,) = summarize([{k: v for k, v in r.items() if k != "snr"} for r in rows])
    assert overall["csig"] == pytest.approx(4.0) and overall["missing"] == {"csig": 1}
    assert overall["pesq"] == pytest.approx(3.5) and overall["scored"] == 4
    table = summary_markdown([overall])
    assert "| all | 3.5 | 4 (3 of 4) | 4 of 4 |" in table and "mean over the n files" in table
    grouped = summarize(rows, by="snr")
    assert [g.get("missing", {}) for g in grouped] == [{"csig": 1}, {}]
    assert "1 of 2" in summary_markdown(grouped, by="snr")
    # A group whose mean is over fewer files weighs by those files in the variants' average.
    from wavelens._report import grouped_comparison

    variant = {"variant": "a", "_by": ["snr"], "_grouped": grouped, "_columns": []}
    _, _, records = grouped_comparison([variant])
    assert {r["snr"]: r["csig"] for r in records} == {0: 3.0, 5: 4.5}
    assert not any("missing" in key for r in records for key in r)


def test_scoring_workers_run_every_native_library_single_threaded(monkeypatch):
    from thread_counting import ThreadCounting

    from wavelens import available_cores, item_scorer

    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # what this process's own libraries were told
    with item_scorer({"threads": ThreadCounting()}, workers=2) as score:
        rows = [row for row, _ in score([(0, 0)] * 4)]
    assert {(r["threads_native_threads"], r["threads_torch_threads"]) for r in rows} == {(1.0, 1.0)}
    assert os.environ["OMP_NUM_THREADS"] == "4"  # left as it was here
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def test_summaries_group_by_a_column_under_the_metrics_labels():
    rows = [
        {
            "file": f"f{i}",
            "status": "ok",
            "reason": "",
            "seconds": 1.0,
            "notes": "",
            "snr": snr,
            "pesq": p,
            "stoi": 0.9,
        }
        for i, (snr, p) in enumerate([("0", 1.0), ("0", 2.0), ("5", 3.0)])
    ]
    rows.append({"file": "bad", "status": "error", "reason": "x", "seconds": 1.0, "notes": "", "snr": "5"})
    summary = summarize(rows, by="snr")
    assert [(s["snr"], s["pesq"], s["scored"], s["files"]) for s in summary] == [
        ("0", 1.5, 2, 2),
        ("5", 3.0, 1, 2),
    ]
    assert summary_markdown(summary, by="snr").splitlines()[0] == "| snr | pesq | stoi | files scored |"
    # with the metrics' presentation: their labels and order
    layout = presentation({"stoi": Stoi(StoiParams()), "pesq": Pesq(PesqParams())})
    assert [c["label"] for c in layout] == ["PESQ", "STOI"]
    table = summary_markdown(summarize(rows, by="snr", columns=layout), by="snr", columns=layout)
    assert table.splitlines()[0] == "| snr | PESQ | STOI | files scored |"
    assert table.splitlines()[2] == "| 0 | 1.50 | 0.90 | 2 of 2 |"


def test_pair_metric_states_merge_across_processes():
    x, y = _speechlike(seed=8), _speechlike(seed=9)
    whole, a, b = SiSdr(SpeechParams()), SiSdr(SpeechParams()), SiSdr(SpeechParams())
    whole.update([x + 0.1 * y, x], [x, x + 0.3 * y])
    a.update([x + 0.1 * y], [x])
    b.update([x], [x + 0.3 * y])
    a.merge(b.state())
    assert a.compute() == pytest.approx(whole.compute())


def test_vad_metric_counts_frames_and_ranks_for_the_auc():
    probabilities = torch.tensor([[0.9, 0.8, 0.3, 0.6], [0.1, 0.2, 0.7, 0.4]])
    labels = torch.tensor([[1, 1, 0, 0], [0, 1, 1, -1]])  # −1: padding, ignored
    vad = Vad(VadParams(threshold=0.5))
    vad.update(probabilities, labels)
    result = vad.compute()
    # 7 frames; predicted speech: .9 .8 .6 .7 -> tp 3 (.9 .8 .7), fp 1 (.6), fn 1 (.2), tn 2 (.3 .1)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["precision"] == pytest.approx(3 / 4) and result["recall"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(3 / 4)
    # positives .9 .8 .2 .7 against negatives .3 .6 .1: 10 of 12 pairs ordered right
    assert result["roc_auc"] == pytest.approx(10 / 12)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)


def test_the_evaluate_command_writes_per_file_scores_and_a_grouped_summary(tmp_path, capsys):
    from wavelens.cli import main

    for index, level in enumerate([0.01, 0.05, 0.2]):
        x = _speechlike(1.0, seed=20 + index)
        _write(tmp_path / "clean", f"u{index}.wav", x)
        _write(
            tmp_path / "enhanced",
            f"u{index}.wav",
            x + level * np.random.default_rng(index).normal(size=len(x)),
        )
    (tmp_path / "meta.csv").write_text("file,snr\nu0.wav,15\nu1.wav,5\nu2.wav,5\n")
    code = main(
        [
            "evaluate",
            "--reference",
            str(tmp_path / "clean"),
            "--estimate",
            str(tmp_path / "enhanced"),
            "--metrics",
            "stoi,si_sdr",
            "--by",
            "snr",
            "--meta",
            str(tmp_path / "meta.csv"),
            "--workers",
            "1",
            "--plot",
            "--out",
            str(tmp_path / "scores"),
        ]
    )
    assert code == 0
    lines = (tmp_path / "scores" / "scores.csv").read_text().splitlines()
    assert lines[0] == "file,status,reason,snr,seconds,stoi,si_sdr,notes" and len(lines) == 4
    summary = (tmp_path / "scores" / "summary.md").read_text()
    assert "Scored 3 of 3 paired files" in summary
    assert "| snr | STOI | SI-SDR | files scored |" in summary and "| 5 |" in summary
    # The spread of each metric over the files, and what the numbers depend on.
    record = json.loads((tmp_path / "scores" / "summary.json").read_text())
    values = [float(line.split(",")[6]) for line in lines[1:]]
    sdr = record["spread"]["si_sdr"]
    assert sdr["n"] == 3 and sdr["mean"] == pytest.approx(np.mean(values))
    assert sdr["sd"] == pytest.approx(np.std(values, ddof=1))
    half = 4.302653 * np.std(values, ddof=1) / np.sqrt(3)  # Student's t, 2 degrees of freedom
    assert sdr["ci95"] == pytest.approx([np.mean(values) - half, np.mean(values) + half], rel=1e-5)
    assert record["setup"]["pesq_mode"] == "wb"
    assert (tmp_path / "scores" / "scores.png").stat().st_size > 0 and "scores.png" in summary
    assert record["setup"]["stoi"] == "STOI (wavelens, pystoi's computation)"
    assert record["setup"]["packages"]["pystoi"] and "95 % CI" in summary and "packages" in summary


def test_grouped_summaries_order_numbers_numerically_and_split_items():
    from wavelens._evaluation import batch_of_one, split_items

    groups = [("10", "cafe"), ("-5", "cafe"), ("5", "babble"), ("-5", "babble")]
    rows = [{"item": str(i), "status": "ok", "reason": "", "snr": snr, "noise": noise, "pesq": float(i)}
            for i, (snr, noise) in enumerate(groups)]
    summary = summarize(rows, by=["snr", "noise"])
    assert [(s["snr"], s["noise"]) for s in summary] == [("-5", "babble"), ("-5", "cafe"), ("5", "babble"),
                                                        ("10", "cafe")]
    table = summary_markdown(summary, by=["snr", "noise"], columns=presentation({"pesq": Pesq(PesqParams())}))
    assert table.splitlines()[0] == "| snr | noise | PESQ | files scored |"
    preds = {"audio": [np.zeros(3), np.ones(4)], "vad": torch.zeros(2, 5)}
    items = split_items(preds, 2)
    assert items[1]["audio"].shape == (4,) and items[1]["vad"].shape == (5,)
    assert batch_of_one(items[1])["vad"].shape == (1, 5) and len(batch_of_one(items[1])["audio"]) == 1


def test_the_variants_grouped_means_take_a_block_per_noise_and_a_row_per_snr():
    from wavelens._report import grouped_comparison

    def grouped(pesq_a, pesq_b):
        return [{"snr_db": 0.0, "noise": "a", "files": 2, "scored": 2, "pesq": pesq_a, "stoi": 0.5},
                {"snr_db": 0.0, "noise": "b", "files": 2, "scored": 1, "pesq": pesq_b, "stoi": 0.7},
                {"snr_db": -5.0, "noise": "a", "files": 1, "scored": 1, "pesq": 1.0, "stoi": 0.4}]

    # How the metrics present themselves (metrics.json's "columns", from the plugins).
    columns = [{"key": "pesq", "label": "PESQ", "digits": 2, "rank": 10},
               {"key": "stoi", "label": "STOI", "digits": 2, "rank": 60}]
    by = ["snr_db", "noise"]
    rows = [{"variant": "noisy", "_by": by, "_grouped": grouped(1.0, 2.5), "_columns": columns},
            {"variant": "model", "_by": by, "_grouped": grouped(2.0, 4.0), "_columns": columns}]
    header, table, records = grouped_comparison(rows)
    assert header == ["snr_db", "method", "a PESQ", "a STOI", "b PESQ", "b STOI", "Average PESQ",
                      "Average STOI"]
    assert [r[:2] for r in table] == [["-5", "noisy"], ["-5", "model"], ["0", "noisy"], ["0", "model"]]
    assert table[0][4:6] == ["–", "–"]  # no item of noise b at -5 dB
    # the Average weighs each group by its scored items: (2·1.0 + 1·2.5) / 3
    assert records[2]["Average pesq"] == pytest.approx(1.5)
    assert records[3]["Average stoi"] == pytest.approx((2 * 0.5 + 0.7) / 3)
    # one grouping column: a row per value and variant, no column blocks
    single = [{**r, "_by": ["snr_db"], "_grouped": [{k: v for k, v in g.items() if k != "noise"}
                                                  for g in r["_grouped"]]} for r in rows]
    header, table, _ = grouped_comparison(single)
    assert header == ["snr_db", "method", "PESQ", "STOI"] and len(table) == 4
    assert grouped_comparison([{"variant": "x"}]) == ([], [], [])


def test_digitally_silent_frames_have_no_lpc_model_and_no_warning():
    import warnings

    from wavelens.plugins.metrics.quality import llr_frames, trimmed_mean

    rate, rng = 16000, np.random.default_rng(0)
    clean = rng.standard_normal(rate).astype(np.float64)
    clean[-800:] = 0.0  # zero padding at the end, as fixed-length clips have
    estimate = clean + 0.1 * rng.standard_normal(rate)
    estimate[-800:] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would fail the test
        values = llr_frames(clean, estimate, rate)
    silent = np.isnan(values)
    assert 0 < silent.sum() < 0.05 * len(values)  # only the silent frames
    assert np.isfinite(values[~silent]).all() and np.isfinite(trimmed_mean(values))


def test_a_comparison_names_every_variants_values_by_the_declared_columns():
    from wavelens._report import _expand_results

    declared = [{"key": "cbak", "label": "CBAK", "digits": 2, "rank": 30}]
    result = [{"metric": "composite", "value": {"cbak": 3.0, "llr": 0.5}},
              {"metric": "vad", "value": {"accuracy": 0.9}}]
    rows = [{"variant": "new", "_columns": declared, "_results": result},
            {"variant": "old", "_results": result}]  # a run from before metrics declared columns
    _expand_results(rows)
    for row in rows:
        assert row["cbak"] == 3.0 and row["composite_llr"] == 0.5 and row["vad_accuracy"] == 0.9


def test_stoi_that_pystoi_cannot_compute_is_missing_not_its_placeholder():
    from wavelens.plugins.metrics.quality import stoi_score

    rng = np.random.default_rng(0)
    mostly_silent = np.zeros(16000)
    mostly_silent[:3200] = rng.standard_normal(3200) * 0.1  # 0.2 s: too few frames after silence removal
    assert math.isnan(stoi_score(mostly_silent, mostly_silent, 16000))
    speech = _speechlike(2.0, seed=3)
    assert 0.99 < stoi_score(speech, speech, 16000) <= 1.0


@pytest.mark.parametrize("rate", [8000, 10000, 16000, 22050, 44100])
def test_stoi_is_pystois_computation_at_any_rate(rate):
    from pystoi import stoi as pystoi

    from wavelens.plugins.metrics.intelligibility import resample, stoi

    rng = np.random.default_rng(rate)
    n = int(2.5 * rate)
    envelope = 0.2 + np.abs(np.sin(2 * np.pi * 1.5 * np.arange(n) / rate))  # loud and quiet stretches
    clean = np.convolve(rng.standard_normal(n), [1.0, 0.7, 0.3], mode="same") * envelope * 0.1
    clean[n // 3: n // 3 + rate // 4] = 0  # a stretch of digital silence: frames removed
    noisy = clean + 0.05 * rng.standard_normal(n)
    assert stoi(clean, noisy, rate) == pytest.approx(pystoi(clean, noisy, rate), abs=1e-12)
    from pystoi.utils import resample_oct

    if rate != 10000:
        np.testing.assert_allclose(resample(clean, rate), resample_oct(clean, 10000, rate), atol=1e-14)


@pytest.mark.skipif(not (VOICEBANK / "clean").is_dir(), reason=f"the shared pairs are not at {VOICEBANK}")
def test_stoi_equals_pystoi_on_the_real_pairs():
    from pystoi import stoi as pystoi

    from wavelens.plugins.metrics.intelligibility import stoi

    for path in sorted((VOICEBANK / "clean").glob("*.wav")):
        clean, rate = sf.read(path)
        noisy, _ = sf.read(VOICEBANK / "noisy" / path.name)
        assert stoi(clean, noisy, rate) == pytest.approx(pystoi(clean, noisy, rate), abs=1e-10)


def test_the_clean_half_is_reused_for_another_estimate_of_the_same_reference_only():
    clean, other = _speechlike(2.0, seed=5), _speechlike(2.0, seed=6)
    first, second = clean + 0.03 * _speechlike(2.0, seed=7), clean * 0.8
    cache: dict = {}
    for estimate in (first, second):
        shared = composite(clean, estimate, RATE, pesq_value=2.0, cache=cache)
        assert shared == composite(clean, estimate, RATE, pesq_value=2.0)  # identical, not approximately
        assert stoi_score(clean, estimate, RATE, cache=cache) == stoi_score(clean, estimate, RATE)
    kept = cache["clean"], cache["stoi"]
    composite(clean, second, RATE, pesq_value=2.0, cache=cache)
    stoi_score(clean, second, RATE, cache=cache)
    assert cache["clean"] is kept[0] and cache["stoi"] is kept[1]  # not computed again
    assert composite(other, second, RATE, pesq_value=2.0, cache=cache) == composite(other, second, RATE,
                                                                                      pesq_value=2.0)
    assert stoi_score(other, second, RATE, cache=cache) == stoi_score(other, second, RATE)
    assert cache["clean"] is not kept[0] and cache["stoi"] is not kept[1]


def test_pairs_of_different_lengths_are_scored_by_the_voicebank_convention(tmp_path):
    """compute_metrics.m cuts both to the shorter and adds eps to both; the folder
    path must not cut first and so lose the eps (CSIG differs then)."""
    from wavelens import read_audio
    from wavelens.plugins.metrics.quality import composite

    clean = _speechlike(2.0, seed=21)
    clean[8000:9600] = 0.0  # digital silence, where eps decides what LLR sees
    estimate = np.concatenate([clean + 0.02 * _speechlike(2.0, seed=22), np.zeros(1600)])  # zero-padded
    estimate[8000:9600] = 0.0
    _write(tmp_path / "clean", "a.wav", clean)
    _write(tmp_path / "est", "a.wav", estimate)
    metrics = {"composite": Composite(CompositeParams())}
    rows, _ = evaluate_folders(tmp_path / "clean", tmp_path / "est", metrics, workers=1)
    (row,) = rows
    reference = composite(read_audio(tmp_path / "clean" / "a.wav")[0].astype(np.float64),
                          read_audio(tmp_path / "est" / "a.wav")[0].astype(np.float64), RATE)
    for key in ("csig", "cbak", "covl", "pesq", "llr", "wss", "ssnr"):
        assert row[key] == pytest.approx(reference[key], abs=1e-9), key
    assert "eps added" in row["notes"]


def test_narrowband_audio_gets_narrowband_pesq_under_its_own_name_and_is_not_upsampled_quietly(
        tmp_path, capsys):
    from scipy.signal import resample_poly

    from wavelens.cli import main

    clean = _speechlike(3.0, seed=31)
    noisy = clean + 0.05 * _speechlike(3.0, seed=32)
    _write(tmp_path / "clean", "a.wav", resample_poly(clean, 1, 2), rate=8000)
    _write(tmp_path / "noisy", "a.wav", resample_poly(noisy, 1, 2), rate=8000)
    args = ["evaluate", "--reference", str(tmp_path / "clean"), "--estimate", str(tmp_path / "noisy"),
            "--metrics", "pesq,composite", "--workers", "1"]
    # At 16 kHz (the default) 8 kHz audio is refused, not given a wideband PESQ of an empty band.
    assert main([*args, "--out", str(tmp_path / "wide")]) == 1
    out = capsys.readouterr()
    assert "recorded at 8000 Hz, below the scoring rate 16000 Hz" in out.out + out.err
    # At 8 kHz: narrowband PESQ, under pesq_nb, from pesq and composite (Loizou's convention) alike.
    assert main([*args, "--rate", "8000", "--out", str(tmp_path / "narrow")]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "PESQ (NB)" in out.err  # nothing on stdout: not even a C library's text
    row = next(csv.DictReader((tmp_path / "narrow" / "scores.csv").read_text().splitlines()))
    assert "pesq" not in row and 1.0 < float(row["pesq_nb"]) <= 4.6
    # Wideband PESQ at 8 kHz is refused before any file is read.
    assert main([*args, "--rate", "8000", "--pesq-mode", "wb", "--out", str(tmp_path / "x")]) == 2
    assert "wideband PESQ is defined at 16 kHz" in capsys.readouterr().err
    # Asked for, upsampling is done, with a note.
    assert main([*args, "--upsample", "--out", str(tmp_path / "up")]) == 0
    row = next(csv.DictReader((tmp_path / "up" / "scores.csv").read_text().splitlines()))
    assert "resampled from 8000 Hz" in row["notes"] and float(row["pesq"]) > 1.0


def test_several_systems_are_scored_and_compared_with_the_first_file_by_file(tmp_path, capsys):
    from scipy import stats

    from wavelens.cli import main

    for index in range(4):
        x = _speechlike(1.0, seed=40 + index)
        rng = np.random.default_rng(index)
        _write(tmp_path / "clean", f"u{index}.wav", x)
        _write(tmp_path / "a", f"u{index}.wav", x + 0.2 * rng.normal(size=len(x)) * 0.1)
        _write(tmp_path / "b", f"u{index}.wav", x + 0.05 * rng.normal(size=len(x)) * 0.1)
    out = tmp_path / "cmp"
    assert main(["evaluate", "--reference", str(tmp_path / "clean"), "--estimate", str(tmp_path / "a"),
                 str(tmp_path / "b"), "--metrics", "si_sdr", "--workers", "1", "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    per_file = {name: [float(row["si_sdr"]) for row in csv.DictReader(
        (out / name / "scores.csv").read_text().splitlines())] for name in ("a", "b")}
    (paired,) = record["paired"]
    difference = np.subtract(per_file["b"], per_file["a"])
    assert (paired["system"], paired["against"], paired["files"]) == ("b", "a", 4)
    assert paired["mean_difference"] == pytest.approx(difference.mean()) and paired["mean_difference"] > 0
    assert paired["t_test_p"] == pytest.approx(stats.ttest_rel(per_file["b"], per_file["a"]).pvalue)
    assert [m["system"] for m in record["means"]] == ["a", "b"]
    assert "paired t p" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 0 and not (out / "a" / "scores.png").exists()


def test_several_systems_in_one_pass_equal_each_scored_alone_and_share_the_reference(tmp_path, monkeypatch):
    from wavelens.plugins.metrics import intelligibility, quality
    from wavelens.plugins.metrics.folders import evaluate_folders, evaluate_systems
    from wavelens.plugins.metrics.speech import Composite, CompositeParams, Stoi, StoiParams

    for index in range(3):
        x = _speechlike(1.5, seed=60 + index)
        rng = np.random.default_rng(index)
        _write(tmp_path / "clean", f"u{index}.wav", x)
        _write(tmp_path / "a", f"u{index}.wav", x + 0.02 * rng.normal(size=len(x)))
        if index != 2:  # b lacks u2, and its u1 is longer than the reference
            noisy = x + 0.01 * rng.normal(size=len(x))
            _write(tmp_path / "b", f"u{index}.wav", np.concatenate([noisy, noisy[:800]]) if index else noisy)
    metrics = {"composite": Composite(CompositeParams()), "stoi": Stoi(StoiParams())}
    folders = [tmp_path / "a", tmp_path / "b"]
    alone = [evaluate_folders(tmp_path / "clean", folder, metrics, workers=1) for folder in folders]
    counted = {"clean": 0, "stoi": 0}
    for module, name, key in ((quality, "clean_analysis", "clean"),
                              (intelligibility, "stoi_reference", "stoi")):
        original = getattr(module, name)

        def counting(*args, _original=original, _key=key, **kwargs):
            counted[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    metrics = {"composite": Composite(CompositeParams()), "stoi": Stoi(StoiParams())}
    together = evaluate_systems(tmp_path / "clean", folders, metrics, workers=1)
    assert together == alone  # every value, note and row alike
    assert [row["file"] for row in together[1][0]] == ["u0.wav", "u1.wav"]
    # u0: one analysis for both systems; u1: b's pair is cut and gets eps, a new reference; u2: a only
    assert counted == {"clean": 4, "stoi": 4}
    assert evaluate_systems(tmp_path / "clean", folders, metrics, workers=2) == together


CMGAN_METRICS = os.environ.get("WAVELENS_CMGAN_METRICS", "")


@pytest.mark.skipif(not (VOICEBANK / "clean").is_dir(), reason=f"the shared pairs are not at {VOICEBANK}")
@pytest.mark.skipif(not os.path.isfile(CMGAN_METRICS),
                    reason="set $WAVELENS_CMGAN_METRICS to CMGAN's src/tools/compute_metrics.py")
def test_the_six_values_equal_the_cmgan_port_on_the_real_pairs():
    """PESQ, CSIG, CBAK, COVL and SSNR as the port behind the published tables computes
    them, file by file (measured: 9e-12 relative at most). Its STOI is its own port of
    the MATLAB code, not pystoi's: up to 0.004 apart per file, −0.0002 on average."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cmgan_compute_metrics", CMGAN_METRICS)
    port = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(port)
    for path in sorted((VOICEBANK / "clean").glob("*.wav")):
        clean, rate = sf.read(path)
        noisy, _ = sf.read(VOICEBANK / "noisy" / path.name)
        expected = dict(zip(("pesq", "csig", "cbak", "covl", "ssnr", "stoi"),
                            port.compute_metrics(clean, noisy, rate, 0), strict=True))
        measured = composite(clean, noisy, rate)
        for key in ("pesq", "csig", "cbak", "covl", "ssnr"):
            assert measured[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-10), (path.name, key)
        assert stoi_score(clean, noisy, rate) == pytest.approx(expected["stoi"], abs=5e-3), path.name


def test_t_quantiles_equal_scipys():
    from scipy import stats

    from wavelens.plugins.metrics.student_t import t_cdf, t_quantile

    for df in [*range(1, 60), 99, 250, 823, 5000, 10_000]:
        for p in (0.6, 0.9, 0.975, 0.995, 0.025):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10, abs=1e-12), (p, df)
        assert t_cdf(1.5, df) == pytest.approx(stats.t.cdf(1.5, df), rel=1e-10)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_without_torch_workers_are_forked_at_once_and_run_one_blas_thread():
    """Scoring files imports no torch, so the workers are plain forks of this process
    (no forkserver to start); the BLAS pool this process loaded with several threads
    is cut to one in each of them."""
    import subprocess
    import sys
    import textwrap

    from conftest import REPO

    code = textwrap.dedent("""
        import json, os, sys
        os.environ["OPENBLAS_NUM_THREADS"] = "2"
        import numpy as np
        from threadpoolctl import threadpool_info
        from wavelens import Metric, item_scorer

        class Pools(Metric):
            def update(self, preds, target):
                pass
            def compute(self):
                np.dot(np.ones((64, 64)), np.ones((64, 64)))
                threads = max([p["num_threads"] for p in threadpool_info()], default=1)
                return {"threads": float(threads), "parent": float(os.getppid())}

        here = max([p["num_threads"] for p in threadpool_info()], default=1)
        with item_scorer({"pools": Pools()}, workers=2) as score:
            rows = [row for row, _ in score([(0, 0)] * 4)]
        print(json.dumps({"here": here, "torch": "torch" in sys.modules, "pid": os.getpid(),
                          "rows": [[r["pools_threads"], r["pools_parent"]] for r in rows]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert not found["torch"] and found["here"] >= 1
    assert {threads for threads, _ in found["rows"]} == {1.0}
    assert {parent for _, parent in found["rows"]} == {float(found["pid"])}  # forked by this process


def test_scoring_in_this_process_also_runs_one_blas_thread():
    """With one worker the items are scored here: the BLAS pool is cut to one thread
    while they are, as in the workers, and restored after."""
    from thread_counting import ThreadCounting
    from threadpoolctl import threadpool_info

    from wavelens import item_scorer

    before = max([pool["num_threads"] for pool in threadpool_info()], default=1)
    with item_scorer({"threads": ThreadCounting()}, workers=1) as score:
        rows = [row for row, _ in score([(0, 0)] * 2)]
    assert {r["threads_native_threads"] for r in rows} == {1.0}
    assert max([pool["num_threads"] for pool in threadpool_info()], default=1) == before
