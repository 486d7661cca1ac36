"""``synthetic_timit``: a TIMIT-layout corpus synthesised with festival and espeak-ng.

Every synthetic speaker reads TIMIT's SA1 and SA2 (which hold the 8 words of
Beguš & Zhou) and a few other sentences. A speaker is an engine and voice (festival
kal, ked or slt; one of espeak-ng's ~100 variants) with its own speaking rate,
pitch, a small pitch-and-formant shift by resampling, a level and a faint noise
floor. The corpus is written as a real TIMIT tree (SPHERE ``.WAV``, ``.WRD``,
``.PHN``, ``.TXT``) into a cache folder keyed by its parameters, so re-running
with the same parameters reuses it, and it is sliced by exactly the code that
slices the real TIMIT (``timit_words``).

festival reports phone end times, so festival utterances get a ``.PHN``;
espeak-ng reports none, so its utterances have words only (the word boundaries are
exact: words are synthesised one at a time and joined with short pauses).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from wavelens import (
    Contribution,
    Params,
    SpecPath,
    StageContext,
    StageError,
    WavelensError,
    available_cores,
    cache_dir,
    hookimpl,
    read_json,
    write_json,
)

from .sentences import OTHER, SA1, SA2
from .voices import FESTIVAL_VOICES, UtteranceJob, espeak_variants, missing_tools, synthesise_batch
from .words import SliceParams, TimitWords

CORPUS_VERSION = 1  # bump when the synthesis changes what it writes
SIZES = {"default": (630, 2), "small": (16, 1)}  # speakers, other sentences per speaker
TEST_SPEAKER_SHARE = 168 / 630  # TIMIT's core split: 462 train and 168 test speakers
INSTALL_HINT = (
    "install them with `make setup` (as root it runs apt-get), or "
    "`apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng`"
)


class SynthesisParams(Params):
    size: Literal["default", "small"] = Field(
        "default", description="default: 630 speakers (≈5,000 word tokens); small: 16 speakers"
    )
    speakers: int | None = Field(None, ge=1, description="number of speakers (overrides size)")
    other_sentences: int | None = Field(
        None, ge=0, le=len(OTHER), description="sentences per speaker besides SA1 and SA2"
    )
    engines: list[Literal["festival", "espeak-ng"]] = Field(
        ["festival", "espeak-ng"], min_length=1, description="synthesisers to use"
    )
    festival_voices: list[Literal["kal", "ked", "slt"]] = Field(
        ["kal", "ked", "slt"], min_length=1, description="festival voices to use"
    )
    festival_share: float = Field(
        0.5, ge=0, le=1, description="share of speakers voiced by festival when both engines are used"
    )
    audio_format: Literal["sphere", "wav"] = Field("sphere", description="NIST SPHERE like TIMIT, or RIFF")
    augment: bool = Field(True, description="vary level and add a faint noise floor (30-50 dB SNR)")
    corpus_seed: int = Field(0, description="seed of the speakers' voices and prompts")
    corpus_dir: SpecPath | None = Field(
        None, description="where to write the tree (default: a folder in the wavelens cache)"
    )
    workers: int | None = Field(None, ge=1, description="parallel processes (default: CPU count)")

    @model_validator(mode="after")
    def _engines_have_speakers(self) -> SynthesisParams:
        if len(self.engines) == 2 and self.festival_share in (0.0, 1.0):
            raise ValueError("festival_share 0 or 1 leaves one of the two engines without speakers")
        return self

    def counts(self) -> tuple[int, int]:
        speakers, other = SIZES[self.size]
        return (self.speakers or speakers,
                other if self.other_sentences is None else self.other_sentences)


def corpus_key(params: SynthesisParams, variants: list[tuple[str, str]]) -> dict[str, Any]:
    """Everything that decides the corpus's content (not where or how fast it is built)."""
    speakers, other = params.counts()
    return {
        "version": CORPUS_VERSION,
        "speakers": speakers,
        "other_sentences": other,
        "engines": sorted(params.engines),
        "festival_voices": list(params.festival_voices),
        "festival_share": params.festival_share,
        "audio_format": params.audio_format,
        "augment": params.augment,
        "corpus_seed": params.corpus_seed,
        "espeak_variants": [name for name, _ in variants],
    }


