"""Scoring folders of (reference, estimate) audio files with metric plugins: what
``wavelens evaluate`` does.

:func:`evaluate_folders` pairs files by name, checks and aligns each pair (rate,
channels, length, silence), and scores every metric on the aligned signals in worker
processes (the core's ``item_scorer``; the ``pesq`` C code is not thread-safe). It
returns one row per file: the metric values, or an error entry with its reason. A
bad file never stops the evaluation, and summaries count only the files scored.
Several folders of estimates (systems) are scored in one pass: each reference's
estimates go to one worker together, and the measures reuse what they computed of
the reference.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wavelens import (
    AUDIO_SUFFIXES,
    AudioError,
    Metric,
    StageError,
    audio_channels,
    available_cores,
    item_scorer,
    read_audio,
    resample,
)

from .quality import equal_lengths, is_silent

MIN_SECONDS = 0.25  # PESQ needs at least a quarter second; shorter pairs are refused
SILENT_NOTE = ("the estimate is silent (all zeros): scored, at the bottom of each scale that has no value "
               "for it")


def pair_files(reference: Path, estimate: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(name, reference, estimate) for every audio file of ``reference`` with a file
    of the same name (or, failing that, the same stem) in ``estimate``; and notes on
    the unpaired ones."""
    for folder in (reference, estimate):
        if not folder.is_dir():
            raise StageError(f"{folder} is not a folder")

    def audio(folder: Path) -> dict[str, Path]:
        return {
            p.relative_to(folder).as_posix(): p
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        }

    references, estimates = audio(reference), audio(estimate)
    by_stem = {str(Path(name).with_suffix("")): path for name, path in estimates.items()}
    pairs, missing = [], []
    for name, path in references.items():
        match = estimates.get(name) or by_stem.get(str(Path(name).with_suffix("")))
        if match is None:
            missing.append(name)
        else:
            pairs.append((name, path, match))
    notes = []
    if missing:
        notes.append(
            f"{len(missing)} reference file(s) have no estimate: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}"
        )
    used = {p[2] for p in pairs}
    extra = [name for name, path in estimates.items() if path not in used]
    if extra:
        notes.append(
            f"{len(extra)} estimate file(s) have no reference: {', '.join(extra[:5])}"
            f"{' …' if len(extra) > 5 else ''}"
        )
    if not pairs:
        raise StageError(f"no file of {reference} has an estimate of the same name in {estimate}")
    return pairs, notes


