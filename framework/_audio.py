"""Reading, writing and resampling audio, with errors a user can act on.

Audio is read and written with ``soundfile`` (WAV, FLAC, NIST SPHERE, ...) and
resampled with ``torchaudio``. Samples are float32 in [-1, 1], shape ``(frames,)``.
Every problem with a file (unreadable, empty, stereo, NaN, an unexpected rate)
raises :class:`AudioError`, whose message names the file: a dataset can skip the
file and report why instead of crashing part-way through.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from ._errors import AudioError
from ._io import atomic_write

__all__ = [
    "AudioError",
    "read_audio",
    "write_audio",
    "resample",
    "peak_normalize",
    "AUDIO_SUFFIXES",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".nist")
"""File suffixes (lower case) that wavelens datasets treat as audio."""


def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    resample_to: int | None = None,
    channels: str = "mono",
) -> tuple[np.ndarray, int]:
    """Read a file as float32 samples in [-1, 1]; return ``(samples, rate)``.

    Args:
        sample_rate: if given, a file at another rate raises :class:`AudioError`.
        resample_to: if given, a file at another rate is resampled to it (and the
            returned rate is ``resample_to``). Not together with ``sample_rate``.
        channels: ``"mono"`` refuses multi-channel files; ``"mix"`` averages the
            channels.

    Raises:
        AudioError: the file is missing, unreadable, empty, has NaN or Inf
            samples, has more than one channel (with ``channels="mono"``), or is
            at the wrong rate.
    """
    if sample_rate is not None and resample_to is not None:
        raise ValueError("give sample_rate or resample_to, not both")
    if channels not in ("mono", "mix"):
        raise ValueError(f"channels must be 'mono' or 'mix', not {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(path, f"unreadable audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "the file holds no samples")
    if data.shape[1] > 1:
        if channels == "mono":
            raise AudioError(path, f"{data.shape[1]} channels, expected mono")
        data = data.mean(axis=1, keepdims=True)
    samples = np.ascontiguousarray(data[:, 0])
    if not np.all(np.isfinite(samples)):
        raise AudioError(path, "NaN or infinite samples")
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(path, f"sample rate {rate} Hz, expected {sample_rate} Hz")
    if resample_to is not None and rate != resample_to:
        samples, rate = resample(samples, rate, resample_to), resample_to
    return samples, rate


def audio_channels(path: str | os.PathLike) -> int:
    """The number of channels of an audio file (1 when its header cannot be read:
    :func:`read_audio` reports that file's problem)."""
    try:
        return sf.info(str(path)).channels
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return 1


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a 1-D float signal with torchaudio's band-limited sinc filter."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    import torch  # here, not above: reading audio needs no torch
    import torchaudio

    tensor = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return torchaudio.functional.resample(tensor, from_rate, to_rate).numpy()


def peak_normalize(samples: np.ndarray) -> np.ndarray:
    """Scale to max |x| = 1 (peak normalisation); a silent
    signal is returned unchanged rather than divided by zero."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        return samples.astype(np.float32, copy=True)
    return (samples / peak).astype(np.float32)


def write_audio(
    path: str | os.PathLike,
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str = "PCM_16",
) -> None:
    """Write a 1-D signal atomically (a reader never sees a half-written file).

    ``format`` is a soundfile format name (``"WAV"``, ``"NIST"`` for NIST SPHERE,
    ``"FLAC"``); by default it follows the suffix. Samples outside [-1, 1] are an
    error rather than silently clipped.
    """
    path = Path(path)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"write_audio takes a 1-D signal, not shape {samples.shape}")
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if subtype.startswith("PCM") and peak > 1.0:
        raise ValueError(f"{path}: samples reach {peak:.3f}; scale them into [-1, 1] first")
    # soundfile picks the format from the file name, which a temporary file lacks.
    with atomic_write(path, "wb") as handle:
        sf.write(handle, samples, sample_rate, format=format or _format_of(path), subtype=subtype)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "sph": "NIST", "nist": "NIST"}.get(suffix, "WAV")

