"""voicebank_demand, noisy_mixtures and the VAD labels they carry."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from pydantic import ValidationError

from wavelens import StageError, WavelensError
from wavelens.plugins.noisy_speech.mixtures import MixtureParams, coloured_noise, mix_at_snr, recording_path
from wavelens.plugins.noisy_speech.vad import frame_energy_db, vad_labels

from conftest import SHARED_DATA, prepare_data

SHARED_VOICEBANK = SHARED_DATA / "voicebank_demand"
RATE = 16000


def bursts(length: int, spans: list[tuple[int, int]], rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Silence with noise-like 'speech' in ``spans`` (sample ranges)."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(length)
    for start, end in spans:
        signal[start:end] = 0.3 * rng.standard_normal(end - start).clip(-3, 3) / 3
    return signal


def tsv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def skipped(stage: Path) -> dict[str, str]:
    with open(stage / "skipped.csv") as handle:
        return {Path(row["file"]).name: row["reason"] for row in csv.DictReader(handle)}


# -- VAD ------------------------------------------------------------------------------


def test_vad_has_one_frame_per_stft_frame():
    for n in (0, 99, 100, 32000, 32099):
        assert len(vad_labels(np.ones(n) if n else np.zeros(1))) == max(n, 1) // 100 + 1


def test_vad_labels_cover_the_speech_regions():
    spans = [(8000, 16000), (32000, 41600)]
    labels = vad_labels(bursts(48000, spans))
    centres = np.arange(len(labels)) * 100
    inside = np.zeros(len(labels), bool)
    touching = np.zeros(len(labels), bool)
    for start, end in spans:
        inside |= (centres >= start) & (centres < end)
        touching |= (centres + 200 > start) & (centres - 200 < end)
    assert labels[inside].all()
    assert not labels[~touching].any()


def test_vad_of_silence_is_all_zero_and_threshold_is_relative():
    assert not vad_labels(np.zeros(1000)).any()
    quiet = bursts(16000, [(0, 8000)]) * 1e-3 + bursts(16000, [(8000, 16000)], seed=1)
    labels = vad_labels(quiet, threshold_db=-40)
    assert labels[:75].sum() == 0 and labels[82:].all()  # 60 dB down is not speech
    assert frame_energy_db(np.ones(400))[2] == pytest.approx(0.0)


# -- the VoiceBank+DEMAND layout -------------------------------------------------------


def write(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype="PCM_16")


def make_voicebank(root: Path) -> Path:
    """A 48 kHz corpus in the standard layout, with some bad files."""
    for index, seconds in enumerate([3.0, 3.0, 1.0]):
        n = int(seconds * 48000)
        clean = bursts(n, [(n // 4, 3 * n // 4)], 48000, seed=index)
        write(root / "clean_trainset_28spk_wav" / f"p226_{index:03d}.wav", clean, 48000)
        write(root / "noisy_trainset_28spk_wav" / f"p226_{index:03d}.wav", clean + 0.01, 48000)
    write(root / "clean_trainset_28spk_wav" / "p226_099.wav", np.zeros(4800) + 0.1, 48000)  # unpaired
    for index in range(3):
        clean = bursts(144000, [(20000, 120000)], 48000, seed=10 + index)
        write(root / "clean_testset_wav" / f"p232_{index:03d}.wav", clean, 48000)
        write(root / "noisy_testset_wav" / f"p232_{index:03d}.wav", clean + 0.01, 48000)
    write(root / "noisy_testset_wav" / "p232_001.wav", np.zeros((144000, 2)) + 0.01, 48000)  # stereo
    write(root / "clean_testset_wav" / "p232_002.wav", np.zeros(144000), 48000)  # silent
    write(root / "clean_testset_wav" / "p232_003.wav", bursts(9600, [(0, 9600)]), 48000)
    write(root / "noisy_testset_wav" / "p232_003.wav", bursts(4800, [(0, 4800)]), 48000)  # short
    (root / "logfiles").mkdir()
    (root / "logfiles" / "log_testset.txt").write_text("p232_000 living 2.5\np232_001 bus 7.5\n")
    return root


def test_standard_layout_is_paired_resampled_and_segmented(tmp_path):
    splits, stage = prepare_data(tmp_path, "voicebank_demand", f"root: {make_voicebank(tmp_path / 'vb')}")
    assert len(splits["train"]) == 3 and len(splits["test"]) == 1
    train = splits["train"][0]
    assert train["sample_rate"] == 16000
    assert train["clean"].shape == train["noisy"].shape == (1, 32000)  # 2 s at 16 kHz
    assert train["vad"].shape == (321,)
    short = splits["train"][2]  # 1 s, repeated to fill the segment
    np.testing.assert_allclose(short["clean"][0, 16000:32000], short["clean"][0, :16000])
    test = splits["test"][0]
    assert test["clean"].shape == (1, 48000) and test["length"] == 48000
    assert (test["noise"], test["snr_db"]) == ("living", 2.5)


def test_segment_offsets_are_hop_aligned_and_change_per_epoch(tmp_path):
    splits, _ = prepare_data(tmp_path, "voicebank_demand", f"root: {make_voicebank(tmp_path / 'vb')}")
    train = splits["train"]
    full = sf.read(tmp_path / "vb" / "clean_trainset_28spk_wav" / "p226_000.wav")[0]
    first = train[0]["clean"][0].numpy()
    assert np.array_equal(first, train[0]["clean"][0].numpy())  # same epoch, same segment
    offsets = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        segment = train[0]["clean"][0].numpy()
        resampled = train._read(str(tmp_path / "vb" / "clean_trainset_28spk_wav" / "p226_000.wav"))
        offset = next(o for o in range(0, len(resampled) - 32000 + 1, 100)
                      if np.array_equal(resampled[o : o + 32000], segment))
        offsets.add(offset)
    assert len(full) == 144000 and len(offsets) > 1


def test_bad_and_unpaired_files_are_reported_by_name(tmp_path):
    _, stage = prepare_data(tmp_path, "voicebank_demand", f"root: {make_voicebank(tmp_path / 'vb')}")
    reasons = skipped(stage)
    assert "unpaired" in reasons["p226_099.wav"]
    assert "2 channels" in reasons["p232_001.wav"]
    assert "silent" in reasons["p232_002.wav"]
    assert "samples, but its clean file has" in reasons["p232_003.wav"]


def test_a_folder_without_the_layout_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WavelensError, match="no VoiceBank\\+DEMAND folders"):
        prepare_data(tmp_path, "voicebank_demand", f"root: {tmp_path / 'empty'}")
    with pytest.raises(WavelensError, match="does not exist"):
        prepare_data(tmp_path, "voicebank_demand", f"root: {tmp_path / 'missing'}")


@pytest.mark.skipif(not SHARED_VOICEBANK.is_dir(), reason=f"{SHARED_VOICEBANK} is not present")
def test_reads_the_real_voicebank_pairs():
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        splits, stage = prepare_data(Path(scratch), "voicebank_demand", f"root: {SHARED_VOICEBANK}")
        test = splits["test"]
        assert set(splits) == {"test"} and len(test) == 25
        assert not skipped(stage)
        for index in (0, 24):
            item = test[index]
            frames = sf.info(SHARED_VOICEBANK / "clean" / f"{item['name']}.wav").frames
            assert item["clean"].shape == (1, frames) and item["sample_rate"] == 16000
            assert item["vad"].shape == (frames // 100 + 1,)
            assert 0.2 < float(item["vad"].mean()) < 1.0  # speech with pauses


# -- noisy mixtures --------------------------------------------------------------------


def make_sources(root: Path) -> tuple[Path, Path]:
    clean = root / "clean"
    for index in range(10):
        write(clean / f"utt{index}.wav", bursts(24000, [(4000, 12000 + 800 * index)], seed=index), RATE)
    noise = root / "noise"
    write(noise / "hum.wav", 0.2 * np.sin(np.arange(48000 * 2) * 2 * np.pi * 100 / 48000), 48000)
    stereo = np.random.default_rng(1).uniform(-0.2, 0.2, (44100, 2))
    write(noise / "street.wav", stereo, 44100)
    return clean, noise


MIXTURE_PARAMS = (
    "clean_dir: {clean}, noise_dirs: [{noise}], generated_noise: [white, pink], "
    "test_noises: [white], n_train: 8, n_test_utterances: 2, clip_seconds: 1.0"
)


def test_mixtures_have_the_requested_snrs_and_held_out_noises(tmp_path):
    clean, noise = make_sources(tmp_path)
    splits, stage = prepare_data(tmp_path, "noisy_mixtures", MIXTURE_PARAMS.format(clean=clean, noise=noise))
    root = stage / "mixtures"
    assert len(splits["train"]) == 8 and len(splits["test"]) == 10
    for split, folder in (("train", "trainset"), ("test", "testset")):
        for item in splits[split]:
            clean_audio = sf.read(root / f"clean_{folder}_wav" / f"{item['name']}.wav")[0]
            noisy_audio = sf.read(root / f"noisy_{folder}_wav" / f"{item['name']}.wav")[0]
            assert len(clean_audio) == len(noisy_audio) == 16000
            snr = 10 * np.log10(np.sum(clean_audio**2) / np.sum((noisy_audio - clean_audio) ** 2))
            assert snr == pytest.approx(item["snr_db"], abs=0.1)
    train_noises = {item["noise"] for item in splits["train"]}
    assert "white" not in train_noises and train_noises <= {"hum", "street", "pink"}
    assert {item["noise"] for item in splits["test"]} == {"white"}
    assert sorted(item["snr_db"] for item in splits["test"]) == sorted([-5, 0, 5, 10, 15] * 2)
    assert all(-10 <= item["snr_db"] <= 15 for item in splits["train"])


def test_mixture_vad_labels_cover_the_clean_speech(tmp_path):
    clean, noise = make_sources(tmp_path)
    splits, stage = prepare_data(tmp_path, "noisy_mixtures", MIXTURE_PARAMS.format(clean=clean, noise=noise))
    for item in splits["test"]:
        audio = item["clean"][0].numpy()
        labels = item["vad"].numpy()
        centres = np.arange(len(labels)) * 100
        loud = np.array([np.any(audio[max(0, c - 200) : c + 200] != 0) for c in centres])
        assert labels[~loud].sum() == 0  # no speech label where the clean clip is silent
        assert labels[loud].mean() > 0.9


def test_mixtures_are_reproducible_and_reused_within_a_run(tmp_path):
    clean, noise = make_sources(tmp_path)
    params = MIXTURE_PARAMS.format(clean=clean, noise=noise)
    first, stage_a = prepare_data(tmp_path / "a", "noisy_mixtures", params)
    second, stage_b = prepare_data(tmp_path / "b", "noisy_mixtures", params)
    name = first["test"][3]["name"]
    a = sf.read(stage_a / "mixtures" / "noisy_testset_wav" / f"{name}.wav")[0]
    b = sf.read(stage_b / "mixtures" / "noisy_testset_wav" / f"{name}.wav")[0]
    np.testing.assert_array_equal(a, b)


def test_recordings_join_the_training_speech_and_can_be_the_test_speech(tmp_path):
    clean, noise = make_sources(tmp_path)
    talk = tmp_path / "recordings"
    write(talk / "long_talk.wav", bursts(48000 * 5, [(0, 48000 * 5)], seed=20), 48000)
    write(talk / "other_talk.wav", bursts(16000 * 4, [(0, 16000 * 4)], seed=21), RATE)
    base = MIXTURE_PARAMS.format(clean=clean, noise=noise).replace("n_train: 8", "n_train: 40")
    params = (base + f", train_recordings: [{talk / 'long_talk.wav'}], train_recordings_share: 0.5, "
              f"test_recordings: [{talk / 'other_talk.wav'}, {talk / 'long_talk.wav'}]")
    splits, stage = prepare_data(tmp_path / "with", "noisy_mixtures", params)
    sources = tsv_rows(stage / "mixtures" / "sources.tsv")
    train = [row["clean_source"] for row in sources if row["name"].startswith("train")]
    test = {row["name"].split("_snr")[0]: row["clean_source"] for row in sources
            if row["name"].startswith("test")}
    from_recording = sum(source.endswith("long_talk.wav") for source in train)
    assert 10 <= from_recording <= 30 and len(train) == 40
    assert [Path(test[key]).name for key in sorted(test)] == ["other_talk.wav", "long_talk.wav"]
    long_clips = [item["clean"] for item in splits["test"] if "test_00001" in item["name"]]
    assert len(long_clips) == 5  # one clip at every test SNR (scaled down where it would clip)
    assert all(torch.corrcoef(torch.cat([long_clips[0], c]))[0, 1] > 0.9999 for c in long_clips)

    # Unused, the recordings stay out of the parameters' dump, so the stage keys of specs
    # written before they existed do not change.
    assert "train_recordings" not in MixtureParams().model_dump()


def test_a_missing_recording_is_refused_by_name(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="train_recordings: .*nowhere.wav is not a file"):
        MixtureParams(train_recordings=[tmp_path / "nowhere.wav"])
    monkeypatch.setenv("WAVELENS_SHARED_DATA", str(tmp_path))
    write(tmp_path / "speech" / "talk.wav", bursts(16000, [(0, 16000)]), RATE)
    with pytest.raises(ValidationError, match="test_recordings: .*speech/gone.wav is not a file"):
        MixtureParams(test_recordings=["shared:speech/talk.wav", "shared:speech/gone.wav"])


def test_shared_recordings_keep_their_name_and_key_wherever_the_shared_folder_is(tmp_path, monkeypatch):
    keys = []
    for place in ("one", "two"):
        write(tmp_path / place / "speech" / "talk.wav", bursts(16000, [(0, 16000)]), RATE)
        monkeypatch.setenv("WAVELENS_SHARED_DATA", str(tmp_path / place))
        params = MixtureParams(train_recordings=["shared:speech/talk.wav"])
        assert recording_path(params.train_recordings[0]) == tmp_path / place / "speech" / "talk.wav"
        keys.append(params.model_dump(mode="json"))
    assert keys[0] == keys[1] and keys[0]["train_recordings"] == ["shared:speech/talk.wav"]
    # An absent shared folder passes validation (a spec stays valid on a machine without
    # it) and is refused, with the folder named, when the mixtures are made.
    monkeypatch.setenv("WAVELENS_SHARED_DATA", str(tmp_path / "nowhere"))
    assert MixtureParams(test_recordings=["shared:speech/talk.wav"]).test_recordings


def test_unknown_held_out_noise_is_named(tmp_path):
    clean, noise = make_sources(tmp_path)
    params = MIXTURE_PARAMS.format(clean=clean, noise=noise).replace("[white]", "[traffic]")
    with pytest.raises(WavelensError, match="test_noises names traffic"):
        prepare_data(tmp_path, "noisy_mixtures", params)


def test_mix_at_snr_is_exact_and_never_clips():
    rng = np.random.default_rng(0)
    clean = 0.9 * np.sin(np.arange(16000) * 0.05)
    for snr in (-10.0, 0.0, 15.0):
        scaled_clean, noisy = mix_at_snr(clean, coloured_noise("pink", 16000, rng), snr)
        measured = 10 * np.log10(np.sum(scaled_clean**2) / np.sum((noisy - scaled_clean) ** 2))
        assert measured == pytest.approx(snr, abs=1e-9)
        assert np.max(np.abs(noisy)) <= 0.99 + 1e-12


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    for kind, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        noise = coloured_noise(kind, 2**16, rng)
        power = np.abs(np.fft.rfft(noise)) ** 2
        frequency = np.fft.rfftfreq(2**16)
        band = (frequency > 0.001) & (frequency < 0.4)
        fitted = np.polyfit(np.log10(frequency[band]), np.log10(power[band]), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.15)


def test_unreadable_clean_files_skip_their_mixtures_by_name(tmp_path):
    clean, noise = make_sources(tmp_path)
    for index in range(4):
        (clean / f"broken{index}.wav").write_bytes(b"RIFF....WAVE broken")
    params = MIXTURE_PARAMS.format(clean=clean, noise=noise).replace("n_train: 8", "n_train: 30")
    splits, stage = prepare_data(tmp_path, "noisy_mixtures", params)
    with open(stage / "mixtures" / "skipped_mixtures.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all("broken" in row["file"] and "unreadable" in row["reason"] for row in rows)
    written = len(splits["train"]) + len(splits.get("test", []))
    assert written + len(rows) == 30 + 10


def test_demand_and_librispeech_layouts_group_by_folder(tmp_path):
    # LibriSpeech: <speaker>/<chapter>/<utterance>.flac; DEMAND: <TYPE>/ch01.wav ...
    clean = tmp_path / "librispeech"
    for speaker in range(5):
        for utterance in range(2):
            path = clean / str(100 + speaker) / "7" / f"{100 + speaker}-7-{utterance}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, bursts(20000, [(2000, 18000)], seed=speaker * 10 + utterance), RATE)
    demand = tmp_path / "demand"
    rng = np.random.default_rng(3)
    for kind in ("DKITCHEN", "OOFFICE"):
        for channel in (1, 2):
            write(demand / kind / f"ch{channel:02d}.wav", rng.uniform(-0.1, 0.1, 48000 * 3), 48000)
    params = (f"clean_dir: {clean}, noise_dirs: [{demand}], generated_noise: [], "
              "test_noises: [OOFFICE], n_train: 6, n_test_utterances: 2, clip_seconds: 1.0")
    splits, stage = prepare_data(tmp_path, "noisy_mixtures", params)
    assert {item["noise"] for item in splits["train"]} == {"DKITCHEN"}
    assert {item["noise"] for item in splits["test"]} == {"OOFFICE"}
    with open(stage / "mixtures" / "sources.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    speaker = {row["name"]: Path(row["clean_source"]).relative_to(clean).parts[0] for row in rows}
    train = {speaker[item["name"]] for item in splits["train"]}
    test = {speaker[item["name"]] for item in splits["test"]}
    assert len(test) == 1 and not train & test


def test_the_reference_rows_pass_the_noisy_input_through_and_gate_stationary_noise():
    from wavelens.plugins.noisy_speech.baselines import (
        NoisyInput,
        NoisyInputParams,
        SpectralGating,
        SpectralGatingParams,
    )

    rate, rng = 16000, np.random.default_rng(0)
    t = np.arange(3 * rate) / rate
    # a harmonic "vowel" in the middle second, in steady white noise
    speech = (t > 1) & (t < 2)
    clean = (sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate([200, 400, 600, 800], 1))
             * speech * 0.2).astype(np.float32)
    noisy = (clean + rng.standard_normal(len(t)) * 0.05).astype(np.float32)
    batch = {"noisy": torch.from_numpy(noisy)[None, None], "clean": torch.from_numpy(clean)[None, None],
             "length": torch.tensor([len(t)]), "sample_rate": torch.tensor([rate])}

    identity = NoisyInput(NoisyInputParams())
    preds, target = identity.predict(identity.network(), batch, None)
    np.testing.assert_array_equal(preds["audio"][0], noisy)
    np.testing.assert_array_equal(target["audio"][0], clean)
    assert sum(p.numel() for p in identity.network().parameters()) == 0

    pause = t < 0.8  # noise alone
    # noisereduce's own defaults (non-stationary, the full reduction; the FFT at 32 ms)
    full = SpectralGating(SpectralGatingParams(stationary=False, prop_decrease=1.0, n_fft=512))
    gated = full.predict(full.network(), batch, None)[0]["audio"][0]
    assert np.mean(gated[pause] ** 2) < 0.1 * np.mean(noisy[pause] ** 2)  # a tenth of its power
    # the vowel is kept, and closer to the clean one than the noisy input was
    kept, before = (np.corrcoef(x[speech], clean[speech])[0, 1] for x in (gated, noisy))
    assert kept > before and kept > 0.95
    gating = SpectralGating(SpectralGatingParams())  # the defaults remove 60 % of the gated noise
    gated = gating.predict(gating.network(), batch, None)[0]["audio"][0]
    assert gated.shape == noisy.shape and gated.dtype == np.float32
    assert np.mean(gated[pause] ** 2) < (1 - 0.6) ** 2 * 1.2 * np.mean(noisy[pause] ** 2)
    assert np.corrcoef(gated[speech], clean[speech])[0, 1] > 0.95
    enhanced = gating.enhance(gating.network(), noisy, rate, None)
    assert enhanced.audio.shape == noisy.shape and enhanced.speech_probability is None
    with pytest.raises(StageError, match="nothing to train"):
        gating.train(gating.network(), None, None)
    with pytest.raises(StageError, match="paired data"):
        gating.predict(gating.network(), {"audio": torch.zeros(1, 1, 10)}, None)