def load_pair(name: str, reference: Path, estimate: Path, rate: int, upsample: bool = False
              ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """One file's row (``file, status, reason, seconds, notes``) and its aligned
    ``(estimate, reference)`` at ``rate``; the signals are None when the pair is
    refused, and the row says why."""
    row: dict[str, Any] = {"file": name, "status": "ok", "reason": "", "seconds": math.nan, "notes": ""}
    notes = []
    try:
        ref, ref_rate = read_audio(reference, channels="mix")
        est, est_rate = read_audio(estimate, channels="mix")
    except AudioError as error:
        return {**row, "status": "error", "reason": str(error)}, None, None
    for side, path in (("reference", reference), ("estimate", estimate)):
        channels = audio_channels(path)
        if channels > 1:
            notes.append(f"the {side} has {channels} channels, mixed to mono")
    if ref_rate != est_rate:
        reason = f"sample rates differ: reference {ref_rate} Hz, estimate {est_rate} Hz"
        return {**row, "status": "error", "reason": reason}, None, None
    if ref_rate < rate and not upsample:
        reason = (f"recorded at {ref_rate} Hz, below the scoring rate {rate} Hz: upsampled, its empty upper "
                  f"band would be scored (score at --rate {ref_rate}, e.g. narrowband PESQ at 8000, or "
                  "allow it with --upsample)")
        return {**row, "status": "error", "reason": reason}, None, None
    if ref_rate != rate:
        ref, est = resample(ref, ref_rate, rate), resample(est, est_rate, rate)
        notes.append(f"resampled from {ref_rate} Hz")
    if len(ref) != len(est):  # the VoiceBank convention (compute_metrics.m): cut, and add eps
        notes.append(f"lengths differ by {abs(len(ref) - len(est))} samples; both cut to the shorter, "
                     "eps added (the VoiceBank convention)")
        ref, est = equal_lengths(ref, est)
    row["seconds"] = len(ref) / rate
    row["notes"] = "; ".join(notes)
    if len(ref) < MIN_SECONDS * rate:
        reason = f"shorter than {MIN_SECONDS} s ({len(ref)} samples)"
        return {**row, "status": "error", "reason": reason}, None, None
    if not np.any(ref):
        return {**row, "status": "error", "reason": "the reference is silent (all zeros)"}, None, None
    if is_silent(est):  # scored, as the worst case where a measure has no value for silence
        row["notes"] = "; ".join([*notes, SILENT_NOTE])
    return row, est.astype(np.float64), ref.astype(np.float64)


def evaluate_folders(
    reference: Path,
    estimate: Path,
    metrics: Mapping[str, Metric],
    rate: int = 16000,
    workers: int | None = None,
    progress: Callable[..., Iterable] | None = None,
    upsample: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per paired file, in name order) and notes on unpaired files. A pair
    recorded below ``rate`` is refused (its upper band is empty: wideband measures
    would score a band the recording never had) unless ``upsample``."""
    (rows, notes), = evaluate_systems(reference, [estimate], metrics, rate, workers, progress, upsample)
    return rows, notes


def evaluate_systems(
    reference: Path,
    estimates: Sequence[Path],
    metrics: Mapping[str, Metric],
    rate: int = 16000,
    workers: int | None = None,
    progress: Callable[..., Iterable] | None = None,
    upsample: bool = False,
) -> list[tuple[list[dict[str, Any]], list[str]]]:
    """:func:`evaluate_folders` for several folders of estimates of one reference
    folder, in one pass: ``(rows, notes)`` per folder, in order. The estimates of one
    reference file are scored together in one worker, so each measure analyses the
    reference once for all of them."""
    paired = [pair_files(Path(reference), Path(estimate)) for estimate in estimates]
    by_reference: dict[str, list[tuple[int, Path, Path]]] = {}
    for system, (pairs, _) in enumerate(paired):
        for name, ref, est in pairs:
            by_reference.setdefault(name, []).append((system, ref, est))
    names = list(by_reference)
    workers = max(1, min(workers or available_cores(), len(names)))
    wrap = progress or (lambda items, **_: items)

    def scored(score) -> Iterable[list[tuple[int, dict[str, Any]]]]:
        loaded: collections.deque = collections.deque()  # read, not yet scored: a few per worker

        def jobs() -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
            for name in names:  # read as the scorer asks for them, so memory stays flat
                group = [(system, load_pair(name, ref, est, rate, upsample))
                         for system, ref, est in by_reference[name]]
                loaded.append(group)
                yield [(est, ref) for _, (_, est, ref) in group if est is not None]

        for results in score(jobs()):
            values = iter(results)
            yield [(system, row if est is None else {**row, **next(values)[0]})
                   for system, (row, est, _) in loaded.popleft()]

    found: list[list[dict[str, Any]]] = [[] for _ in estimates]
    with item_scorer(dict(metrics), workers) as score:
        for group in wrap(scored(score), total=len(names), description="scoring"):
            for system, row in group:
                found[system].append(row)
    results = []
    for rows, (_, notes) in zip(found, paired, strict=True):
        silent = sum(SILENT_NOTE in row["notes"] for row in rows if row["status"] == "ok")
        if silent:
            notes = [*notes, f"{silent} estimate(s) are silent (all zeros): scored in every mean, PESQ, "
                     "CSIG, CBAK and COVL at 1, SSNR at −10 dB and STOI at 0 (the bottom of each scale), "
                     "SI-SDR as computed (docs/metrics.md, \"Silent estimates\")"]
        results.append((rows, notes))
    return results