def _speaker_id(sex: str, index: int) -> str:
    letters = ""
    for _ in range(3):
        index, digit = divmod(index, 26)
        letters = chr(ord("A") + digit) + letters
    return f"{sex}{letters}0"


def plan_corpus(params: SynthesisParams, root: Path,
                variants: list[tuple[str, str]]) -> tuple[list[dict], list[UtteranceJob]]:
    """The speakers and the utterance jobs, reproducibly from ``corpus_seed``."""
    rng = np.random.default_rng(params.corpus_seed)
    n_speakers, n_other = params.counts()
    if len(params.engines) == 2:
        n_festival = min(n_speakers - 1, max(1, round(n_speakers * params.festival_share)))
    else:
        n_festival = n_speakers if params.engines == ["festival"] else 0
    engines = ["festival"] * n_festival + ["espeak-ng"] * (n_speakers - n_festival)
    engines = [engines[i] for i in rng.permutation(n_speakers)]
    n_test = max(1, round(n_speakers * TEST_SPEAKER_SHARE)) if n_speakers > 1 else 0
    test = set(rng.permutation(n_speakers)[:n_test].tolist())
    speakers, jobs = [], []
    festival_count = espeak_count = 0
    for index, engine in enumerate(engines):
        if engine == "festival":
            voice = params.festival_voices[festival_count % len(params.festival_voices)]
            festival_count += 1
            sex = FESTIVAL_VOICES[voice][1]
            rate = float(rng.uniform(0.85, 1.25))  # Duration_Stretch
            pitch = float(rng.uniform(85, 150) if sex == "M" else rng.uniform(160, 230))
        else:
            voice, sex = variants[espeak_count % len(variants)]
            espeak_count += 1
            rate = float(rng.uniform(130, 200))  # words per minute
            pitch = float(rng.uniform(25, 75))
        shift = float(rng.uniform(0.94, 1.06))
        peak = float(rng.uniform(0.25, 0.95)) if params.augment else 0.9
        noise = float(rng.uniform(30, 50)) if params.augment else None
        speaker = _speaker_id(sex, index)
        subset = "TEST" if index in test else "TRAIN"
        dialect = f"DR{index % 8 + 1}"
        folder = root / subset / dialect / speaker
        prompts = [("SA1", SA1), ("SA2", SA2)]
        prompts += [(f"SX{j + 1}", OTHER[j]) for j in sorted(rng.choice(len(OTHER), n_other, replace=False))]
        speakers.append({"speaker": speaker, "subset": subset, "dialect": dialect, "sex": sex,
                         "engine": engine, "voice": voice, "rate": round(rate, 4),
                         "pitch": round(pitch, 2), "shift": round(shift, 4), "peak": round(peak, 4),
                         "noise_snr_db": None if noise is None else round(noise, 2)})
        for name, text in prompts:
            jobs.append(UtteranceJob(
                folder=str(folder), name=name, text=text, engine=engine, voice=voice, rate=rate,
                pitch=pitch, shift=shift, peak=peak, noise_snr_db=noise,
                seed=int(rng.integers(2**31)), audio_format=params.audio_format,
            ))
    return speakers, jobs


def _batches(jobs: list[UtteranceJob], size: int) -> list[list[UtteranceJob]]:
    by_engine: dict[str, list[UtteranceJob]] = {}
    for job in jobs:
        by_engine.setdefault(job.engine, []).append(job)
    return [group[i : i + size] for group in by_engine.values() for i in range(0, len(group), size)]


def build_corpus(
    params: SynthesisParams,
    progress: Callable[..., Iterator] | None = None,
    log: Any = None,
) -> Path:
    """Build the corpus (or find it built); return its root.

    The tree is built in ``<root>.partial`` and renamed when complete; an
    interrupted build resumes there, skipping finished utterances.
    """
    missing = missing_tools(list(params.engines), list(params.festival_voices))
    if missing:
        raise StageError(
            f"synthetic_timit needs {', '.join(missing)}, which this machine lacks: {INSTALL_HINT}; "
            "or choose other engines/festival_voices in the spec"
        )
    variants = espeak_variants() if "espeak-ng" in params.engines else []
    if "espeak-ng" in params.engines and not variants:
        raise StageError("espeak-ng lists no voice variants (`espeak-ng --voices=variant`)")
    key = corpus_key(params, variants)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(params.corpus_dir) if params.corpus_dir else cache_dir("synthetic_timit") / digest
    root.parent.mkdir(parents=True, exist_ok=True)
    # Two runs that need the same corpus at once: the second waits, then reuses it.
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(params, key, root, variants, progress, log)


