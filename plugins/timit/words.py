"""``timit_words``: word tokens sliced from a TIMIT-layout corpus, as in Beguš & Zhou.

Each occurrence of a requested word becomes one token: the word's samples from the
``.WRD`` alignment, a 25 ms pad of silence (at the end by default, like the
reference loader's ``pad_end``), right-padded with silence to a fixed slice
(16,384 samples at 16 kHz), and peak-normalised to max |x| = 1 like the reference
loader. The phone intervals inside the word (from ``.PHN``) are kept in token
coordinates, so a probe can cut out the [s] of *ask* or the [ʃ] of *wash*.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from wavelens import (
    AudioError,
    Contribution,
    Dataset,
    Params,
    SpecPath,
    StageContext,
    StageError,
    WavelensError,
    atomic_write,
    hookimpl,
    peak_normalize,
    read_audio,
    read_json,
    resample,
    write_csv,
    write_json,
)

from .corpus import Interval, find_utterances, read_alignment

PAPER_WORDS = ("ask", "dark", "greasy", "oily", "rag", "wash", "water", "year")


class SliceParams(Params):
    """How word tokens are cut from a corpus (shared by ``timit_words`` and
    ``synthetic_timit``)."""

    words: list[str] = Field(
        list(PAPER_WORDS), min_length=1, description="the words to slice (class order = label order)"
    )
    slice_len: int = Field(16384, ge=256, description="samples per token after padding")
    sample_rate: int = Field(16000, description="expected rate; files at other rates are skipped")
    resample_to: int | None = Field(
        None, ge=1000, description="resample each utterance to this rate before slicing (alignments "
        "are scaled to it); the tokens, slice_len and pad are at this rate")
    pad_ms: float = Field(25.0, ge=0, description="silence added to the word, in milliseconds")
    pad_side: Literal["end", "start", "both"] = Field(
        "end", description="where the silence pad goes ('both' puts pad_ms on each side)"
    )
    peak_normalize: bool = Field(True, description="scale each token to max |x| = 1")
    split: Literal["random", "speaker", "timit"] = Field(
        "random",
        description="random: tokens 80/20 per word; speaker: no speaker in both splits; "
        "timit: the corpus's TRAIN/TEST folders",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of tokens (or speakers) in test")
    split_seed: int | None = Field(None, description="seed of the split (default: the run's seed)")
    long_tokens: Literal["skip", "error"] = Field(
        "skip", description="tokens longer than the slice: skip and report, or stop with an error"
    )
    max_per_word: int | None = Field(None, ge=1, description="keep at most this many tokens per word")

    @property
    def token_rate(self) -> int:
        """The rate of the sliced tokens: ``resample_to`` or the corpus's rate."""
        return self.resample_to or self.sample_rate

    @field_validator("words")
    @classmethod
    def _distinct_lower_case(cls, words: list[str]) -> list[str]:
        lowered = [word.strip().lower() for word in words]
        duplicates = sorted(word for word, count in Counter(lowered).items() if count > 1)
        if duplicates:
            raise ValueError(f"words repeated: {', '.join(duplicates)}")
        return lowered


class TimitWordsParams(SliceParams):
    root: SpecPath = Field(description="the corpus root, holding TRAIN/ and/or TEST/")


class TokenSplit(torch.utils.data.Dataset):
    """The tokens of one split. Items::

        {"audio": (1, slice_len) float tensor, "label": int, "word": str,
         "token": "TRAIN/DR1/FCJF0/SA1:dark:0", "speaker": str, "sample_rate": int,
         "length": samples before the end padding, "phones": [[start, end, phone], ...]}
    """

    def __init__(self, audio: np.ndarray, rows: list[dict], classes: list[str], sample_rate: int):
        self.audio = audio
        self.rows = rows
        self.classes = classes
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        audio = torch.from_numpy(np.array(self.audio[row["index"]], dtype=np.float32))
        return {
            "audio": audio.unsqueeze(0),
            "label": row["label"],
            "word": row["word"],
            "token": row["token"],
            "speaker": row["speaker"],
            "sample_rate": self.sample_rate,
            "length": row["length"],
            "phones": row["phones"],
        }


