"""Running a spec's variants (and sweep cells) as separate processes on this machine.

``wavelens run SPEC --launcher local --jobs N`` starts each variant as its own
``wavelens run`` process, at most ``N`` at a time, each on its own GPU
(``CUDA_VISIBLE_DEVICES``) where the spec runs on CUDA, else on its own share of the
CPU cores (its affinity and thread pools cut to them). Each job is an ordinary run
with its own run directory: the stage cache works across jobs as across variants, and
a job that stops resumes from its checkpoints when the same command runs again. The
stages every job shares (the dataset) are prepared once, in this process, before the
jobs start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._console import console
from ._errors import RunInterrupted
from ._evaluation import SINGLE_THREAD_ENV
from ._io import read_json

__all__ = ["Job", "run_jobs", "slots"]


@dataclass(frozen=True)
class Job:
    """One run to start: its label in the comparison and its command-line arguments
    after ``wavelens run SPEC``."""

    label: str
    arguments: list[str]

    @property
    def file_stem(self) -> str:
        """The label as a file name (its log and record)."""
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.label)


def slots(jobs: int, gpus: int) -> list[dict]:
    """What each of ``jobs`` concurrent jobs gets: a GPU of ``gpus`` (round robin), or
    a contiguous share of the cores this process may use."""
    if gpus > 0:
        return [{"gpu": index % gpus} for index in range(jobs)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    jobs = max(1, min(jobs, len(cores)))
    share, extra = divmod(len(cores), jobs)
    found, start = [], 0
    for index in range(jobs):
        size = share + (index < extra)
        found.append({"cpus": cores[start:start + size]})
        start += size
    return found


def _environment(slot: dict) -> dict[str, str]:
    env = dict(os.environ)
    if "gpu" in slot:
        env["CUDA_VISIBLE_DEVICES"] = str(slot["gpu"])
    else:
        env.update({name: str(len(slot["cpus"])) for name in SINGLE_THREAD_ENV})
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job stays off any GPU
    return env


def _describe(slot: dict) -> str:
    return f"GPU {slot['gpu']}" if "gpu" in slot else f"cores {','.join(map(str, slot['cpus']))}"


def run_jobs(spec: Path, jobs: Sequence[Job], before: list[str], concurrency: int, gpus: int,
             log_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Run every job as ``wavelens [before...] run SPEC ARGS --record FILE``, at most
    ``concurrency`` at a time; ``(run directory per label, failure per label)``, in the
    jobs' order. Interrupting (Ctrl-C) stops the running jobs; running the same command
    again resumes them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    free = slots(concurrency, gpus)
    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen, dict, Path, float, object]] = {}
    directories: dict[str, Path] = {}
    failed: dict[str, str] = {}
    safe = {job.label: job.file_stem for job in jobs}
    try:
        while pending or running:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                record = log_dir / f"{safe[job.label]}.json"
                record.unlink(missing_ok=True)
                log = (log_dir / f"{safe[job.label]}.log").open("w")
                command = [sys.executable, "-m", "wavelens.cli", *before, "run", str(spec), *job.arguments,
                           "--record", str(record)]
                cpus = slot.get("cpus")
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=_environment(slot),
                    preexec_fn=(lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None)
                running[job.label] = (process, slot, record, time.perf_counter(), log)
                console.print(f"started {job.label} on {_describe(slot)} (log: {log_dir / log.name})",
                              soft_wrap=True, highlight=False, markup=False)
            time.sleep(0.2)
            for label, (process, slot, record, started, log) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[label]
                free.append(slot)
                seconds = time.perf_counter() - started
                if process.returncode == 0 and record.is_file():
                    directories[label] = Path(read_json(record)["directory"])
                    console.print(f"finished {label} in {seconds:.0f} s", soft_wrap=True, highlight=False,
                                  markup=False)
                else:
                    failed[label] = (f"exit status {process.returncode} after {seconds:.0f} s; its log: "
                                     f"{log_dir / f'{safe[label]}.log'}")
                    console.print(f"failed {label}: {failed[label]}", soft_wrap=True, highlight=False,
                                  markup=False)
    except KeyboardInterrupt:
        for process, *_ in running.values():
            process.terminate()
        for process, *_ in running.values():
            process.wait()
        raise RunInterrupted("the jobs were stopped; the same command resumes each from its "
                             "checkpoints") from None
    order = [job.label for job in jobs]
    return ({label: directories[label] for label in order if label in directories},
            {label: failed[label] for label in order if label in failed})