def _build_locked(params: SynthesisParams, key: dict[str, Any], root: Path,
                  variants: list[tuple[str, str]], progress: Any, log: Any) -> Path:
    manifest = root / "corpus.json"
    if manifest.is_file():
        if read_json(manifest).get("key") == key:
            if log:
                log.info("synthetic corpus: reusing %s", root)
            return root
        raise StageError(
            f"{root} holds a synthetic corpus built with other parameters; choose another "
            "corpus_dir or remove it"
        )
    if root.is_dir() and any(root.iterdir()):
        raise StageError(
            f"corpus_dir {root} is not empty and holds no synthetic corpus; give an empty or "
            "new folder"
        )
    partial = root.with_name(root.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    speakers, jobs = plan_corpus(params, partial, variants)
    batches = _batches(jobs, 12)
    workers = params.workers or available_cores()
    if log:
        log.info("synthesising %d utterances of %d speakers with %d processes into %s",
                 len(jobs), len(speakers), workers, partial)
    started = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures = [executor.submit(synthesise_batch, batch) for batch in batches]

        def finished_utterances() -> Iterator[str]:
            for future in concurrent.futures.as_completed(futures):
                yield from future.result()

        items = finished_utterances()
        if progress is not None:
            items = progress(items, total=len(jobs), description="synthesising corpus")
        for _ in items:
            pass
    except WavelensError:  # an interruption (RunInterrupted) stays what it is
        raise
    except Exception as exc:
        raise StageError(
            f"synthesis failed ({type(exc).__name__}: {exc}); the utterances finished so far are "
            f"kept in {partial} and a re-run continues from them"
        ) from exc
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - started
    write_json(partial / "speakers.json", speakers)
    write_json(partial / "corpus.json", {
        "key": key,
        "utterances": len(jobs),
        "build_seconds": round(seconds, 1),
        "workers": workers,
        "jobs": [asdict(job) | {"folder": str(Path(job.folder).relative_to(partial))} for job in jobs],
    })
    if root.is_dir():  # an empty folder named by the user
        root.rmdir()
    os.replace(partial, root)
    if log:
        log.info("synthetic corpus: %d utterances in %.1f s, %s", len(jobs), seconds, root)
    return root


class SyntheticTimitParams(SliceParams, SynthesisParams):
    pass


class SyntheticTimit(TimitWords):
    """Builds (or reuses) the synthetic tree, then slices it like real TIMIT."""

    params: SyntheticTimitParams

    def corpus_root(self, ctx: StageContext) -> Path:
        return build_corpus(self.params, progress=ctx.progress, log=ctx.log)

    def prepare(self, ctx: StageContext) -> None:
        super().prepare(ctx)
        root = Path(read_json(ctx.workdir / "corpus.json")["root"])
        record = read_json(root / "corpus.json")
        speakers = read_json(root / "speakers.json")
        engines = sorted({s["engine"] for s in speakers})
        extra = (
            f"\nThe corpus was synthesised by wavelens ({', '.join(engines)}; {len(speakers)} "
            f"speakers, {record['utterances']} utterances, built in {record['build_seconds']} s "
            f"with {record['workers']} processes). festival utterances carry phone alignments; "
            "espeak-ng utterances carry words only.\n"
        )
        ctx.write_report((ctx.workdir / "report.md").read_text() + extra)


@hookimpl
def wavelens_datasets():
    return [
        Contribution(
            "synthetic_timit", SyntheticTimitParams,
            "A TIMIT-layout corpus synthesised with festival and espeak-ng, sliced like timit_words",
            SyntheticTimit,
        )
    ]
