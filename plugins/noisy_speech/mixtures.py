"""``noisy_mixtures``: clean speech mixed with noise at set SNRs, in the
VoiceBank+DEMAND layout.

The protocol of the CSM-VANet paper's LibriSpeech experiments, for any folder of
clean speech and any folders of noise: training mixtures at SNRs drawn uniformly
from [-10, 15] dB; test mixtures of other utterances at each of -5, 0, 5, 10 and
15 dB, with noise types held out of training; fixed-length clips. The result is
written as ``clean_trainset_wav/``, ``noisy_trainset_wav/``, ``clean_testset_wav/``,
``noisy_testset_wav/`` with ``log_trainset.txt``/``log_testset.txt`` (name, noise,
SNR), and read back by exactly the ``voicebank_demand`` code.

By default the clean speech is synthesised (the ``synthetic_timit`` corpus's
utterances) and the noise is the real recordings in ``../shared/data/noise/`` (when
present) plus generated white, pink and brown noise and babble of synthetic voices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import soundfile as sf
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationInfo, model_serializer, model_validator

from wavelens import (
    AUDIO_SUFFIXES,
    AudioError,
    Contribution,
    SpecPath,
    StageContext,
    StageError,
    atomic_write,
    hookimpl,
    read_audio,
    read_csv,
    resample,
    shared_data_dir,
    write_audio,
    write_csv,
    write_text,
)
from wavelens.plugins.timit.synthetic import SynthesisParams, build_corpus

from .voicebank import PairedSpeech, PairParams

GENERATED = ("white", "pink", "brown", "babble")


def default_noise_dirs() -> list[Path]:
    """The ``noise/`` folder of the shared recordings, if it exists."""
    folder = shared_data_dir() / "noise"
    return [folder] if folder.is_dir() else []


SHARED_PREFIX = "shared:"


def _recording(value: Any, info: ValidationInfo) -> str:
    """``shared:PATH`` stays as written, so that a spec naming the shared recordings
    has the same stage keys wherever the folder is; any other path resolves against
    the spec's folder, as a SpecPath does."""
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a path, not {type(value).__name__}")
    text = str(value)
    if text.startswith(SHARED_PREFIX):
        if not text[len(SHARED_PREFIX):].strip():
            raise ValueError("shared: needs a path inside the shared data folder (shared:speech/x.wav)")
        return text
    return str(TypeAdapter(SpecPath).validate_python(Path(text), context=info.context))


Recording = Annotated[str, BeforeValidator(_recording)]
"""A recording: a path (relative to the spec), or ``shared:PATH`` inside the shared
data folder (``$WAVELENS_SHARED_DATA``, or ``../shared/data`` beside the checkout)."""


def recording_path(entry: str) -> Path:
    """The file a :data:`Recording` names."""
    if entry.startswith(SHARED_PREFIX):
        return shared_data_dir() / entry[len(SHARED_PREFIX):]
    return Path(entry)


