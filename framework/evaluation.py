"""Scoring folders of (reference, estimate) audio pairs with metric plugins.

:func:`evaluate_folders` pairs files by name, checks and aligns each pair, scores
every metric in worker processes (the ``pesq`` C code is not thread-safe), and
returns one row per file: the metric values, or an error entry with its reason. A
bad file never stops the evaluation, and summaries count only the files scored.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AUDIO_SUFFIXES, AudioError, read_audio, resample
from .components import Metric
from .errors import WavelensError

MIN_SECONDS = 0.25  # PESQ needs at least a quarter second; shorter pairs are refused

# The column order of the papers' tables; other metrics follow.
TABLE_ORDER = ["pesq", "csig", "cbak", "covl", "segsnr", "stoi", "estoi", "si_sdr"]
TABLE_NAMES = {
    "pesq": "PESQ",
    "csig": "CSIG",
    "cbak": "CBAK",
    "covl": "COVL",
    "segsnr": "SSNR",
    "stoi": "STOI",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR",
}


def pair_files(reference: Path, estimate: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(name, reference, estimate) for every audio file of ``reference`` with a file
    of the same name (or, failing that, the same stem) in ``estimate``; and notes on
    the unpaired ones."""
    for folder in (reference, estimate):
        if not folder.is_dir():
            raise WavelensError(f"{folder} is not a folder")

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
        raise WavelensError(f"no file of {reference} has an estimate of the same name in {estimate}")
    return pairs, notes


def _values(name: str, value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {name: float(value)}


def score_pair(
    metrics: Mapping[str, Metric], name: str, reference: Path, estimate: Path, rate: int
) -> dict[str, Any]:
    """One file's row: ``file, status, reason, seconds, notes`` and the metric values."""
    row: dict[str, Any] = {"file": name, "status": "ok", "reason": "", "seconds": math.nan, "notes": ""}
    notes = []
    try:
        ref, ref_rate = read_audio(reference, channels="mix")
        est, est_rate = read_audio(estimate, channels="mix")
    except AudioError as error:
        return {**row, "status": "error", "reason": str(error)}
    if ref_rate != est_rate:
        return {
            **row,
            "status": "error",
            "reason": f"sample rates differ: reference {ref_rate} Hz, estimate {est_rate} Hz",
        }
    if ref_rate != rate:
        ref, est = resample(ref, ref_rate, rate), resample(est, est_rate, rate)
        notes.append(f"resampled from {ref_rate} Hz")
    if len(ref) != len(est):
        notes.append(f"lengths differ by {abs(len(ref) - len(est))} samples; both cut to the shorter")
        length = min(len(ref), len(est))
        ref, est = ref[:length], est[:length]
    row["seconds"] = len(ref) / rate
    row["notes"] = "; ".join(notes)
    if len(ref) < MIN_SECONDS * rate:
        return {**row, "status": "error", "reason": f"shorter than {MIN_SECONDS} s ({len(ref)} samples)"}
    if not np.any(ref):
        return {**row, "status": "error", "reason": "the reference is silent (all zeros)"}
    if not np.any(est):
        return {**row, "status": "error", "reason": "the estimate is silent (all zeros)"}
    ref64, est64 = ref.astype(np.float64), est.astype(np.float64)
    for metric_name, metric in metrics.items():
        try:
            metric.reset()
            metric.update([est64], [ref64])
            row.update(_values(metric_name, metric.compute()))
        except Exception as error:  # any metric's failure is this file's error entry
            reason = f"{metric_name}: {type(error).__name__}: {error}".strip()
            return {**row, "status": "error", "reason": reason}
    return row


_WORKER_METRICS: Mapping[str, Metric] = {}


def _init_worker(metrics: Mapping[str, Metric]) -> None:
    global _WORKER_METRICS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_METRICS = metrics


def _score_in_worker(job: tuple[str, Path, Path, int]) -> dict[str, Any]:
    return score_pair(_WORKER_METRICS, *job)


def evaluate_folders(
    reference: Path,
    estimate: Path,
    metrics: Mapping[str, Metric],
    rate: int = 16000,
    workers: int | None = None,
    progress: Callable[..., Iterable] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per paired file, in name order) and notes on unpaired files."""
    pairs, notes = pair_files(Path(reference), Path(estimate))
    jobs = [(name, ref, est, rate) for name, ref, est in pairs]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    wrap = progress or (lambda items, **_: items)
    if workers == 1:
        rows = [score_pair(metrics, *job) for job in wrap(jobs, total=len(jobs), description="scoring")]
        return rows, notes
    # forkserver, not fork: a forked copy of a process that has run torch's OpenMP
    # pool can hang. Preloading the metrics' modules into the server makes each
    # worker a fork of an already-imported process instead of a fresh import of torch.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        sorted({"framework.evaluation", *(type(m).__module__ for m in metrics.values())})
    )
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(dict(metrics),)
    ) as pool:
        results = pool.map(_score_in_worker, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
        rows = list(wrap(results, total=len(jobs), description="scoring"))
    return rows, notes


def metric_columns(rows: list[dict[str, Any]], by: str | None = None) -> list[str]:
    """The metric columns of the rows, in the papers' order (LLR and WSS last)."""
    fixed = {"file", "status", "reason", "seconds", "notes", by}
    found = list(dict.fromkeys(k for row in rows for k in row if k not in fixed))
    known = [k for k in TABLE_ORDER if k in found]
    return (
        known
        + [k for k in found if k not in known and k not in ("llr", "wss")]
        + [k for k in ("llr", "wss") if k in found]
    )


def summarize(rows: list[dict[str, Any]], by: str | None = None) -> list[dict[str, Any]]:
    """Mean of every metric over the scored files: one row (Table I's layout), or
    one per value of the column ``by`` (Table II's)."""
    columns = metric_columns(rows, by)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = "all" if by is None else str(row.get(by, ""))
        groups.setdefault(key, []).append(row)
    summary = []
    for key, members in groups.items():
        scored = [r for r in members if r["status"] == "ok"]
        entry: dict[str, Any] = {by or "set": key, "files": len(members), "scored": len(scored)}
        for column in columns:
            values = [r[column] for r in scored if isinstance(r.get(column), (int, float))]
            entry[column] = float(np.mean(values)) if values else math.nan
        summary.append(entry)
    return summary


def summary_markdown(summary: list[dict[str, Any]], by: str | None = None) -> str:
    if not summary:
        return ""
    key = by or "set"
    columns = [c for c in summary[0] if c not in (key, "files", "scored")]
    header = [key] + [TABLE_NAMES.get(c, c) for c in columns] + ["files scored"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for entry in summary:
        values = [
            "–" if math.isnan(entry[c]) else f"{entry[c]:.3f}" if c in ("llr", "wss") else f"{entry[c]:.2f}"
            for c in columns
        ]
        cells = [str(entry[key]), *values, f"{entry['scored']} of {entry['files']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
