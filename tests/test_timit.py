"""timit_words: slicing word tokens from a TIMIT-layout tree.

The trees here are written by hand (SPHERE audio of known content, .WRD and .PHN
files), so every expected value is known exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavelens import WavelensError, collate_items
from wavelens.host import PluginRegistry
from wavelens.plugins.timit.corpus import Interval, find_utterances, read_alignment
from wavelens.plugins.timit.words import SliceParams, TimitWords, TimitWordsParams, slice_token

from conftest import REPO, prepare_data

RATE = 16000

# Each utterance: words with (start, end) and phones inside them.
SA2_WORDS = [(1000, 3000, "don't"), (3000, 7000, "ask"), (7000, 9000, "me")]
SA2_PHONES = [(0, 1000, "h#"), (1000, 3000, "d"), (3000, 4500, "ae"), (4500, 6000, "s"),
              (6000, 7000, "k"), (7000, 9000, "m"), (9000, 10000, "h#")]
SA1_WORDS = [(500, 2500, "she"), (2500, 6500, "wash"), (6500, 9500, "water")]
SA1_PHONES = [(0, 500, "h#"), (500, 2500, "sh"), (2500, 3500, "w"), (3500, 5000, "aa"),
              (5000, 6500, "sh"), (6500, 9500, "w"), (9500, 10000, "h#")]


def _signal(speaker_index: int, length: int = 10000) -> np.ndarray:
    # A ramp gives every sample a distinct value, so a token can be matched to its
    # exact source samples.
    return (np.linspace(-0.5, 0.5, length) * (1 + speaker_index) / 8).astype(np.float32)


def write_utterance(folder: Path, name: str, samples: np.ndarray, words, phones=None,
                    rate: int = RATE, upper: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = (lambda s: s.upper()) if upper else (lambda s: s.lower())
    sf.write(folder / f"{name}{suffix('.wav')}", samples, rate, format="NIST", subtype="PCM_16")
    (folder / f"{name}{suffix('.wrd')}").write_text("".join(f"{s} {e} {w}\n" for s, e, w in words))
    if phones is not None:
        (folder / f"{name}{suffix('.phn')}").write_text("".join(f"{s} {e} {p}\n" for s, e, p in phones))


def make_tree(root: Path, speakers: int = 5, upper: bool = True) -> Path:
    """``speakers`` speakers in TRAIN (and one more in TEST), each reading SA1 and SA2."""
    for index in range(speakers + 1):
        subset = "TEST" if index == speakers else "TRAIN"
        folder = root / subset / f"DR{index % 8 + 1}" / f"M{chr(65 + index)}XY0"
        if not upper:
            folder = root / subset.lower() / f"dr{index % 8 + 1}" / f"m{chr(97 + index)}xy0"
        write_utterance(folder, "SA1", _signal(index), SA1_WORDS, SA1_PHONES, upper=upper)
        write_utterance(folder, "SA2", _signal(index), SA2_WORDS, SA2_PHONES, upper=upper)
    return root


def prepare(tmp_path: Path, root: Path, **params) -> tuple[dict, Path]:
    """Run the data stage of a timit_words spec; return its splits and folder."""
    params.setdefault("words", ["ask", "me", "wash", "water"])
    options = ", ".join(f"{k}: {v!r}" if not isinstance(v, list) else f"{k}: {v}"
                        for k, v in {"root": str(root), **params}.items())
    return prepare_data(tmp_path, "timit_words", options, seed=5)


def test_reader_finds_utterances_in_upper_and_lower_case(tmp_path):
    upper = find_utterances(make_tree(tmp_path / "a", speakers=2))
    lower = find_utterances(make_tree(tmp_path / "b", speakers=2, upper=False))
    assert [u.id for u in upper] == [u.id for u in lower]
    assert len(upper) == 6
    assert all(u.audio is not None and u.phones is not None for u in lower)


def test_a_folder_without_train_or_test_is_refused(tmp_path):
    with pytest.raises(WavelensError, match="expected TRAIN/ and/or TEST/"):
        find_utterances(tmp_path)


def test_a_malformed_alignment_line_names_file_and_line(tmp_path):
    path = tmp_path / "SA1.WRD"
    path.write_text("0 10 she\n10 twenty had\n")
    with pytest.raises(WavelensError, match=r"SA1.WRD, line 2"):
        read_alignment(path)


@pytest.mark.parametrize("side, before", [("end", 0), ("start", 400), ("both", 400)])
def test_token_is_the_word_plus_the_pad_then_silence_to_the_slice(side, before):
    samples = _signal(0)
    word = Interval(3000, 7000, "ask")
    params = SliceParams(pad_side=side, peak_normalize=False)
    token, length, _ = slice_token(samples, word, None, params)
    after = 400 if side in ("end", "both") else 0
    assert token.shape == (16384,)
    assert length == before + 4000 + after
    np.testing.assert_array_equal(token[:before], 0)
    np.testing.assert_array_equal(token[before : before + 4000], samples[3000:7000])
    np.testing.assert_array_equal(token[before + 4000 :], 0)


def test_tokens_are_peak_normalised_copies_of_the_word(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit"))
    for split in splits.values():
        for index in range(len(split)):
            item = split[index]
            audio = item["audio"][0].numpy()
            assert item["audio"].shape == (1, 16384)
            assert np.max(np.abs(audio)) == pytest.approx(1.0, abs=1e-6)
            start, end, _ = {w: (s, e, w) for s, e, w in SA1_WORDS + SA2_WORDS}[item["word"]]
            subset, dialect, speaker, utterance = item["token"].split(":")[0].split("/")
            on_disk, _ = sf.read(tmp_path / "timit" / subset / dialect / speaker / f"{utterance}.WAV",
                                 dtype="float32")
            word = on_disk[start:end]
            expected = word / np.max(np.abs(word))
            np.testing.assert_allclose(audio[: end - start], expected, atol=1e-6)
            np.testing.assert_array_equal(audio[end - start :], 0)
            assert item["length"] == end - start + 400


def test_resample_to_slices_at_the_new_rate_with_the_alignments_scaled(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit"), pad_side="both", resample_to=8000,
                        slice_len=8192)
    items = [split[i] for split in splits.values() for i in range(len(split))]
    ask = next(item for item in items if item["word"] == "ask")
    assert ask["sample_rate"] == 8000 and ask["audio"].shape == (1, 8192)
    # 25 ms of pad is 200 samples at 8 kHz; every boundary is halved.
    assert ask["phones"] == [[200, 950, "ae"], [950, 1700, "s"], [1700, 2200, "k"]]
    assert ask["length"] == 2000 + 400
    subset, dialect, speaker, utterance = ask["token"].split(":")[0].split("/")
    on_disk, _ = sf.read(tmp_path / "timit" / subset / dialect / speaker / f"{utterance}.WAV",
                         dtype="float32")
    from wavelens import resample

    word = resample(on_disk, 16000, 8000)[1500:3500]
    np.testing.assert_allclose(ask["audio"][0, 200:2200].numpy(), word / np.max(np.abs(word)), atol=1e-6)
    np.testing.assert_array_equal(ask["audio"][0, 2400:].numpy(), 0)


def test_phone_intervals_inside_each_token_match_the_phn_file(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit"), pad_side="both")
    items = [split[i] for split in splits.values() for i in range(len(split))]
    ask = next(item for item in items if item["word"] == "ask")
    wash = next(item for item in items if item["word"] == "wash")
    # The word starts after the 400-sample pad: PHN boundaries shift by 400 - start.
    assert ask["phones"] == [[400, 1900, "ae"], [1900, 3400, "s"], [3400, 4400, "k"]]
    assert wash["phones"] == [[400, 1400, "w"], [1400, 2900, "aa"], [2900, 4400, "sh"]]


def test_word_counts_per_class(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit", speakers=9),
                        words=["ask", "wash", "water"])
    labels = [split[i]["word"] for split in splits.values() for i in range(len(split))]
    assert {w: labels.count(w) for w in set(labels)} == {"ask": 10, "wash": 10, "water": 10}
    assert {split[i]["label"] for split in splits.values() for i in range(len(split))} == {0, 1, 2}


def test_random_split_is_80_20_per_word_and_reproducible(tmp_path):
    root = make_tree(tmp_path / "timit", speakers=9)
    first, _ = prepare(tmp_path / "a", root, words=["ask", "wash"], split_seed=1)
    again, _ = prepare(tmp_path / "b", root, words=["ask", "wash"], split_seed=1)
    other, _ = prepare(tmp_path / "c", root, words=["ask", "wash"], split_seed=2)
    tokens = {name: [s["token"] for s in split] for name, split in first.items()}
    assert tokens == {name: [s["token"] for s in split] for name, split in again.items()}
    assert tokens != {name: [s["token"] for s in split] for name, split in other.items()}
    test_words = [item["word"] for item in first["test"]]
    assert test_words.count("ask") == test_words.count("wash") == 2  # 20% of 10


def test_speaker_split_keeps_each_speaker_on_one_side(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit", speakers=9), split="speaker")
    train = {item["speaker"] for item in splits["train"]}
    test = {item["speaker"] for item in splits["test"]}
    assert train and test and not train & test
    assert len(test) == 2  # 20% of 10 speakers


def test_timit_split_follows_the_train_and_test_folders(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit", speakers=3), split="timit")
    assert {item["speaker"] for item in splits["test"]} == {"MDXY0"}


def test_tokens_longer_than_the_slice_are_reported_not_cut(tmp_path):
    root = make_tree(tmp_path / "timit", speakers=2)
    long_folder = root / "TRAIN" / "DR7" / "MLNG0"
    write_utterance(long_folder, "SA2", _signal(0, 20000), [(0, 16100, "ask")])
    splits, stage = prepare(tmp_path, root, words=["ask"])
    tokens = [item["token"] for split in splits.values() for item in split]
    assert not any("MLNG0" in token for token in tokens)
    with open(stage / "skipped.csv") as handle:
        reasons = [row["reason"] for row in csv.DictReader(handle)]
    assert any("MLNG0/SA2:ask:0" in reason and "exceed slice_len 16384" in reason for reason in reasons)
    with pytest.raises(WavelensError, match="exceed slice_len"):
        prepare(tmp_path / "strict", root, words=["ask"], long_tokens="error")


def test_bad_files_are_skipped_with_their_names(tmp_path):
    root = make_tree(tmp_path / "timit", speakers=4)
    bad = root / "TRAIN" / "DR8" / "MBAD0"
    write_utterance(bad, "SA1", _signal(0), SA1_WORDS, rate=8000)  # wrong rate
    sf.write(bad / "SA2.WAV", np.zeros((10000, 2)), RATE, format="NIST", subtype="PCM_16")  # stereo
    (bad / "SA2.WRD").write_text("".join(f"{s} {e} {w}\n" for s, e, w in SA2_WORDS))
    (bad / "SX1.WAV").write_bytes(b"not audio at all")  # unreadable
    (bad / "SX1.WRD").write_text("0 100 ask\n")
    (bad / "SX2.WRD").write_text("0 100 wash\n")  # no audio
    _, stage = prepare(tmp_path, root)
    with open(stage / "skipped.csv") as handle:
        rows = list(csv.DictReader(handle))
    reasons = {Path(row["file"]).name: row["reason"] for row in rows}
    assert "expected 16000 Hz" in reasons["SA1.WAV"]
    assert "2 channels" in reasons["SA2.WAV"]
    assert "unreadable" in reasons["SX1.WAV"]
    assert "no audio" in reasons["SX2.WAV"]


def test_a_word_missing_from_the_corpus_is_an_error(tmp_path):
    with pytest.raises(WavelensError, match="no tokens of 'greasy'"):
        prepare(tmp_path, make_tree(tmp_path / "timit", speakers=2), words=["ask", "greasy"])


def test_params_reject_repeated_words():
    with pytest.raises(ValueError, match="words repeated: ask"):
        TimitWordsParams(root="x", words=["ask", "ASK"])


def test_items_batch_with_phones_kept_per_item(tmp_path):
    splits, _ = prepare(tmp_path, make_tree(tmp_path / "timit"))
    batch = collate_items([splits["train"][0], splits["train"][1]])
    assert batch["audio"].shape == (2, 1, 16384)
    assert len(batch["phones"]) == 2 and isinstance(batch["phones"][0], list)


def test_describe_counts_tokens_per_word_and_split(tmp_path):
    splits, stage = prepare(tmp_path, make_tree(tmp_path / "timit"), words=["ask", "wash"])
    dataset = TimitWords(TimitWordsParams(root=str(tmp_path / "timit"), words=["ask", "wash"]))
    summary = dataset.describe(stage, splits)
    assert summary["counts"]["word"]["train"] == {"ask": 5, "wash": 5}
    assert summary["counts"]["word"]["test"] == {"ask": 1, "wash": 1}
    assert summary["splits"]["train"]["tokens"] == 10


def test_the_registry_lists_the_dataset_plugins():
    names = set(PluginRegistry.discover().names())
    assert {"timit_words", "synthetic_timit", "voicebank_demand", "noisy_mixtures"} <= names


def test_repo_has_no_copied_shared_data():
    assert not list(REPO.rglob("p232_*.wav"))


def test_data_describe_prints_the_counts_and_reuses_the_data(tmp_path, write_spec, capsys):
    from wavelens.cli import main

    root = make_tree(tmp_path / "timit")
    spec = write_spec(
        f"spec_version: 1\nname: words\nseed: 5\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
    )
    assert main(["data", "describe", str(spec), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["word"] == {"train": {"ask": 5, "wash": 5}, "test": {"ask": 1, "wash": 1}}
    assert main(["data", "describe", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "(reused)" in err and "wash" in err and "tokens" in err
    assert main(["run", str(spec)]) == 0
    assert "stage dataset: finished earlier, reused" in capsys.readouterr().err


def test_the_run_report_shows_the_data_summary(tmp_path, write_spec):
    from wavelens.cli import main

    root = make_tree(tmp_path / "timit")
    spec = write_spec(
        f"spec_version: 1\nname: words\nseed: 5\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
    )
    assert main(["run", str(spec)]) == 0
    report = next((tmp_path / "runs" / "words").glob("*/report.md")).read_text()
    assert "| word | train | test |" in report and "| ask | 5 | 1 |" in report