class MixtureParams(PairParams):
    clean_dir: SpecPath | None = Field(
        None, description="folder of clean speech (searched recursively); default: synthesised"
    )
    clean_speakers: int = Field(40, ge=3, description="speakers of the synthesised clean speech")
    noise_dirs: list[SpecPath] | None = Field(
        None, description="folders of noise recordings (default: ../shared/data/noise when present)"
    )
    generated_noise: list[Literal["white", "pink", "brown", "babble"]] = Field(
        list(GENERATED), description="noises generated here"
    )
    test_noises: list[str] | None = Field(
        None, description="noise names held out for test (default: a third of them, drawn by seed)"
    )
    n_train: int = Field(400, ge=1, description="training mixtures")
    n_test_utterances: int = Field(40, ge=1, description="test utterances, each mixed at every test SNR")
    train_snr_db: tuple[float, float] = Field((-10.0, 15.0), description="training SNR range (uniform)")
    test_snrs_db: list[float] = Field([-5.0, 0.0, 5.0, 10.0, 15.0], min_length=1,
                                      description="test SNRs")
    clip_seconds: float = Field(4.0, gt=0, description="length of every clip")
    train_recordings: list[Recording] = Field(
        [], description="recordings of clean speech whose random clips join the training speech "
        "(e.g. real voices beside synthesised ones); a path, or shared:PATH inside the shared data folder"
    )
    train_recordings_share: float = Field(
        0.25, ge=0, le=1,
        description="share of the training mixtures whose clean clip comes from train_recordings",
    )
    test_recordings: list[Recording] | None = Field(
        None, description="recordings whose random clips are the test utterances, instead of "
        "held-out corpus files (n_test_utterances clips, taking the files in turn)"
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> MixtureParams:
        if self.train_snr_db[0] > self.train_snr_db[1]:
            raise ValueError("train_snr_db must be (low, high)")
        return self

    @model_validator(mode="after")
    def _recordings_exist(self) -> MixtureParams:
        for field in ("train_recordings", "test_recordings"):
            for entry in getattr(self, field) or []:
                path = recording_path(entry)
                shared_absent = entry.startswith(SHARED_PREFIX) and not shared_data_dir().is_dir()
                if not path.is_file() and not shared_absent:  # (an absent shared folder: at use)
                    raise ValueError(f"{field}: {path} is not a file")
        if self.test_recordings == []:
            raise ValueError("test_recordings is empty; leave it out to use held-out corpus files")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_recordings(self, handler: Any) -> dict[str, Any]:
        # The recordings came after networks were trained and shipped: while unused they
        # stay out of the dump, and so out of the stage keys, which older specs keep.
        data = handler(self)
        if not self.train_recordings:
            data.pop("train_recordings", None)
            data.pop("train_recordings_share", None)
        if self.test_recordings is None:
            data.pop("test_recordings", None)
        return data


def coloured_noise(kind: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f²) noise with unit RMS."""
    white = rng.standard_normal(samples)
    if kind == "white":
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        frequency = np.fft.rfftfreq(samples)
        frequency[0] = frequency[1]
        exponent = {"pink": 0.5, "brown": 1.0}[kind]
        noise = np.fft.irfft(spectrum / frequency**exponent, samples)
    return noise / np.sqrt(np.mean(noise**2))


def babble(utterances: list[np.ndarray], samples: int, talkers: int,
           rng: np.random.Generator) -> np.ndarray:
    """``talkers`` overlapping streams of utterances, each stream at unit RMS."""
    mixture = np.zeros(samples)
    for _ in range(talkers):
        stream: list[np.ndarray] = []
        while sum(len(s) for s in stream) < samples:
            stream.append(utterances[int(rng.integers(len(utterances)))])
        joined = np.concatenate(stream)
        start = int(rng.integers(0, len(joined) - samples + 1))
        piece = joined[start : start + samples]
        mixture += piece / max(np.sqrt(np.mean(piece**2)), 1e-9)
    return mixture / np.sqrt(np.mean(mixture**2))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` with the noise scaled so that 10·log10(P_clean / P_noise) is
    ``snr_db`` over the clip; both scaled down together if the mixture would clip."""
    clean_power = np.mean(clean**2)
    noise_power = np.mean(noise**2)
    scaled = noise * np.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))
    noisy = clean + scaled
    peak = np.max(np.abs(np.concatenate([noisy, clean])))
    if peak > 0.99:
        clean, noisy = clean * 0.99 / peak, noisy * 0.99 / peak
    return clean, noisy


