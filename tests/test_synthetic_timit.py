"""synthetic_timit: a TIMIT-layout tree synthesised with festival and espeak-ng."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavelens import WavelensError
from wavelens.host import Run, load_spec_text
from wavelens.plugins.timit import voices
from wavelens.plugins.timit.corpus import find_utterances, read_alignment
from wavelens.plugins.timit.synthetic import SynthesisParams, build_corpus, plan_corpus

HAVE_SYNTHESISERS = shutil.which("festival") is not None and shutil.which("espeak-ng") is not None
needs_synthesisers = pytest.mark.skipif(
    not HAVE_SYNTHESISERS, reason="festival and espeak-ng are not installed (make setup installs them)"
)
TINY = {"speakers": 4, "other_sentences": 0, "workers": 2}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """4 speakers (2 festival, 2 espeak-ng) reading SA1 and SA2, built once."""
    if not HAVE_SYNTHESISERS:
        pytest.skip("festival and espeak-ng are not installed (make setup installs them)")
    root = tmp_path_factory.mktemp("synthetic") / "corpus"
    return build_corpus(SynthesisParams(**TINY, corpus_dir=str(root)))


def _centroid(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    frequency = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(np.sum(spectrum * frequency) / np.sum(spectrum))


def test_plan_is_reproducible_and_timit_shaped(tmp_path):
    variants = [("m1", "M"), ("f1", "F")]
    params = SynthesisParams(speakers=30, other_sentences=2)
    speakers, jobs = plan_corpus(params, tmp_path, variants)
    again, _ = plan_corpus(params, tmp_path, variants)
    assert speakers == again
    assert len(jobs) == 30 * 4
    assert sum(s["engine"] == "festival" for s in speakers) == 15
    assert sum(s["subset"] == "TEST" for s in speakers) == 8  # 168/630 of 30
    assert len({s["speaker"] for s in speakers}) == 30
    assert all(len(s["speaker"]) == 5 and s["speaker"][0] in "MF" for s in speakers)


def test_default_size_gives_about_5000_word_tokens(tmp_path):
    speakers, jobs = plan_corpus(SynthesisParams(), tmp_path, [("m1", "M")])
    assert len(speakers) * 8 == 5040  # the paper: 4,052 + 1,067 = 5,119 tokens
    assert SynthesisParams(size="small").counts() == (16, 1)


@needs_synthesisers
def test_tree_has_timit_layout_and_files(tiny_corpus):
    utterances = find_utterances(tiny_corpus)
    assert len(utterances) == 8
    for utterance in utterances:
        assert utterance.subset in ("TRAIN", "TEST") and utterance.dialect.startswith("DR")
        assert utterance.audio.read_bytes()[:7] == b"NIST_1A"
        assert sf.info(utterance.audio).samplerate == 16000
        text = (utterance.words.parent / f"{utterance.name}.TXT").read_text().split(maxsplit=2)
        assert text[0] == "0" and int(text[1]) == sf.info(utterance.audio).frames
    with_phones = {u.speaker for u in utterances if u.phones is not None}
    assert len(with_phones) == 2  # the festival speakers


@needs_synthesisers
def test_word_intervals_hold_the_words_and_phones_tile_them(tiny_corpus):
    for utterance in find_utterances(tiny_corpus):
        samples, _ = sf.read(utterance.audio)
        words = read_alignment(utterance.words)
        expected = ["she", "had", "your", "dark", "suit", "in", "greasy", "wash", "water", "all", "year"]
        if utterance.name == "SA2":
            expected = ["don't", "ask", "me", "to", "carry", "an", "oily", "rag", "like", "that"]
        assert [w.label for w in words] == expected
        lead = samples[: words[0].start]
        for word in words:
            inside = samples[word.start : word.end]
            assert np.sqrt(np.mean(inside**2)) > 5 * np.sqrt(np.mean(lead**2))
        if utterance.phones is not None:
            phones = read_alignment(utterance.phones)
            assert phones[0].label == "h#" and phones[-1].label == "h#"
            assert all(a.end == b.start for a, b in zip(phones, phones[1:], strict=False))
            ask = next(w for w in words if w.label == "ask") if utterance.name == "SA2" else None
            if ask is not None:
                inside = [p.label for p in phones if p.start >= ask.start and p.end <= ask.end]
                assert inside == ["ae", "s", "k"]


@needs_synthesisers
def test_the_s_of_ask_is_a_fricative(tiny_corpus):
    # The phone alignment is meaningful: the [s] interval has a much higher spectral
    # centroid than the vowel before it.
    for utterance in find_utterances(tiny_corpus):
        if utterance.name != "SA2" or utterance.phones is None:
            continue
        samples, _ = sf.read(utterance.audio)
        phones = {p.label: p for p in read_alignment(utterance.phones) if p.label in ("ae", "s")}
        s, ae = phones["s"], phones["ae"]
        assert _centroid(samples[s.start : s.end]) > 2 * _centroid(samples[ae.start : ae.end])


@needs_synthesisers
def test_rebuilding_with_the_same_parameters_reuses_the_corpus(tiny_corpus):
    before = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*") if p.is_file()}
    assert build_corpus(SynthesisParams(**TINY, corpus_dir=str(tiny_corpus))) == tiny_corpus
    assert before == {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*") if p.is_file()}
    with pytest.raises(WavelensError, match="built with other parameters"):
        build_corpus(SynthesisParams(**{**TINY, "speakers": 5}, corpus_dir=str(tiny_corpus)))


@needs_synthesisers
def test_slicer_reads_the_synthetic_tree_unchanged(tiny_corpus, tmp_path):
    resolved = load_spec_text(
        "spec_version: 1\nname: synth\nseed: 2\ndevice: cpu\n"
        f"data: {{plugin: synthetic_timit, params: {{speakers: 4, other_sentences: 0, "
        f"corpus_dir: {tiny_corpus}}}}}\n",
        spec_dir=tmp_path,
    )
    run = Run(resolved, runs_dir=tmp_path / "runs")
    run.execute(until="dataset")
    splits = resolved.component("dataset").build().load(run.stage_dir("dataset"))
    words = [item["word"] for split in splits.values() for item in split]
    assert len(words) == 32 and all(words.count(w) == 4 for w in set(words))
    ask = [item for split in splits.values() for item in split if item["word"] == "ask"]
    assert sum(item["phones"] is not None for item in ask) == 2
    assert "synthesised by wavelens" in (run.stage_dir("dataset") / "report.md").read_text()


def test_finished_utterances_are_not_synthesised_again(tmp_path):
    job = voices.UtteranceJob(folder=str(tmp_path), name="SA1", text="She had", engine="espeak-ng",
                              voice="m1", rate=150, pitch=50, shift=1.0, peak=0.5,
                              noise_snr_db=None, seed=1, audio_format="sphere")
    (tmp_path / "SA1.WRD").write_text("0 10 she\n")
    assert voices.synthesise_batch([job]) == [f"{tmp_path}/SA1"]
    assert not (tmp_path / "SA1.WAV").exists()


def test_missing_synthesisers_give_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(WavelensError, match="apt-get install festival"):
        build_corpus(SynthesisParams(**TINY, corpus_dir=str(tmp_path / "c")))


@needs_synthesisers
def test_two_simultaneous_builds_of_one_corpus_build_it_once(tmp_path):
    import concurrent.futures

    params = SynthesisParams(speakers=2, other_sentences=0, engines=["espeak-ng"],
                             corpus_dir=str(tmp_path / "corpus"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        roots = list(pool.map(lambda _: build_corpus(params), range(2)))
    assert roots == [tmp_path / "corpus"] * 2
    assert len(find_utterances(roots[0])) == 4
    assert not (tmp_path / "corpus.partial").exists()
