"""Submitting a spec's variants (and sweep cells) as jobs through submitit: one Slurm
job array, or submitit's local executor on a machine without Slurm.

``wavelens run SPEC --launcher submitit`` submits one job per variant. Each job runs
``wavelens run SPEC --variant NAME`` (under torchrun when the launcher asks for several
processes per job) and writes its own run directory; the stages every job shares
(the dataset) are prepared before the array is submitted, so the jobs find them in
the stage cache on the shared filesystem. A job that Slurm pre-empts or times out is
told so by submitit (SIGUSR2): the run in it saves a checkpoint and stops, and
submitit resubmits the job, whose run resumes from that checkpoint. The launching
command waits for the array and then compares the runs, listing the jobs that
failed.

submitit is an optional dependency (``pip install 'wavelens[cluster]'``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._console import console
from ._errors import RunInterrupted, WavelensError
from ._io import read_json
from ._launch import Job
from ._spec import LauncherSpec

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # the launcher says what to install when asked for
    submitit = None
    Checkpointable = object

__all__ = ["CommandJob", "executor_kind", "submit_jobs"]

INSTALL = "the submitit launcher needs submitit: pip install 'wavelens[cluster]' (or pip install submitit)"


class CommandJob(Checkpointable):
    """One submitted job: a ``wavelens run`` command in a child process. When submitit
    signals a pre-emption or a timeout, the child is asked to stop (SIGTERM: the run
    saves a checkpoint), and the same command is submitted again."""

    def __init__(self, command: list[str], environment: dict[str, str], record: str) -> None:
        self.command, self.environment, self.record = command, environment, record
        self._process: subprocess.Popen | None = None

    def __call__(self) -> dict[str, Any]:
        env = {**os.environ, **self.environment}
        self._process = subprocess.Popen(self.command, env=env)
        status = self._process.wait()
        if status != 0:
            raise WavelensError(f"wavelens run exited with status {status}: {' '.join(self.command)}")
        return read_json(Path(self.record))

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()  # the run checkpoints and stops
            _reap(self._process.pid, STOP_SECONDS)
        return DelayedSubmission(CommandJob(self.command, self.environment, self.record))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None
        return state


STOP_SECONDS = 600  # how long a run may take to save its checkpoint and stop


def _reap(pid: int, seconds: float) -> None:
    """Wait for the child ``pid`` to end, killing it after ``seconds``. Called from
    submitit's signal handler, which interrupted ``Popen.wait`` while that held the
    Popen's lock, so this waits with ``os.waitpid`` itself."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def executor_kind(options: LauncherSpec) -> str:
    """``slurm`` or ``local``: ``auto`` is Slurm where ``sbatch`` is on the PATH."""
    if options.executor == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return options.executor


def _executor(options: LauncherSpec, folder: Path, name: str, jobs: int):
    """submitit's Slurm executor or its local one, with the launcher's settings."""
    if executor_kind(options) == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=options.requeues)
        executor.update_parameters(timeout_min=options.timeout_min, signal_delay_s=options.signal_delay_s,
                                   gpus_per_node=options.gpus_per_job, nodes=1, tasks_per_node=1)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.requeues)
    parameters: dict[str, Any] = {
        "job_name": name, "time": options.timeout_min, "signal_delay_s": options.signal_delay_s,
        "nodes": 1, "ntasks_per_node": 1, "array_parallelism": options.array_parallelism or jobs,
    }
    optional = {"partition": options.partition, "gpus_per_node": options.gpus_per_job or None,
                "cpus_per_task": options.cpus_per_task,
                "mem": f"{options.mem_gb:g}GB" if options.mem_gb else None,
                "additional_parameters": dict(options.slurm) or None, "setup": list(options.setup) or None}
    parameters.update({key: value for key, value in optional.items() if value is not None})
    executor.update_parameters(**parameters)
    return executor


def job_command(spec: Path, job: Job, before: list[str], record: Path, processes: int) -> list[str]:
    """The command a job runs: ``wavelens run``, under torchrun for several processes."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*launcher, "-m", "wavelens.cli", *before, "run", str(spec), *job.arguments,
            "--record", str(record)]


def submit_jobs(spec: Path, jobs: Sequence[Job], before: list[str], options: LauncherSpec,
                log_dir: Path, environment: dict[str, str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Submit every job (one array on Slurm), wait for them all; ``(run directory per
    label, failure per label)`` in the jobs' order. Ctrl-C cancels the jobs; the same
    command submits them again, and each run resumes from its checkpoints."""
    if submitit is None:
        raise WavelensError(INSTALL)
    log_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(options.folder) if options.folder else log_dir / "submitit"
    executor = _executor(options, folder, spec.stem, len(jobs))
    submitted = []
    with executor.batch():
        for job in jobs:
            record = log_dir / f"{job.file_stem}.json"
            record.unlink(missing_ok=True)
            command = job_command(spec, job, before, record, options.processes)
            submitted.append((job.label, executor.submit(CommandJob(command, environment, str(record)))))
    kind = "a Slurm array" if isinstance(executor, submitit.SlurmExecutor) else "submitit's local executor"
    console.print(f"submitted {len(jobs)} jobs ({kind}); logs: {folder}", soft_wrap=True, highlight=False,
                  markup=False)
    directories: dict[str, Path] = {}
    failed: dict[str, str] = {}
    started = time.perf_counter()
    try:
        for label, handle in submitted:
            try:
                outcome = handle.result()
            except Exception as exc:  # noqa: BLE001 - every failure is listed, none is lost
                reason = str(exc).strip().splitlines()
                failed[label] = (f"job {handle.job_id} failed after {time.perf_counter() - started:.0f} s: "
                                 f"{reason[-1] if reason else type(exc).__name__}; its log: "
                                 f"{handle.paths.stderr}")
                console.print(f"failed {label}: {failed[label]}", soft_wrap=True, highlight=False,
                              markup=False)
                continue
            directories[label] = Path(outcome["directory"])
            console.print(f"finished {label} (job {handle.job_id})", soft_wrap=True, highlight=False,
                          markup=False)
    except KeyboardInterrupt:
        for _, handle in submitted:
            handle.cancel(check=False)
        raise RunInterrupted("the jobs were cancelled; the same command submits them again, and each "
                             "run resumes from its checkpoints") from None
    order = [job.label for job in jobs]
    return ({label: directories[label] for label in order if label in directories},
            {label: failed[label] for label in order if label in failed})