def slice_token(
    samples: np.ndarray, word: Interval, phones: list[Interval] | None, params: SliceParams
) -> tuple[np.ndarray, int, list[list]] | None:
    """Cut one word: ``(padded token, length before end padding, phones in token
    samples)``, or ``None`` when the padded word is longer than the slice."""
    pad = round(params.pad_ms * params.token_rate / 1000)
    before = pad if params.pad_side in ("start", "both") else 0
    after = pad if params.pad_side in ("end", "both") else 0
    word_samples = samples[word.start : word.end]
    length = before + len(word_samples) + after
    if length > params.slice_len:
        return None
    token = np.zeros(params.slice_len, dtype=np.float32)
    token[before : before + len(word_samples)] = word_samples
    if params.peak_normalize:
        token = peak_normalize(token)
    inside = []
    for phone in phones or []:
        start, end = max(phone.start, word.start), min(phone.end, word.end)
        if end > start:
            inside.append([start - word.start + before, end - word.start + before, phone.label])
    return token, length, inside


def _rescale(intervals: list[Interval], ratio: float) -> list[Interval]:
    """Alignment intervals moved to another sample rate (rounded to samples)."""
    return [Interval(round(i.start * ratio), round(i.end * ratio), i.label) for i in intervals]


def _split_tokens(rows: list[dict], params: SliceParams, seed: int) -> None:
    """Set each row's ``split`` to ``train`` or ``test``, reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    if params.split == "timit":
        for row in rows:
            row["split"] = "test" if row["subset"] == "TEST" else "train"
        return
    if params.split == "speaker":
        speakers = sorted({row["speaker"] for row in rows})
        order = rng.permutation(len(speakers))
        n_test = max(1, round(len(speakers) * params.test_fraction))
        test = {speakers[i] for i in order[:n_test]}
        for row in rows:
            row["split"] = "test" if row["speaker"] in test else "train"
        return
    # Per word, so every word has its share in the test split.
    for word in params.words:
        members = [row for row in rows if row["word"] == word]
        order = rng.permutation(len(members))
        n_test = round(len(members) * params.test_fraction)
        for rank, position in enumerate(order):
            members[position]["split"] = "test" if rank < n_test else "train"


class TimitWords(Dataset):
    """Slices word tokens from a TIMIT tree into the stage folder."""

    def __init__(self, params: SliceParams):
        self.params = params

    def corpus_root(self, ctx: StageContext) -> Path:
        """The TIMIT tree to slice (``synthetic_timit`` builds one first)."""
        return Path(self.params.root)

    def prepare(self, ctx: StageContext) -> None:
        params = self.params
        root = self.corpus_root(ctx)
        utterances = find_utterances(root)
        ctx.log.info("%s: %d utterances with word alignments", root, len(utterances))
        wanted = set(params.words)
        rows: list[dict] = []
        tokens: list[np.ndarray] = []
        skipped: list[dict] = []
        per_word: Counter = Counter()
        for utterance in ctx.progress(utterances, total=len(utterances), description="slicing words"):
            try:
                words = [w for w in read_alignment(utterance.words) if w.label.lower() in wanted]
                if not words:
                    continue
                if utterance.audio is None:
                    raise AudioError(utterance.words.with_suffix(".WAV"), "no audio beside the .WRD file")
                samples, _ = read_audio(utterance.audio, sample_rate=params.sample_rate)
                phones = read_alignment(utterance.phones) if utterance.phones else None
                if params.resample_to is not None:
                    ratio = params.resample_to / params.sample_rate
                    samples = resample(samples, params.sample_rate, params.resample_to)
                    words = _rescale(words, ratio)
                    phones = None if phones is None else _rescale(phones, ratio)
            except WavelensError as exc:
                skipped.append({"file": str(getattr(exc, "path", utterance.words)), "reason": str(exc)})
                continue
            for occurrence, word in enumerate(words):
                label = word.label.lower()
                token_id = f"{utterance.id}:{label}:{occurrence}"
                if word.end > len(samples):
                    skipped.append({"file": str(utterance.words), "reason":
                                    f"{token_id}: the word ends at sample {word.end}, after the "
                                    f"audio's {len(samples)} samples"})
                    continue
                if params.max_per_word is not None and per_word[label] >= params.max_per_word:
                    continue
                sliced = slice_token(samples, word, phones, params)
                if sliced is None:
                    reason = (f"{token_id}: {word.end - word.start} samples plus padding exceed "
                              f"slice_len {params.slice_len}")
                    if params.long_tokens == "error":
                        raise StageError(f"{utterance.words}: {reason}")
                    skipped.append({"file": str(utterance.words), "reason": reason})
                    continue
                token, length, inside = sliced
                per_word[label] += 1
                rows.append({
                    "index": len(tokens), "token": token_id, "word": label,
                    "label": params.words.index(label), "speaker": utterance.speaker,
                    "dialect": utterance.dialect, "subset": utterance.subset,
                    "utterance": utterance.name, "start": word.start, "end": word.end,
                    "length": length, "phones": inside if phones is not None else None,
                })
                tokens.append(token)
        missing = [word for word in params.words if per_word[word] == 0]
        if missing:
            raise StageError(
                f"no tokens of {', '.join(repr(w) for w in missing)} in {root} "
                f"(words are matched case-insensitively against the .WRD labels)"
            )
        seed = params.split_seed if params.split_seed is not None else ctx.seed
        _split_tokens(rows, params, seed)
        splits = {row["split"] for row in rows}
        if splits != {"train", "test"}:
            raise StageError(
                f"the {params.split!r} split of {len(rows)} tokens left the "
                f"{'train' if 'train' not in splits else 'test'} split empty"
            )
        with atomic_write(ctx.workdir / "audio.npy", "wb") as handle:
            np.save(handle, np.stack(tokens))
        with atomic_write(ctx.workdir / "tokens.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        write_csv(ctx.workdir / "skipped.csv", skipped, ["file", "reason"])
        for item in skipped[:5]:
            ctx.log.warning("skipped %s", item["reason"])
        if len(skipped) > 5:
            ctx.log.warning("... %d skips in all; see skipped.csv in the data stage", len(skipped))
        write_json(ctx.workdir / "corpus.json", {"root": str(root), "skipped": len(skipped)})
        ctx.write_report(
            f"{len(rows)} tokens of {len(params.words)} words sliced from `{root}`: the word plus "
            f"{params.pad_ms:g} ms of silence ({params.pad_side}), right-padded to "
            f"{params.slice_len} samples at {params.token_rate} Hz"
            f"{f' (resampled from {params.sample_rate} Hz)' if params.resample_to else ''}"
            f"{', peak-normalised' if params.peak_normalize else ''}; split {params.split!r} "
            f"(seed {seed}). {len(skipped)} skipped (see `skipped.csv`).\n"
        )

    def load(self, workdir: Path) -> dict[str, TokenSplit]:
        audio = np.load(workdir / "audio.npy", mmap_mode="r")
        rows = [json.loads(line) for line in (workdir / "tokens.jsonl").read_text().splitlines()]
        return {
            split: TokenSplit(audio, [r for r in rows if r["split"] == split],
                              list(self.params.words), self.params.token_rate)
            for split in ("train", "test")
        }

    def describe(self, workdir: Path, splits: dict[str, TokenSplit]) -> dict[str, Any]:
        rate = self.params.token_rate
        summary_splits = {}
        counts: dict[str, dict[str, dict[str, int]]] = {"word": {}}
        for name, split in splits.items():
            lengths = [row["length"] for row in split.rows]
            summary_splits[name] = {
                "tokens": len(split),
                "speakers": len({row["speaker"] for row in split.rows}),
                "minutes": round(sum(lengths) / rate / 60, 2),
                "mean_ms": round(1000 * float(np.mean(lengths)) / rate, 1) if lengths else None,
                "with_phones": sum(row["phones"] is not None for row in split.rows),
            }
            by_word = Counter(row["word"] for row in split.rows)
            counts["word"][name] = {word: by_word[word] for word in self.params.words}
        record = read_json(workdir / "corpus.json")
        notes = [f"corpus: {record['root']}"]
        if record["skipped"]:
            notes.append(f"{record['skipped']} tokens or files skipped, with reasons in "
                         "skipped.csv in the data stage")
        return {"splits": summary_splits, "counts": counts, "notes": notes}


@hookimpl
def wavelens_datasets():
    return [
        Contribution(
            "timit_words", TimitWordsParams,
            "Word tokens sliced from a TIMIT-layout corpus (the 8 words of Beguš & Zhou)",
            TimitWords,
        )
    ]
