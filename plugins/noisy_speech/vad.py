"""Frame-level voice-activity labels derived from a clean signal.

Frame ``t`` is centred on sample ``t * hop`` and spans ``win`` samples, the frames
of ``torch.stft(n_fft=win, hop_length=hop, center=True)`` (zero padding outside the
signal), so a signal of ``n`` samples has ``n // hop + 1`` frames, one per STFT
frame of the enhancement model. A frame is speech when its mean energy is within
``threshold_db`` of the utterance's loudest frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frame_energy_db", "vad_labels"]


def frame_energy_db(signal: np.ndarray, hop: int = 100, win: int = 400) -> np.ndarray:
    """Mean energy of each centred frame in dB (``n // hop + 1`` frames)."""
    signal = np.asarray(signal, dtype=np.float64)
    n_frames = len(signal) // hop + 1
    padded = np.concatenate([np.zeros(win // 2), signal, np.zeros(win)])
    cumulative = np.concatenate([[0.0], np.cumsum(padded**2)])
    starts = np.arange(n_frames) * hop
    energy = (cumulative[starts + win] - cumulative[starts]) / win
    return 10 * np.log10(np.maximum(energy, 1e-20))


def vad_labels(
    clean: np.ndarray,
    hop: int = 100,
    win: int = 400,
    threshold_db: float = -30.0,
    reference_db: float | None = None,
) -> np.ndarray:
    """Speech (1.0) or not (0.0) per frame, as float32.

    ``reference_db`` is the loudest frame's energy; by default that of ``clean``
    itself. Give the whole utterance's when labelling a segment cut from it, so a
    quiet segment is not judged against itself.
    """
    energy = frame_energy_db(clean, hop, win)
    reference = float(energy.max()) if reference_db is None else reference_db
    if reference <= -200.0:  # digital silence: no speech anywhere
        return np.zeros(len(energy), dtype=np.float32)
    return (energy >= reference + threshold_db).astype(np.float32)