def _clip(signal: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A ``length``-sample piece at a random offset; zero-padded at the end if short."""
    if len(signal) >= length:
        start = int(rng.integers(0, len(signal) - length + 1))
        return signal[start : start + length]
    return np.concatenate([signal, np.zeros(length - len(signal))])


def _noise_piece(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    if len(noise) < length:
        noise = np.tile(noise, -(-length // len(noise)))
    start = int(rng.integers(0, len(noise) - length + 1))
    return noise[start : start + length]


def noise_recordings(folder: Path, log: Any) -> dict[str, list[Path]]:
    """The noise types in ``folder``: each audio file directly inside is a type
    named by its stem; each subfolder is a type named by the folder, with all its
    audio files (DEMAND's layout: ``DKITCHEN/ch01.wav`` ... ``ch16.wav``).
    Unreadable files are skipped with a warning."""
    if not folder.is_dir():
        raise StageError(f"noise folder {folder} does not exist or is not a folder")
    types: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError) as exc:
            log.warning("skipped noise %s: unreadable audio (%s)", path, exc)
            continue
        if info.frames == 0:
            log.warning("skipped noise %s: no samples", path)
            continue
        parts = path.relative_to(folder).parts
        types.setdefault(parts[0] if len(parts) > 1 else path.stem, []).append(path)
    return types


class NoiseSource:
    """One noise type: recordings read a piece at a time (a long corpus is never
    loaded whole), or a generated signal held in memory."""

    def __init__(self, name: str, files: list[Path] | None = None, signal: np.ndarray | None = None):
        self.name = name
        self.files = files or []
        self.signal = signal

    def piece(self, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
        """``length`` samples at ``rate`` from a random file and offset (a file shorter
        than that is repeated). Raises AudioError for a file that cannot be used."""
        if self.signal is not None:
            return _noise_piece(self.signal, length, rng)
        path = self.files[int(rng.integers(len(self.files)))]
        info = sf.info(path)
        needed = int(np.ceil(length * info.samplerate / rate)) + 64  # margin for the resampler
        if info.frames <= needed:
            samples, _ = read_audio(path, resample_to=rate, channels="mix")
            return _noise_piece(samples.astype(np.float64), length, rng)
        start = int(rng.integers(0, info.frames - needed + 1))
        data, _ = sf.read(path, start=start, frames=needed, dtype="float32", always_2d=True)
        samples = data.mean(axis=1)
        if not np.all(np.isfinite(samples)):
            raise AudioError(path, "NaN or infinite samples")
        return resample(samples, info.samplerate, rate)[:length].astype(np.float64)


class NoisyMixtures(PairedSpeech):
    """Writes the mixtures into the stage folder, then indexes them like VoiceBank."""

    params: MixtureParams

    def pairs_root(self, ctx: StageContext) -> tuple[Path, str]:
        root = ctx.workdir / "mixtures"
        if not (root / "complete").is_file():
            self._build(ctx, root)
        return root, "test"  # (written in the standard layout, never flat)

    def _synthetic_corpus(self, ctx: StageContext, speakers: int, seed: int, augment: bool) -> Path:
        params = SynthesisParams(speakers=speakers, other_sentences=3, corpus_seed=seed,
                                 augment=augment)
        return build_corpus(params, progress=ctx.progress, log=ctx.log)

    def _clean_files(self, ctx: StageContext) -> tuple[list[Path], list[Path]]:
        """Clean files for training and for test, with disjoint speakers where the
        layout shows them."""
        params = self.params
        rng = np.random.default_rng([ctx.seed, 1])
        if params.clean_dir is not None:
            folder = Path(params.clean_dir)
            if not folder.is_dir():
                raise StageError(f"clean_dir {folder} does not exist or is not a folder")
            files = sorted(p for p in folder.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            # Files in subfolders are grouped by their first-level folder (the speaker,
            # in LibriSpeech's <speaker>/<chapter>/ layout); loose files stand alone.
            groups: dict[str, list[Path]] = {}
            for path in files:
                parts = path.relative_to(folder).parts
                groups.setdefault(parts[0] if len(parts) > 1 else path.name, []).append(path)
            if len(groups) < 2:
                raise StageError(
                    f"clean_dir {folder} holds {len(files)} audio files in {len(groups)} group(s); "
                    "need at least 2 (some for training, some for test)"
                )
            keys = sorted(groups)
            order = rng.permutation(len(keys))
            n_test = max(1, round(len(keys) * 0.2))
            test = {keys[i] for i in order[:n_test]}
            return ([p for k in keys if k not in test for p in groups[k]],
                    [p for k in keys if k in test for p in groups[k]])
        corpus = self._synthetic_corpus(ctx, params.clean_speakers, seed=0, augment=False)
        waves = sorted(p for p in corpus.rglob("*") if p.suffix.upper() == ".WAV")
        train = [p for p in waves if p.relative_to(corpus).parts[0] == "TRAIN"]
        test = [p for p in waves if p.relative_to(corpus).parts[0] == "TEST"]
        return train, test

    def _noises(self, ctx: StageContext) -> dict[str, NoiseSource]:
        params = self.params
        rate = params.sample_rate
        rng = np.random.default_rng([ctx.seed, 2])
        noises: dict[str, NoiseSource] = {}
        folders = params.noise_dirs if params.noise_dirs is not None else default_noise_dirs()
        for folder in folders:
            for name, files in noise_recordings(Path(folder), ctx.log).items():
                if name in noises:
                    raise StageError(f"two noise types are named {name!r} (in {folder} and "
                                        "another noise folder); rename one")
                noises[name] = NoiseSource(name, files=files)
        for kind in params.generated_noise:
            if kind in noises:
                raise StageError(f"a noise recording is named {kind!r} like a generated noise; "
                                    f"rename it or drop {kind} from generated_noise")
            if kind == "babble":
                corpus = self._synthetic_corpus(ctx, 12, seed=1, augment=True)
                speech = [read_audio(p, resample_to=rate)[0].astype(np.float64)
                          for p in sorted(corpus.rglob("*")) if p.suffix.upper() == ".WAV"]
                noises["babble"] = NoiseSource("babble", signal=babble(speech, 30 * rate, 6, rng))
            else:
                noises[kind] = NoiseSource(kind, signal=coloured_noise(kind, 30 * rate, rng))
        if len(noises) < 2:
            raise StageError(
                f"noisy_mixtures needs at least 2 noise types (some for training, some held out "
                f"for test); found {', '.join(noises) or 'none'}"
            )
        return noises

    def _build(self, ctx: StageContext, root: Path) -> None:
        params = self.params
        rate = params.sample_rate
        length = round(params.clip_seconds * rate)
        train_files, test_files = self._clean_files(ctx)
        noises = self._noises(ctx)
        names = sorted(noises)
        rng = np.random.default_rng([ctx.seed, 3])
        choice_rng = np.random.default_rng([ctx.seed, 4])
        if params.test_noises is not None:
            unknown = sorted(set(params.test_noises) - set(names))
            if unknown:
                raise StageError(f"test_noises names {', '.join(unknown)}, which are not among "
                                    f"the noises: {', '.join(names)}")
            held_out = sorted(params.test_noises)
        else:
            held_out = sorted(rng.choice(names, max(1, len(names) // 3), replace=False).tolist())
        for entry in [*params.train_recordings, *(params.test_recordings or [])]:
            if not recording_path(entry).is_file():
                raise StageError(f"the recording {entry} is not a file ({recording_path(entry)}); shared: "
                                 f"paths are inside {shared_data_dir()} (set $WAVELENS_SHARED_DATA)")
        if params.test_recordings is not None:
            test_files = [recording_path(p) for p in params.test_recordings]
        recordings = [recording_path(p) for p in params.train_recordings]
        train_noises = [n for n in names if n not in held_out]
        if not train_noises:
            raise StageError("every noise is held out for test; none is left for training")
        ctx.log.info("noises: train %s; test (held out) %s", ", ".join(train_noises), ", ".join(held_out))

        plan: list[dict[str, Any]] = []
        for index in range(params.n_train):
            # A separate stream decides corpus file or recording, so that a spec without
            # recordings draws exactly the mixtures it drew before they existed.
            sources = (recordings if recordings and choice_rng.random() < params.train_recordings_share
                       else train_files)
            plan.append({"split": "train", "name": f"train_{index:05d}",
                         "clean": sources[int(rng.integers(len(sources)))],
                         "noise": train_noises[int(rng.integers(len(train_noises)))],
                         "snr_db": round(float(rng.uniform(*params.train_snr_db)), 2),
                         "seed": int(rng.integers(2**31))})
        if params.test_recordings is not None:  # clips at their own offsets, files in turn
            chosen = np.arange(params.n_test_utterances) % len(test_files)
        else:
            chosen = rng.permutation(len(test_files))[: params.n_test_utterances]
        for index, file_index in enumerate(chosen):
            noise = held_out[index % len(held_out)]
            seed = int(rng.integers(2**31))
            for snr in params.test_snrs_db:
                plan.append({"split": "test", "name": f"test_{index:05d}_snr{snr:g}",
                             "clean": test_files[int(file_index)], "noise": noise,
                             "snr_db": float(snr), "seed": seed})
        folders = {"train": ("clean_trainset_wav", "noisy_trainset_wav"),
                   "test": ("clean_testset_wav", "noisy_testset_wav")}
        cache: dict[Path, np.ndarray] = {}

        def load_clean(path: Path) -> np.ndarray:
            if path not in cache:
                cache[path] = read_audio(path, resample_to=rate, channels="mix")[0].astype(np.float64)
            return cache[path]

        skipped: list[dict] = []
        for item in ctx.progress(plan, total=len(plan), description="mixing"):
            clean_dir, noisy_dir = folders[item["split"]]
            clean_path = root / clean_dir / f"{item['name']}.wav"
            noisy_path = root / noisy_dir / f"{item['name']}.wav"
            if clean_path.is_file() and noisy_path.is_file():
                continue  # written before an interruption
            item_rng = np.random.default_rng(item["seed"])
            try:
                clean = _clip(load_clean(item["clean"]), length, item_rng)
                noise = noises[item["noise"]].piece(length, rate, item_rng)
            except AudioError as exc:
                skipped.append({"name": item["name"], "file": str(exc.path), "reason": exc.reason})
                continue
            for signal, source, what in ((clean, item["clean"], "clean clip"),
                                         (noise, item["noise"], "noise piece")):
                if not np.any(signal):
                    skipped.append({"name": item["name"], "file": str(source),
                                    "reason": f"the {what} is silent"})
                    break
            else:
                clean, noisy = mix_at_snr(clean, noise, item["snr_db"])
                write_audio(noisy_path, noisy, rate)
                write_audio(clean_path, clean, rate)
        for entry in skipped[:5]:
            ctx.log.warning("mixture %s skipped: %s: %s", entry["name"], entry["file"], entry["reason"])
        write_csv(root / "skipped_mixtures.csv", skipped, ["name", "file", "reason"])
        for split, log_name in (("train", "log_trainset.txt"), ("test", "log_testset.txt")):
            with atomic_write(root / log_name, "w", encoding="utf-8") as handle:
                for item in plan:
                    if item["split"] == split:
                        handle.write(f"{item['name']} {item['noise']} {item['snr_db']:g}\n")
        with atomic_write(root / "sources.tsv", "w", encoding="utf-8") as handle:
            handle.write("name\tclean_source\tnoise\tsnr_db\n")
            for item in plan:
                handle.write(f"{item['name']}\t{item['clean']}\t{item['noise']}\t{item['snr_db']:g}\n")
        write_text(root / "complete", "")


    def describe(self, workdir: Path, splits: dict) -> dict[str, Any]:
        summary = super().describe(workdir, splits)
        skipped = read_csv(workdir / "mixtures" / "skipped_mixtures.csv")
        if skipped:
            summary["notes"].append(f"{len(skipped)} mixtures not made (unreadable or silent audio), "
                                    "with reasons in mixtures/skipped_mixtures.csv")
        summary["notes"].append("test noise types are held out of training; sources.tsv lists "
                                "the clean file and noise behind each mixture")
        return summary


@hookimpl
def wavelens_datasets():
    return [
        Contribution(
            "noisy_mixtures", MixtureParams,
            "Clean speech mixed with noise at set SNRs (LibriSpeech+DEMAND protocol), "
            "VoiceBank layout",
            NoisyMixtures,
        )
    ]
