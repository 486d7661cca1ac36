"""Synthesising utterances with festival and espeak-ng, with word and phone times.

This module runs inside worker processes, so it imports only numpy, scipy and
soundfile (not torch). Each worker synthesises a batch of utterances and writes
them straight into the corpus tree; the ``.WRD`` file is written last, so an
utterance whose ``.WRD`` exists is complete (a rebuild after an interruption skips
it).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE = 16000

FESTIVAL_VOICES = {
    # name: (Scheme call, sex, output rate)
    "kal": ("voice_kal_diphone", "M", 16000),
    "ked": ("voice_ked_diphone", "M", 16000),
    "slt": ("voice_cmu_us_slt_arctic_hts", "F", 32000),
}

# festival's radio phone set is TIMIT's, lower case, except for silence: TIMIT
# marks the silence before and after an utterance h#, and a pause inside it pau.
# TIMIT also splits stops into closure and release (kcl k); festival does not, so
# a synthetic stop is one interval labelled with the release symbol.
SILENCE = "pau"


@dataclass(frozen=True)
class UtteranceJob:
    """One utterance to synthesise and where its files go."""

    folder: str  # ROOT/TRAIN/DR1/MABC0
    name: str  # SA1
    text: str
    engine: str  # festival | espeak-ng
    voice: str  # kal | ked | slt | an espeak-ng variant
    rate: float  # festival Duration_Stretch, or espeak-ng words per minute
    pitch: float  # festival target f0 mean in Hz, or espeak-ng pitch 0-99
    shift: float  # resampling factor applied afterwards (>1 raises pitch and formants)
    peak: float  # peak level of the written audio
    noise_snr_db: float | None  # level of the added white noise floor, None for none
    seed: int
    audio_format: str  # sphere | wav


@dataclass
class Synthesised:
    samples: np.ndarray  # float at RATE
    words: list[tuple[float, float, str]]  # seconds
    phones: list[tuple[float, float, str]] | None  # seconds; None when unknown


class SynthesisError(RuntimeError):
    pass


def words_of(text: str) -> list[str]:
    """The words of a prompt as TIMIT's ``.WRD`` files spell them: lower case, with
    apostrophes, without punctuation."""
    return [w for w in (re.sub(r"[^a-z']", "", token.lower()) for token in text.split()) if w]


def _resample(samples: np.ndarray, factor: float) -> np.ndarray:
    """Resample by ``factor`` (output length = input length × factor)."""
    if abs(factor - 1.0) < 1e-9:
        return samples
    ratio = Fraction(factor).limit_denominator(1000)
    return resample_poly(samples, ratio.numerator, ratio.denominator)


# -- festival ---------------------------------------------------------------------------


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_batch(jobs: list[UtteranceJob], workdir: Path) -> list[Synthesised]:
    """Synthesise festival jobs in one festival process (voice per job)."""
    lines = []
    for number, job in enumerate(jobs):
        call, _, _ = FESTIVAL_VOICES[job.voice]
        wav = workdir / f"{number}.wav"
        lines += [
            f"({call})",
            f"(Parameter.set 'Duration_Stretch {job.rate:.4f})",
        ]
        if job.voice != "slt":  # the diphone voices take their f0 from these targets
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {job.pitch:.1f}) "
                f"(target_f0_std {job.pitch * 0.14:.1f}) (model_f0_mean 170) (model_f0_std 34)))"
            )
        lines += [
            f"(set! utt (Utterance Text {_scheme_string(job.text)}))",
            "(utt.synth utt)",
            f"(utt.save.wave utt {_scheme_string(str(wav))} 'riff)",
            f'(format t "BEGIN {number}\\n")',
            "(mapcar (lambda (s) (format t \"P %s %f\\n\" (item.name s) (item.feat s \"end\")))"
            " (utt.relation.items utt 'Segment))",
            "(mapcar (lambda (w) (format t \"W %s %f %f\\n\" (item.name w)"
            " (item.feat w \"word_start\") (item.feat w \"word_end\")))"
            " (utt.relation.items utt 'Word))",
        ]
    script = workdir / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SynthesisError(f"festival failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    timings: dict[int, dict[str, list]] = {}
    current = None
    for line in done.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["BEGIN"]:
            current = timings.setdefault(int(parts[1]), {"P": [], "W": []})
        elif current is not None and parts[:1] == ["P"] and len(parts) == 3:
            current["P"].append((parts[1], float(parts[2])))
        elif current is not None and parts[:1] == ["W"] and len(parts) == 4:
            current["W"].append((float(parts[2]), float(parts[3]), parts[1]))
    results = []
    for number, job in enumerate(jobs):
        if number not in timings:
            raise SynthesisError(f"festival gave no timings for {job.folder}/{job.name}: "
                                 f"{done.stderr.strip()[-300:]}")
        samples, rate = sf.read(workdir / f"{number}.wav", dtype="float32")
        samples = _resample(samples, RATE / rate)
        phones, start = [], 0.0
        segments = timings[number]["P"]
        for index, (name, end) in enumerate(segments):
            if name == SILENCE:
                name = "h#" if index in (0, len(segments) - 1) else "pau"
            if end > start:
                phones.append((start, end, name))
            start = end
        words = [(s, e, re.sub(r"[^a-z']", "", w.lower())) for s, e, w in timings[number]["W"]]
        results.append(Synthesised(samples, [w for w in words if w[2]], phones))
    return results


# -- espeak-ng --------------------------------------------------------------------------


def espeak_variants() -> list[tuple[str, str]]:
    """The installed espeak-ng voice variants as ``(name, sex)``."""
    listed = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    variants = []
    for line in listed[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            sex = parts[2].split("/")[-1][:1].upper()
            variants.append((parts[4][3:], sex if sex in "MF" else "M"))
    return variants


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading and trailing silence: 5 ms frames more than 50 dB below the peak."""
    frame = max(1, rate // 200)
    n = len(samples) // frame
    if n == 0:
        return samples
    energy = (samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 1e-5)
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def espeak_utterance(job: UtteranceJob, rng: np.random.Generator) -> Synthesised:
    """Synthesise word by word and join the words with short pauses; the word
    boundaries are then exact. espeak-ng reports no phone times, so there are none."""
    pieces = [np.zeros(int(rng.uniform(0.08, 0.2) * RATE), dtype=np.float32)]
    words, cursor = [], len(pieces[0])
    for word in words_of(job.text):
        done = subprocess.run(
            ["espeak-ng", "-v", f"en-us+{job.voice}", "-s", str(round(job.rate)),
             "-p", str(round(job.pitch)), "--stdout", word],
            capture_output=True, timeout=60,
        )
        if done.returncode != 0 or not done.stdout:
            raise SynthesisError(f"espeak-ng failed on {word!r}: {done.stderr.decode()[-300:]}")
        samples, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
        samples = _resample(_trim(samples, rate), RATE / rate).astype(np.float32)
        if len(samples) == 0:
            raise SynthesisError(f"espeak-ng gave silence for {word!r} with voice {job.voice}")
        words.append((cursor / RATE, (cursor + len(samples)) / RATE, word))
        gap = np.zeros(int(rng.uniform(0.01, 0.06) * RATE), dtype=np.float32)
        pieces += [samples, gap]
        cursor += len(samples) + len(gap)
    pieces.append(np.zeros(int(rng.uniform(0.08, 0.2) * RATE), dtype=np.float32))
    return Synthesised(np.concatenate(pieces), words, None)


# -- writing ----------------------------------------------------------------------------


def _finish(job: UtteranceJob, result: Synthesised) -> None:
    """Apply the speaker's shift, level and noise floor; write the four files."""
    rng = np.random.default_rng(job.seed)
    samples = _resample(result.samples.astype(np.float64), 1.0 / job.shift)
    scale = 1.0 / job.shift  # times shrink when the pitch goes up
    peak = np.max(np.abs(samples))
    if peak == 0:
        raise SynthesisError(f"{job.folder}/{job.name}: the synthesiser produced silence")
    samples = samples / peak * job.peak
    if job.noise_snr_db is not None:
        power = np.mean(samples**2) / 10 ** (job.noise_snr_db / 10)
        samples = samples + rng.normal(0.0, np.sqrt(power), len(samples))
    samples = np.clip(samples, -1.0, 1.0)
    n = len(samples)

    def to_samples(seconds: float) -> int:
        return min(n, max(0, round(seconds * scale * RATE)))

    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(folder / f"{job.name}.WAV", lambda p: sf.write(p, samples.astype(np.float32), RATE,
                                           format="NIST" if job.audio_format == "sphere" else "WAV",
                                           subtype="PCM_16"))
    if result.phones is not None:
        phone_lines = [f"{to_samples(s)} {to_samples(e)} {label}\n" for s, e, label in result.phones]
        _atomic_text(folder / f"{job.name}.PHN", "".join(phone_lines))
    _atomic_text(folder / f"{job.name}.TXT", f"0 {n} {job.text}\n")
    word_lines = [f"{to_samples(s)} {to_samples(e)} {w}\n" for s, e, w in result.words]
    _atomic_text(folder / f"{job.name}.WRD", "".join(word_lines))


def _atomic(path: Path, write) -> None:
    # wavelens.atomic_write does this, but importing framework imports torch, which
    # would cost every worker process seconds of start-up for no use.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def synthesise_batch(jobs: list[UtteranceJob]) -> list[str]:
    """Synthesise and write ``jobs`` (one engine each call); return the finished
    utterances' folders/names. Runs in a worker process."""
    pending = [job for job in jobs if not (Path(job.folder) / f"{job.name}.WRD").exists()]
    with tempfile.TemporaryDirectory(prefix="wavelens-synth-") as scratch:
        festival = [job for job in pending if job.engine == "festival"]
        results = festival_batch(festival, Path(scratch)) if festival else []
        for job, result in zip(festival, results, strict=True):
            _finish(job, result)
        for job in pending:
            if job.engine == "espeak-ng":
                _finish(job, espeak_utterance(job, np.random.default_rng(job.seed + 1)))
    return [f"{job.folder}/{job.name}" for job in jobs]


def missing_tools(engines: list[str], festival_voices: list[str]) -> list[str]:
    """What is missing to run ``engines`` with ``festival_voices`` (empty when all
    is there), as Debian package names."""
    missing = []
    if "festival" in engines:
        if shutil.which("festival") is None:
            missing.append("festival")
        else:
            probe = "".join(
                f"(if (symbol-bound? '{FESTIVAL_VOICES[v][0]}) (format t \"HAVE {v}\\n\"))\n"
                for v in festival_voices
            )
            with tempfile.NamedTemporaryFile("w", suffix=".scm") as script:
                script.write(probe)
                script.flush()
                found = subprocess.run(["festival", "-b", script.name], capture_output=True,
                                       text=True, timeout=120).stdout.split()
            packages = {"kal": "festvox-kallpc16k", "ked": "festvox-kdlpc16k",
                        "slt": "festvox-us-slt-hts"}
            missing += [packages[v] for v in festival_voices if v not in found]
    if "espeak-ng" in engines and shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    return missing
